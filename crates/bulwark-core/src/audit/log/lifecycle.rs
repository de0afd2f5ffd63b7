//! The life of one opener of a log: registration (and the record of earlier openers' unclean
//! ends), the background flusher (the bounded window, use counts, lease hand-over), and the
//! clean close; and sealing (a checkpoint on demand, the final one at zeroization). Child of `log.rs`, whose state it drives; it never touches records except
//! through `Inner::sequence` and `Inner::write_pending`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{lock, push_record, system_record, Inner, OpenerOp, Seal, LEASE_POLL};
use crate::audit::export::{u, ExportIter};
use crate::audit::{Checkpoint, ExportLine, Verifier};
use crate::error::{Error, Result};

impl Inner {
    /// Registers this opener: records the unclean ends of dead openers, then `audit-open`,
    /// durably, under the lease (so two openers never report the same death).
    pub(super) fn register(&self) -> Result<()> {
        self.acquire()?;
        if lock(&self.seq).finalized {
            return Ok(()); // nothing is appended to a finalized log
        }
        let rows: Vec<(String, i64, String, i64)> = {
            let w = lock(&self.writer);
            let mut st = w.conn.prepare("SELECT id, pid, host, last_seq FROM audit_openers")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut recs = Vec::new();
        let mut ops = Vec::new();
        let mut dead = Vec::new();
        for (id, pid, host, last) in rows {
            if let Some(guard) = self.locks.dead_opener(&id, &host, u(pid)) {
                let detail = format!("opener={id} pid={pid} host={host} last_durable_seq={last}");
                recs.push(system_record("unclean-shutdown", self.client(), "unclean", detail));
                ops.push(OpenerOp::Delete(id));
                dead.push(guard);
            }
        }
        let detail = format!("opener={} pid={} host={}", self.opener, self.pid, self.host);
        recs.push(system_record("audit-open", self.client(), "ok", detail));
        let n = recs.len() as u64;
        // The open record's number is known only once sequenced; the row insert names it.
        let (first, epoch) = {
            let s = lock(&self.seq);
            (s.size, self.failures.load(Ordering::Acquire))
        };
        ops.push(OpenerOp::Insert { seq: first + n - 1 });
        let (got, _) = self.sequence(&recs, ops)?;
        if got != first {
            return Err(Error::Internal("audit lease lost while registering"));
        }
        self.make_durable(first + n, epoch)?;
        drop(dead);
        Ok(())
    }

    pub(super) fn close(&self) -> Result<()> {
        let detail = format!("opener={} pid={} host={}", self.opener, self.pid, self.host);
        let rec = system_record("audit-close", self.client(), "ok", detail);
        let r = self.drain_counts().and_then(|()| {
            let (first, epoch) =
                self.sequence(&[rec], vec![OpenerOp::Delete(self.opener.clone())])?;
            self.make_durable(first + 1, epoch)
        });
        let r = match r {
            Err(Error::Zeroized) => Ok(()),
            r => r,
        };
        {
            let mut w = lock(&self.writer);
            let _ = self.write_pending(&mut w, true, Seal::None);
        }
        self.locks.unregister();
        r
    }

    /// The background flusher: writes and syncs bounded records within the window, drains
    /// the use counters every window, hands the lease over when another opener waits for it,
    /// and gives it up after a quiet window.
    pub(super) fn flusher(&self) {
        let window = self.window.max_delay;
        let mut last_drain = Instant::now();
        loop {
            let (due, leased, idle) = {
                let mut s = lock(&self.seq);
                let timeout = if s.count > 0 || s.leased {
                    Some(LEASE_POLL)
                } else if self.counters.any() {
                    Some(window.saturating_sub(last_drain.elapsed()).max(LEASE_POLL))
                } else {
                    None
                };
                if !self.stop.load(Ordering::Acquire) {
                    s = match timeout {
                        Some(t) => {
                            self.cv
                                .wait_timeout(s, t)
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .0
                        }
                        None => self.cv.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner),
                    };
                }
                if self.stop.load(Ordering::Acquire) {
                    return; // `close` writes what is left
                }
                let due = s.count > 0
                    && (s.count >= self.window.max_records
                        || s.since.is_some_and(|t| t.elapsed() >= window));
                let idle = s.count == 0 && s.last_activity.is_none_or(|t| t.elapsed() >= window);
                (due, s.leased, idle)
            };
            let mut due = due;
            if last_drain.elapsed() >= window {
                last_drain = Instant::now();
                let before = lock(&self.seq).count;
                if let Err(e) = self.drain_counts() {
                    tracing::error!(error = %e, "audit use counts not recorded");
                }
                due |= lock(&self.seq).count > before;
            }
            let wanted = leased && self.locks.lease_wanted();
            if !(due || wanted || (leased && idle)) {
                continue;
            }
            let r = {
                let mut w = lock(&self.writer);
                self.write_pending(&mut w, wanted || idle, Seal::None)
                    .map(|_| self.written.load(Ordering::Acquire))
            };
            if let Err(e) = r.and_then(|written| self.sync(written)) {
                tracing::error!(error = %e, "audit flush failed");
            }
        }
    }

    pub(super) fn seal(&self, kind: Seal) -> Result<Option<Checkpoint>> {
        let signer = self.signer();
        if signer.is_none() && kind == Seal::Checkpoint {
            return Err(Error::UserNotLoggedIn);
        }
        self.flush()?;
        if let Some(s) = &signer {
            self.reverify(&s.public_key())?;
        }
        loop {
            self.acquire()?;
            let mut w = lock(&self.writer);
            if !lock(&self.seq).leased {
                continue; // handed over meanwhile
            }
            if lock(&self.seq).finalized {
                return Err(Error::Zeroized);
            }
            self.drain_counts_locked();
            let cp = self.write_pending(&mut w, false, kind)?;
            let written = self.written.load(Ordering::Acquire);
            drop(w);
            self.sync(written)?;
            return Ok(cp);
        }
    }

    /// Counts are sequenced while `writer` is held (by the caller): only possible because
    /// the lease is held, so `sequence` does not need to acquire it.
    fn drain_counts_locked(&self) {
        let recs = self.counters.drain();
        if recs.is_empty() {
            return;
        }
        let mut s = lock(&self.seq);
        if s.count == 0 {
            s.since = Some(Instant::now());
        }
        for r in recs {
            push_record(&mut s, &r);
        }
    }

    /// Verifies the stored log against its checkpoints (records after the last one are
    /// expected: the caller is about to sign them).
    fn reverify(&self, public_key: &[u8]) -> Result<()> {
        let it = ExportIter::open(&self.path, self.log_id, 0)?;
        let mut v = Verifier::new(public_key);
        let mut exported = 0u64;
        for line in it {
            let line = line.inspect_err(|e| self.latch(e))?;
            if matches!(line, ExportLine::Record { .. }) {
                exported += 1;
            }
            if !v.push(line) {
                break;
            }
        }
        let rep = v.finish();
        if let Some((seq, why)) = &rep.bad {
            let uncovered_tail = why.starts_with("records not covered");
            if !uncovered_tail || rep.records != exported {
                tracing::error!(seq, why, "audit chain break");
                let e = Error::Integrity("audit chain broken");
                self.latch(&e);
                return Err(e);
            }
        }
        Ok(())
    }
}
