//! Message templates from `HERALD_TEMPLATES_DIR`, and the provider names a process is configured with: what
//! ingest needs to judge a `POST /event` as the dispatchers will send it.
//!
//! The files are read once, at startup, and compiled by `herald_domain::template::Templates`, which names every
//! problem; each becomes a configuration problem, so a bad template keeps the service from starting.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use herald_domain::provider::{self as names, KnownProviders};
use herald_domain::template::Templates;
use herald_domain::Channel;

use crate::config::EnvReader;

/// The variable naming the templates' folder.
pub const TEMPLATES_DIR: &str = "HERALD_TEMPLATES_DIR";

/// `HERALD_TEMPLATES_DIR`: every regular file of the folder (not its subfolders; names starting with `.` are
/// skipped) compiled as a template. Unset: no templates. Each unreadable or bad file is a problem in `env`.
pub fn read_templates(env: &mut EnvReader) -> Arc<Templates> {
    let Some(dir) = env.optional_string(TEMPLATES_DIR) else {
        return Arc::default();
    };
    match load_dir(Path::new(&dir)) {
        Ok(templates) => Arc::new(templates),
        Err(problems) => {
            for problem in problems {
                env.problem(TEMPLATES_DIR, problem);
            }
            Arc::default()
        }
    }
}

/// Reads and compiles the templates of `dir`, or lists every problem.
pub fn load_dir(dir: &Path) -> Result<Templates, Vec<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| vec![format!("cannot read the folder {}: {e}", dir.display())])?;
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(format!("cannot read the folder {}: {e}", dir.display()));
                continue;
            }
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(source) => files.push((name, source)),
            Err(e) => problems.push(format!("{name}: cannot be read as UTF-8 text: {e}")),
        }
    }
    match Templates::parse(files) {
        Ok(templates) if problems.is_empty() => Ok(templates),
        Ok(_) => Err(problems),
        Err(bad) => {
            problems.extend(bad.iter().map(ToString::to_string));
            problems.sort();
            Err(problems)
        }
    }
}

/// The providers per channel the dispatchers configured by the same environment have
/// (`herald_domain::provider::configured`, plus the names of `HERALD_EMAIL_PROVIDERS` / `HERALD_SMS_PROVIDERS`),
/// each bad extra name a problem in `env`.
pub fn read_providers(env: &mut EnvReader) -> KnownProviders {
    let extras = read_extra_providers(env);
    KnownProviders::configured(&extras, |key| env.raw(key))
}

/// The extra provider names per channel of `HERALD_EMAIL_PROVIDERS` / `HERALD_SMS_PROVIDERS`, read as the
/// dispatchers read them, each bad name a problem in `env` (herald-retry checks its rules against them).
pub fn read_extra_providers(env: &mut EnvReader) -> BTreeMap<Channel, Vec<String>> {
    let mut extras = BTreeMap::new();
    for channel in Channel::ALL {
        let Some(key) = names::extras_variable(*channel) else {
            continue;
        };
        match env.raw(key).map(|raw| names::parse_names(*channel, raw)) {
            None => {}
            Some(Ok(list)) => {
                extras.insert(*channel, list);
            }
            Some(Err(problems)) => {
                for problem in problems {
                    env.problem(key, problem);
                }
            }
        }
    }
    extras
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_of_templates_loads_and_every_bad_file_is_a_problem() {
        let dir = tempfile::tempdir().expect("a folder");
        std::fs::write(dir.path().join("otp.sms.message"), "Code {{ code }}").expect("written");
        std::fs::write(dir.path().join(".hidden"), "ignored").expect("written");
        let templates = load_dir(dir.path()).expect("valid");
        assert_eq!(templates.n_sets(), 1);
        std::fs::write(dir.path().join("otp.push.title"), "{{ oops").expect("written");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("written");
        std::fs::write(dir.path().join("otp.email.subject"), [0xff, 0xfe]).expect("written");
        let problems = load_dir(dir.path()).expect_err("three bad files");
        assert_eq!(problems.len(), 3, "{problems:?}");
        let mut env = EnvReader::from_map(
            [(TEMPLATES_DIR.to_owned(), dir.path().display().to_string())].into(),
        );
        read_templates(&mut env);
        let text = env.finish().expect_err("refused").to_string();
        assert!(
            text.contains("HERALD_TEMPLATES_DIR: otp.push.title: does not compile"),
            "{text}"
        );
        assert!(
            text.contains("HERALD_TEMPLATES_DIR: notes.txt: is not named"),
            "{text}"
        );
    }
}
