//! Injected I/O faults, for tests: a [`Faults`] plan given to a store (in
//! [`crate::StoreOptions::faults`]) makes the Nth write, fsync or removal of a queue segment,
//! fsync of a queue directory, or SQLite commit fail with EIO, at each place a commit or an
//! acknowledgement touches the disk. The plan is compiled only for the state crate's own tests
//! and with the `fault-injection` feature (which only test builds enable); otherwise
//! [`Faults`] is an empty type whose check always passes, so nothing can be injected into the
//! product.

use std::io;

/// A place where the store writes, syncs or removes something on behalf of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultSite {
    /// A write into a queue segment (its file header or a commit's blocks). The injected
    /// failure comes after the bytes were written, as a torn or unreported write would leave
    /// them.
    SegmentWrite,
    /// The fsync of a queue segment at the end of a commit.
    SegmentSync,
    /// The fsync of a queue's directory (after a segment was created or removed).
    DirSync,
    /// The removal (or recycling as the spare) of an acknowledged queue segment.
    SegmentRemove,
    /// The SQLite `COMMIT` fails and the transaction is rolled back: nothing was committed.
    CommitBefore,
    /// The SQLite `COMMIT` succeeds but reports a failure, as a failed WAL fsync whose pages
    /// reached the disk anyway would: the outcome looks unknown and is in fact durable.
    CommitAfter,
}

impl FaultSite {
    /// Every site.
    pub const ALL: [FaultSite; 6] = [
        FaultSite::SegmentWrite,
        FaultSite::SegmentSync,
        FaultSite::DirSync,
        FaultSite::SegmentRemove,
        FaultSite::CommitBefore,
        FaultSite::CommitAfter,
    ];
}

/// The error an injected fault returns: EIO.
pub(crate) fn injected() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// The SQLite error an injected commit fault returns (`SQLITE_IOERR`).
pub(crate) fn injected_sqlite() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some("injected I/O fault".into()),
    )
}

#[cfg(any(test, feature = "fault-injection"))]
mod plan {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::FaultSite;

    #[derive(Debug, Default)]
    struct Plan {
        /// Per site: calls to let pass before failing, and how many to fail then.
        rules: HashMap<FaultSite, (u64, u64)>,
        /// Per site: calls seen, and failures injected.
        calls: HashMap<FaultSite, u64>,
        fired: HashMap<FaultSite, u64>,
    }

    /// A fault plan shared by a store and the test that drives it (clones share it).
    /// `Faults::default()` injects nothing.
    #[derive(Debug, Clone, Default)]
    pub struct Faults {
        plan: Option<Arc<Mutex<Plan>>>,
    }

    impl PartialEq for Faults {
        fn eq(&self, other: &Faults) -> bool {
            match (&self.plan, &other.plan) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        }
    }

    impl Eq for Faults {}

    impl Faults {
        /// A plan that injects nothing until told to.
        pub fn new() -> Faults {
            Faults {
                plan: Some(Arc::default()),
            }
        }

        fn with<T>(&self, f: impl FnOnce(&mut Plan) -> T) -> Option<T> {
            let plan = self.plan.as_ref()?;
            let mut p = plan.lock().unwrap_or_else(|e| e.into_inner());
            Some(f(&mut p))
        }

        /// Makes the `nth` call at `site` from now on (1 = the next one) fail, and the
        /// `times - 1` calls after it.
        pub fn fail(&self, site: FaultSite, nth: u64, times: u64) {
            self.with(|p| p.rules.insert(site, (nth.saturating_sub(1), times)));
        }

        /// Injects nothing more.
        pub fn clear(&self) {
            self.with(|p| p.rules.clear());
        }

        /// Calls seen at `site` (failed ones included).
        pub fn calls(&self, site: FaultSite) -> u64 {
            self.with(|p| p.calls.get(&site).copied().unwrap_or(0))
                .unwrap_or(0)
        }

        /// Failures injected at `site`.
        pub fn fired(&self, site: FaultSite) -> u64 {
            self.with(|p| p.fired.get(&site).copied().unwrap_or(0))
                .unwrap_or(0)
        }

        /// Whether this call at `site` fails.
        pub(crate) fn hit(&self, site: FaultSite) -> bool {
            self.with(|p| {
                *p.calls.entry(site).or_default() += 1;
                let Some((skip, times)) = p.rules.get_mut(&site) else {
                    return false;
                };
                if *skip > 0 {
                    *skip -= 1;
                    return false;
                }
                if *times == 0 {
                    return false;
                }
                *times -= 1;
                *p.fired.entry(site).or_default() += 1;
                true
            })
            .unwrap_or(false)
        }
    }
}

#[cfg(any(test, feature = "fault-injection"))]
pub use plan::Faults;

/// Without fault injection: nothing to plan, every call passes.
#[cfg(not(any(test, feature = "fault-injection")))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    _none: (),
}

#[cfg(not(any(test, feature = "fault-injection")))]
impl Faults {
    /// Never fails.
    #[inline(always)]
    pub(crate) fn hit(&self, _site: FaultSite) -> bool {
        false
    }
}

impl Faults {
    /// `Err(EIO)` when this call at `site` is to fail.
    #[inline]
    pub(crate) fn check(&self, site: FaultSite) -> io::Result<()> {
        if self.hit(site) {
            Err(injected())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
