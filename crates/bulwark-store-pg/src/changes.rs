//! The store's change counter ([`bulwark_core::store::Store::change_counter`]) on PostgreSQL.
//!
//! Every transaction that commits a change (an authenticated write, an attempt counted or
//! cleared, a header note, a zeroization) also bumps the single row of the `commits` table,
//! as its last statement before `COMMIT`, and learns the sequence number it committed. The
//! counter the kernel sees is a local **epoch** that moves only when a sequence number shows
//! up that this `PgStore` did not commit itself, so the kernel's own writes do not make it
//! re-verify the store, exactly as SQLite's `PRAGMA data_version` ignores the connection's own
//! commits.
//!
//! The sequence is read with one cheap `SELECT` per call and without holding any lock while the
//! query runs; the result is folded in under a short mutex. Reads on several pooled connections
//! may come back out of order, so a number lower than the highest seen is taken as a
//! **regression** (a restored database, a failover to a standby that lost commits) only when
//! the read began after the read that established the highest number had completed; then it
//! moves the epoch too (the kernel re-verifies the store and finds the rollback). An older,
//! overlapping read is simply stale and ignored.
//!
//! A commit of our own is registered before `COMMIT` is sent (so a concurrent read that sees it
//! never takes it for a foreign one). If the commit then fails, its number may be taken by
//! another connection's commit: the registration is withdrawn and the epoch moves, so the next
//! call reports a change (a reader that raced with the failing commit saw the same as if the
//! other connection had committed just after its read).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The folding state (see the module documentation).
#[derive(Debug)]
struct Track {
    /// Highest sequence number observed (or our own last commit, once observed).
    seen: u64,
    /// Clock value at which the earliest read that returned `seen` completed.
    seen_end: u64,
    /// Our own commits not yet observed by a read.
    own: BTreeSet<u64>,
    /// The value handed to the kernel.
    epoch: u64,
}

/// Change tracking of one `PgStore`.
#[derive(Debug)]
pub(crate) struct Changes {
    clock: AtomicU64,
    track: Mutex<Track>,
}

/// A read in progress: the clock when it began.
pub(crate) struct ReadTicket(u64);

impl Changes {
    /// Tracking that starts at sequence `seq` (read when the store was opened).
    pub(crate) fn new(seq: u64) -> Self {
        Self {
            clock: AtomicU64::new(1),
            track: Mutex::new(Track { seen: seq, seen_end: 0, own: BTreeSet::new(), epoch: 1 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        self.track.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Call before sending the `SELECT` of the sequence.
    pub(crate) fn begin_read(&self) -> ReadTicket {
        ReadTicket(self.clock.fetch_add(1, Ordering::AcqRel))
    }

    /// Folds in the sequence number a read returned; returns the epoch.
    pub(crate) fn observe(&self, ticket: &ReadTicket, seq: u64) -> u64 {
        let end = self.clock.fetch_add(1, Ordering::AcqRel);
        let mut t = self.lock();
        if seq > t.seen {
            // Foreign iff some number in (seen, seq] is not one of our own commits.
            let span = seq - t.seen;
            let mine = t.own.range(t.seen + 1..=seq).count() as u64;
            if span > mine {
                t.epoch += 1;
            }
            t.own = t.own.split_off(&(seq + 1));
            t.seen = seq;
            t.seen_end = end;
        } else if seq == t.seen {
            t.seen_end = t.seen_end.min(end);
        } else if ticket.0 > t.seen_end {
            // Began after a read that saw a higher number had completed: the database went back.
            tracing::warn!(seen = t.seen, now = seq, "the store's commit sequence went backwards");
            t.epoch += 1;
            t.own.clear();
            t.seen = seq;
            t.seen_end = end;
        }
        t.epoch
    }

    /// Registers a commit of our own (before `COMMIT` is sent).
    pub(crate) fn own_pending(&self, seq: u64) {
        self.lock().own.insert(seq);
    }

    /// The commit registered as `seq` did not (or may not have) happened.
    pub(crate) fn own_failed(&self, seq: u64) {
        let mut t = self.lock();
        t.own.remove(&seq);
        t.epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::Changes;

    fn read(c: &Changes, seq: u64) -> u64 {
        let t = c.begin_read();
        c.observe(&t, seq)
    }

    #[test]
    fn own_commits_do_not_move_the_epoch() {
        let c = Changes::new(10);
        let e = read(&c, 10);
        c.own_pending(11);
        c.own_pending(12);
        assert_eq!(read(&c, 12), e);
        assert_eq!(read(&c, 12), e);
    }

    #[test]
    fn a_foreign_commit_moves_it_once() {
        let c = Changes::new(10);
        let e = read(&c, 10);
        c.own_pending(11);
        // 12 is someone else's.
        let e2 = read(&c, 12);
        assert_ne!(e2, e);
        assert_eq!(read(&c, 12), e2);
        // Foreign commits interleaved with ours are still seen.
        c.own_pending(13);
        c.own_pending(15);
        assert_ne!(read(&c, 15), e2);
    }

    #[test]
    fn our_commit_seen_later_by_a_partial_read_is_not_foreign() {
        let c = Changes::new(1);
        let e = read(&c, 1);
        c.own_pending(2);
        c.own_pending(3);
        assert_eq!(read(&c, 2), e);
        assert_eq!(read(&c, 3), e);
    }

    #[test]
    fn a_stale_overlapping_read_is_ignored_but_a_regression_is_not() {
        let c = Changes::new(5);
        let stale = c.begin_read(); // begins before the next read completes
        let e = read(&c, 7);
        assert_eq!(c.observe(&stale, 6), e, "an overlapping older read is stale");
        // A read that began after the read of 7 completed and sees 4: the database went back.
        let e2 = read(&c, 4);
        assert_ne!(e2, e);
        assert_eq!(read(&c, 4), e2);
    }

    #[test]
    fn a_failed_commit_reports_a_change() {
        let c = Changes::new(1);
        let e = read(&c, 1);
        c.own_pending(2);
        c.own_failed(2);
        let e2 = read(&c, 1);
        assert_ne!(e2, e);
        // Number 2 is now someone else's.
        assert_ne!(read(&c, 2), e2);
    }
}
