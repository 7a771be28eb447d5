//! The open-file limit the stack's processes inherit from xtask.
//!
//! Kafka keeps several files open per partition (its log, offset and time indexes), and every test makes topics of
//! its own (three lanes, delay tiers, the dead letters, the status topic): one run of the workspace's tests leaves
//! about ten thousand partitions, so a dev stack used for a few runs passed 20,000 open files, the usual limit
//! here, and its Kafka stopped accepting connections ("Too many open files"), failing every test at once.

use rlimit::Resource;

/// Enough for a dev stack that has seen many test runs.
const WANTED: u64 = 1 << 20;

/// Raises this process's open-file limit (and so its children's) as far as it may: root may raise the hard
/// limit too; anyone may raise the soft one up to the hard one. Never fails: a lower limit is only a risk.
pub fn raise_open_files() {
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return;
    };
    if soft >= WANTED {
        return;
    }
    if Resource::NOFILE.set(WANTED, hard.max(WANTED)).is_err() {
        let _ = rlimit::increase_nofile_limit(WANTED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_least_where_it_was() {
        let (before, _) = Resource::NOFILE.get().expect("readable");
        raise_open_files();
        let (after, hard) = Resource::NOFILE.get().expect("readable");
        assert!(after >= before);
        assert!(
            after == hard || after >= WANTED,
            "soft {after}, hard {hard}"
        );
    }
}
