//! The collector-wide count of bytes held by accepted data, which `memory_limiter` admits against.
//!
//! A `memory_limiter` processor takes a [`MemoryLease`] on the bytes of every batch it admits and attaches it
//! to the batch's chunks. The lease travels with the chunks (clones for fan-out, chunks `mask` or a sampler
//! derive from them) through batches, sending queues, retries and in-flight exports, and gives its bytes back
//! when the last chunk holding it is dropped: delivered, written to a persistent queue, or dropped and counted.
//! So [`MemoryAccount::held`] is, at every moment, what accepted data occupies in memory, without any component
//! reporting it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of accepted data held anywhere in the collector (shared by every `memory_limiter`).
#[derive(Clone, Debug, Default)]
pub struct MemoryAccount {
    held: Arc<AtomicU64>,
}

impl MemoryAccount {
    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Leases `bytes` when the bytes held would stay at or under `ceiling`; `None` (and nothing leased)
    /// otherwise. Concurrent callers cannot together pass the ceiling.
    pub fn try_lease(&self, bytes: u64, ceiling: u64) -> Option<MemoryLease> {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|&after| after <= ceiling)
            })
            .ok()?;
        Some(self.lease_taken(bytes))
    }

    /// Leases `bytes` whatever is held: for data that cannot be refused (a connector's output, already
    /// admitted upstream), so that it is still counted.
    pub fn lease(&self, bytes: u64) -> MemoryLease {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        self.lease_taken(bytes)
    }

    fn lease_taken(&self, bytes: u64) -> MemoryLease {
        MemoryLease(Arc::new(Held {
            held: self.held.clone(),
            bytes,
        }))
    }
}

/// Bytes counted in a [`MemoryAccount`] until the last clone of the lease is dropped.
#[derive(Clone, Debug)]
pub struct MemoryLease(Arc<Held>);

impl MemoryLease {
    /// The bytes this lease counts.
    pub fn bytes(&self) -> u64 {
        self.0.bytes
    }
}

#[derive(Debug)]
struct Held {
    held: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryAccount;

    #[test]
    fn a_lease_counts_its_bytes_until_its_last_clone_is_dropped() {
        let account = MemoryAccount::default();
        let lease = account.try_lease(100, 1_000).expect("room");
        assert_eq!(lease.bytes(), 100);
        let copy = lease.clone();
        assert_eq!(account.held(), 100, "a clone is the same bytes");
        drop(lease);
        assert_eq!(account.held(), 100, "the fan-out copy still holds them");
        drop(copy);
        assert_eq!(account.held(), 0);
    }

    #[test]
    fn try_lease_stops_at_the_ceiling_and_leaves_nothing_behind_when_it_refuses() {
        let account = MemoryAccount::default();
        let first = account.try_lease(600, 1_000).expect("room");
        assert!(account.try_lease(401, 1_000).is_none());
        assert_eq!(account.held(), 600, "a refused lease takes nothing");
        let exact = account.try_lease(400, 1_000).expect("up to the ceiling");
        assert_eq!(account.held(), 1_000);
        assert!(account.try_lease(1, 1_000).is_none());
        drop(first);
        assert!(account.try_lease(600, 1_000).is_some(), "room again");
        drop(exact);
        let _one = account.try_lease(1, 1_000).expect("room");
        assert!(
            account.try_lease(u64::MAX, u64::MAX).is_none(),
            "no overflow"
        );
        assert_eq!(account.held(), 1);
    }

    #[test]
    fn lease_counts_even_past_the_ceiling_of_others() {
        let account = MemoryAccount::default();
        let forced = account.lease(5_000);
        assert_eq!(account.held(), 5_000);
        assert!(account.try_lease(1, 1_000).is_none());
        drop(forced);
        assert_eq!(account.held(), 0);
    }

    #[test]
    fn concurrent_leases_never_pass_the_ceiling_together() {
        let account = MemoryAccount::default();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let account = account.clone();
                std::thread::spawn(move || {
                    (0..1_000)
                        .filter_map(|_| account.try_lease(7, 700))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let leases: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(leases.len(), 100, "exactly the ceiling's worth");
        assert_eq!(account.held(), 700);
        drop(leases);
        assert_eq!(account.held(), 0);
    }
}
