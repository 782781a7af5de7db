//! Checks a processor asks the receivers in front of it to run while they validate each request.
//!
//! Some processors leave nearly every request as it is (masking finds nothing in most), and walking each
//! request a second time just to learn that costs about as much as the receiver's own validation walk. Such a
//! processor declares a [`Precheck`] ([`crate::processor::ProcessorConfig::precheck`]); the service hands it to
//! the receivers of the pipeline ([`crate::receiver::Outputs::precheck`]), which validate each request through
//! it instead of through [`vigil_proto::otlp::scan::scan`]. A request in which the check flagged nothing is admitted with the check
//! on its chunk ([`Chunk::prechecked`](super::Chunk::prechecked)), and the processor that declared this very
//! check passes such a chunk on without walking it.
//!
//! Receivers never name a processor: a new processor with a precheck only implements the trait.

use std::fmt;
use std::sync::Arc;

use vigil_proto::otlp::Signal;
use vigil_proto::otlp::scan::{ScanError, Summary};

/// A check run inside a receiver's validation walk.
pub trait Precheck: Send + Sync + 'static {
    /// Validates `request` exactly as [`vigil_proto::otlp::scan::scan`] does (same verdicts, same errors), and flags each resource
    /// entry in which the declaring processor might change something ([`vigil_proto::otlp::scan::ResourceEntry::flagged`]).
    fn scan(&self, signal: Signal, request: &[u8]) -> Result<Summary, ScanError>;

    /// A short name for logs and `Debug` output (the processor type).
    fn name(&self) -> &'static str;
}

/// A [`Precheck`] shared between the processor that declared it and the receivers that run it.
///
/// Two handles are the same check only when one is a clone of the other: a chunk marked by another check,
/// even one built from an equal configuration, is walked again.
#[derive(Clone)]
pub struct SharedPrecheck(Arc<dyn Precheck>);

impl SharedPrecheck {
    /// Shares `check`.
    pub fn new(check: impl Precheck) -> Self {
        SharedPrecheck(Arc::new(check))
    }

    /// Validates `request` through the check (see [`Precheck::scan`]).
    pub fn scan(&self, signal: Signal, request: &[u8]) -> Result<Summary, ScanError> {
        self.0.scan(signal, request)
    }

    /// Whether `other` is this very check (a clone of this handle).
    pub fn is(&self, other: &SharedPrecheck) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for SharedPrecheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Precheck({})", self.0.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::otlp::scan;

    /// Flags every entry.
    struct FlagAll;

    impl Precheck for FlagAll {
        fn scan(&self, signal: Signal, request: &[u8]) -> Result<Summary, ScanError> {
            let mut summary = scan::scan(signal, request)?;
            summary.resources.iter_mut().for_each(|e| e.flagged = true);
            Ok(summary)
        }

        fn name(&self) -> &'static str {
            "flag_all"
        }
    }

    #[test]
    fn only_a_clone_is_the_same_check() {
        let check = SharedPrecheck::new(FlagAll);
        assert!(check.is(&check.clone()));
        assert!(!check.is(&SharedPrecheck::new(FlagAll)));
        assert_eq!(format!("{check:?}"), "Precheck(flag_all)");
    }
}
