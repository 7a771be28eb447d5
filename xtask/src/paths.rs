//! Where things live: the repository, the download/build cache under the home directory, and the stack's
//! git-ignored state folder.

use std::path::PathBuf;

/// The repository root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `HERALD_CACHE_DIR`, else `$XDG_CACHE_HOME/herald`, else `~/.cache/herald`: downloads and builds, shared by
/// every clone on the machine.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HERALD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("herald");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("herald")
}

/// `HERALD_STACK_DIR`, else `<repo>/.stack`: data, logs and pid files of the running stack (git-ignored).
pub fn state_dir() -> PathBuf {
    std::env::var_os("HERALD_STACK_DIR").map_or_else(|| repo_root().join(".stack"), PathBuf::from)
}
