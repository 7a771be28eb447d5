//! Where things live: the repository, the download/build cache under the home directory, and the stack's
//! git-ignored state folder.

use std::path::PathBuf;

/// The repository root (the parent of `xtask/`).
///
/// Read from the `CARGO_MANIFEST_DIR` that `cargo run` sets at run time, and only failing that from the one baked
/// in at build time: cargo's fingerprints are relative to the workspace, so with a target directory shared by
/// several clones (CI's `~/.cache/herald/target`) a binary built in one clone is reused, fresh, by another, and its
/// baked-in path names the first clone.
pub fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
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
