//! The audit outbox: a change to the store and the audit record of the call that made it live
//! in two files and cannot be committed as one transaction. So every authenticated write made
//! by an audited call also writes, **in the same store transaction**, an outbox row naming the
//! call (operation, actor, time, the objects it touched, and the audit log's size before it).
//! The call's audit record then carries `outbox=<id>`; once it is appended the row is done, and
//! the next write deletes it. A crash (or a failed append) between the store commit and the
//! audit append leaves the row behind: at the next unlock, a row older than the grace period
//! whose id is not in the log since the row's audit position is recorded as `audit-recovered`,
//! so no committed key-management change is ever missing from the log.
//!
//! Rows are authenticated records like any other (MAC and set commitment): deleting one to hide
//! a change is detected as tampering.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::{kind, AuthTx};
use super::{lock, Token};
use crate::audit::{self, Actor, AuditEvent, ExportLine};
use crate::error::{Error, Result};
use crate::hierarchy::IntegrityKeys;
use crate::store::Store;

/// How old an outbox row must be before an unlock treats it as lost: another process may have
/// committed it and still be appending its record.
pub(super) const OUTBOX_GRACE: Duration = Duration::from_secs(30);

/// The marker a call's audit record carries in its detail.
const MARK: &str = "outbox=";

/// The audited call running on this thread (set by the pre-check, taken by `finish`).
#[derive(Clone, Copy)]
struct Intent {
    op: &'static str,
    session: u64,
    /// Set by the first write the call commits.
    id: Option<[u8; 16]>,
}

thread_local! {
    static INTENT: Cell<Option<Intent>> = const { Cell::new(None) };
}

/// One outbox row's value.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    op: String,
    actor: String,
    role: String,
    client: String,
    session: u64,
    at_ms: u64,
    /// The audit log's size before the call's record: its record, if any, is at or after it.
    audit_size: u64,
    /// Unique ids (hex) of the token objects the write inserted, changed or deleted (the
    /// first [`MAX_NAMED`]).
    objects: Vec<String>,
    /// How many more objects it touched (a restore touches every object).
    #[serde(default)]
    more: u64,
}

/// How many touched objects an outbox row names.
const MAX_NAMED: usize = 64;

/// The outbox state of one open token: ids whose records are appended, to delete.
#[derive(Default)]
pub(crate) struct Outbox {
    done: Mutex<Vec<[u8; 16]>>,
    /// Rows whose record failed to append in this process (disk full, log broken): recorded
    /// as `audit-recovered` after the next record that does append.
    failed: Mutex<Vec<[u8; 16]>>,
    any_failed: AtomicBool,
}

/// A call starts on this thread (its pre-check).
pub(super) fn begin(op: &'static str, session: u64) {
    INTENT.with(|c| c.set(Some(Intent { op, session, id: None })));
}

/// A call of a front door's operation starts on this thread (`begin`), continuing the row of the
/// same operation begun earlier on this thread and not yet recorded (a daemon request that
/// changes several rows through several kernel calls, then records once).
/// `check` runs in between (the pre-check, which begins a call of its own).
pub(super) fn begin_continued<T>(op: &'static str, check: impl FnOnce() -> T) -> T {
    let prev = INTENT.try_with(Cell::get).ok().flatten();
    let r = check();
    let id = prev.filter(|p| p.op == op).and_then(|p| p.id);
    let _ = INTENT.try_with(|c| c.set(Some(Intent { op, session: 0, id })));
    r
}

/// Runs `f`, an audited call of its own made inside another one (an automatic key rotation
/// at the gate of a key use), and gives the outer call back its own outbox state afterwards.
pub(super) fn nested<T>(f: impl FnOnce() -> T) -> T {
    let outer = INTENT.try_with(Cell::take).ok().flatten();
    let r = f();
    let _ = INTENT.try_with(|c| c.set(outer));
    r
}

/// The call on this thread ends; the outbox id its writes committed, if any.
pub(super) fn end() -> Option<[u8; 16]> {
    INTENT.try_with(Cell::take).ok().flatten().and_then(|i| i.id)
}

/// The audit detail of a call whose writes committed outbox row `id`.
pub(super) fn mark(mut detail: String, id: &[u8; 16]) -> String {
    if !detail.is_empty() {
        detail.push(' ');
    }
    detail.push_str(MARK);
    detail.push_str(&hex::encode(id));
    detail
}

/// The outbox ids named by one audit record's detail.
fn marked(detail: &str) -> impl Iterator<Item = &str> {
    detail.split(' ').filter_map(|w| w.strip_prefix(MARK))
}

/// The record standing for a call's lost record.
fn recovered_event(e: &Entry, when: &str) -> AuditEvent {
    AuditEvent {
        actor: Actor { name: e.actor.clone(), role: e.role.clone(), client: e.client.clone() },
        session: e.session,
        op: "audit-recovered",
        mechanism: None,
        object: e.objects.join(","),
        label: String::new(),
        result: "ok",
        detail: if e.more > 0 {
            format!(
                "{} committed at {} ms without its audit record ({} more objects); recovered {when}",
                e.op, e.at_ms, e.more
            )
        } else {
            format!(
                "{} committed at {} ms without its audit record; recovered {when}",
                e.op, e.at_ms
            )
        },
    }
}

/// What a write does with the outbox, decided before its transaction (it may be retried).
pub(super) struct Plan {
    /// Done rows to delete.
    done: Vec<[u8; 16]>,
    /// The row to write for the call on this thread: its id and the value's parts.
    row: Option<([u8; 16], Entry)>,
}

impl<S: Store> Token<S> {
    /// The outbox part of the next write: the rows done so far, and a row for the call on
    /// this thread if it has not written one yet.
    pub(super) fn outbox_plan(&self) -> Result<Plan> {
        let done = std::mem::take(&mut *lock(&self.outbox.done));
        let intent = INTENT.try_with(Cell::get).ok().flatten();
        let row = match intent {
            Some(i) if self.audit_log().is_some() => {
                // A later write of the same call updates its row (apply merges them).
                let id = if let Some(id) = i.id {
                    id
                } else {
                    let mut id = [0u8; 16];
                    self.provider.random(&mut id)?;
                    id
                };
                let actor = self.actor(None);
                let entry = Entry {
                    op: i.op.to_owned(),
                    actor: actor.name,
                    role: actor.role,
                    client: actor.client,
                    session: i.session,
                    at_ms: audit::now_ms(),
                    audit_size: self.audit_log().map_or(Ok(0), audit::AuditLog::size)?,
                    objects: Vec::new(),
                    more: 0,
                };
                Some((id, entry))
            }
            _ => None,
        };
        Ok(Plan { done, row })
    }

    /// Applies `plan` inside the write transaction, after the call's own changes.
    pub(super) fn outbox_apply(plan: &Plan, a: &mut AuthTx<'_>) -> Result<()> {
        for id in &plan.done {
            a.delete_record(kind::OUTBOX, id)?;
        }
        if let Some((id, entry)) = &plan.row {
            let mut entry = entry.clone();
            if let Some(old) = a.record(kind::OUTBOX, id)? {
                // An earlier write of the same call: its time, position and objects stay.
                let old: Entry = serde_json::from_slice(&old.value)
                    .map_err(|_| Error::Integrity("outbox row malformed"))?;
                entry.op = old.op;
                entry.at_ms = old.at_ms;
                entry.audit_size = old.audit_size;
                entry.objects = old.objects;
                entry.more = old.more;
            }
            for uid in a.touched() {
                let uid = hex::encode(uid);
                if entry.objects.contains(&uid) {
                    continue;
                }
                if entry.objects.len() < MAX_NAMED {
                    entry.objects.push(uid);
                } else {
                    entry.more += 1;
                }
            }
            let value =
                serde_json::to_vec(&entry).map_err(|_| Error::Internal("outbox row encoding"))?;
            a.put_record(kind::OUTBOX, id, &value)?;
        }
        Ok(())
    }

    /// After the write: a committed row belongs to the call on this thread; rows not deleted
    /// (the write failed) stay queued.
    pub(super) fn outbox_after(&self, plan: Plan, committed: bool) {
        if committed {
            if let Some((id, _)) = plan.row {
                let _ = INTENT.try_with(|c| {
                    if let Some(mut i) = c.get() {
                        i.id = Some(id);
                        c.set(Some(i));
                    }
                });
            }
        } else if !plan.done.is_empty() {
            lock(&self.outbox.done).extend(plan.done);
        }
    }

    /// The call's record (naming `id`) is in the log: its row can go.
    pub(super) fn outbox_done(&self, id: [u8; 16]) {
        lock(&self.outbox.done).push(id);
    }

    /// Appends a front door's own record of the operation running on this thread (the daemon's
    /// user and access-list administration, with the approvals it checked): the record names
    /// the outbox row the operation's writes committed, which is then done — the same
    /// guarantee as for the kernel's own records. Durable before it returns.
    ///
    /// # Errors
    /// Audit log errors (the row then stays and is recorded as `audit-recovered`);
    /// [`Error::NotSupported`] when the log is not open.
    pub fn record_front_door(&self, ev: &AuditEvent) -> Result<u64> {
        let id = end();
        let Some(log) = self.audit_log() else {
            return Err(Error::NotSupported("the audit log is not open"));
        };
        let r = match id {
            Some(id) => {
                let mut ev = ev.clone();
                ev.detail = mark(std::mem::take(&mut ev.detail), &id);
                log.append(&ev)
            }
            None => log.append(ev),
        };
        match (&r, id) {
            (Ok(_), Some(id)) => self.outbox_done(id),
            (Err(_), Some(id)) => self.outbox_failed(id),
            _ => {}
        }
        if r.is_ok() {
            self.outbox_retry();
        }
        r
    }

    /// The record of the call that committed row `id` failed to append.
    pub(super) fn outbox_failed(&self, id: [u8; 16]) {
        lock(&self.outbox.failed).push(id);
        self.outbox.any_failed.store(true, Ordering::Release);
    }

    /// After a record appended again: the rows whose record failed earlier in this process are
    /// recorded now (a long-running daemon does not wait for its next unseal).
    pub(super) fn outbox_retry(&self) {
        if !self.outbox.any_failed.load(Ordering::Acquire) {
            return;
        }
        let (Some(ik), Some(log)) = (self.integrity(), self.audit_log()) else { return };
        let ids = std::mem::take(&mut *lock(&self.outbox.failed));
        self.outbox.any_failed.store(false, Ordering::Release);
        let mut left = Vec::new();
        for id in ids {
            let r = self.store.record(kind::OUTBOX, &id).and_then(|row| match row {
                // Already recovered (another process's unlock) or deleted.
                None => Ok(()),
                Some(row) => {
                    ik.verify_row(&row)?;
                    let e: Entry = serde_json::from_slice(&row.value)
                        .map_err(|_| Error::Integrity("outbox row malformed"))?;
                    log.append(&recovered_event(&e, "after a failed append"))?;
                    Ok(())
                }
            });
            match r {
                Ok(()) => self.outbox_done(id),
                Err(e) => {
                    tracing::error!(error = %e, "audit outbox: cannot record a lost record yet");
                    left.push(id);
                }
            }
        }
        if !left.is_empty() {
            lock(&self.outbox.failed).extend(left);
            self.outbox.any_failed.store(true, Ordering::Release);
        }
    }

    /// Records every outbox row older than `grace` whose call's audit record is not in the log
    /// as `audit-recovered` (actor, operation, objects and commit time of the lost record), then
    /// deletes the rows. Runs at each unlock with [`OUTBOX_GRACE`]; needs the store unlocked.
    /// Returns how many records were recovered.
    ///
    /// # Errors
    /// Store, integrity and audit errors; [`Error::UserNotLoggedIn`] when locked.
    pub fn recover_audit_outbox(&self, grace: Duration) -> Result<usize> {
        let ik = self.integrity().ok_or(Error::UserNotLoggedIn)?;
        self.recover_outbox_with(&ik, grace)
    }

    pub(super) fn recover_outbox_with(&self, ik: &IntegrityKeys, grace: Duration) -> Result<usize> {
        let Some(log) = self.audit_log() else { return Ok(0) };
        let rows = self.store.records(kind::OUTBOX, b"")?;
        if rows.is_empty() {
            return Ok(0);
        }
        let pending: HashSet<[u8; 16]> = lock(&self.outbox.done).iter().copied().collect();
        let now = audit::now_ms();
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let mut stale = Vec::new();
        for r in rows {
            ik.verify_row(&r)?;
            let id: [u8; 16] =
                r.key.as_slice().try_into().map_err(|_| Error::Integrity("outbox row id"))?;
            let e: Entry = serde_json::from_slice(&r.value)
                .map_err(|_| Error::Integrity("outbox row malformed"))?;
            if !pending.contains(&id) && now.saturating_sub(e.at_ms) >= grace_ms {
                stale.push((id, e));
            }
        }
        let Some(since) = stale.iter().map(|(_, e)| e.audit_size).min() else { return Ok(0) };
        let since = since.min(log.size()?);
        let mut recorded = HashSet::new();
        for line in log.export_iter(since)? {
            if let ExportLine::Record { record, .. } = line? {
                for id in marked(&record.detail) {
                    recorded.insert(id.to_owned());
                }
            }
        }
        let mut recovered = 0;
        for (id, e) in &stale {
            if recorded.contains(&hex::encode(id)) {
                continue;
            }
            log.append(&recovered_event(e, "at unlock"))?;
            recovered += 1;
        }
        self.write(ik, |a| {
            for (id, _) in &stale {
                a.delete_record(kind::OUTBOX, id)?;
            }
            Ok(())
        })?;
        if recovered > 0 {
            tracing::warn!(recovered, "audit records recovered from the outbox");
        }
        Ok(recovered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{AttrType, AttrValue};
    use crate::hierarchy::KdfParams;
    use crate::mechanism::KeyGenMechanism;
    use crate::secret::Pin;
    use crate::token::{InitOptions, UserType};

    fn aes_template(label: &str) -> Vec<(AttrType, AttrValue)> {
        vec![
            (AttrType::Token, AttrValue::Bool(true)),
            (AttrType::Label, AttrValue::Bytes(label.as_bytes().to_vec())),
            (AttrType::ValueLen, AttrValue::Ulong(32)),
        ]
    }

    fn records(t: &Token) -> Vec<audit::AuditRecord> {
        t.audit_log()
            .unwrap()
            .export_lines(0)
            .unwrap()
            .into_iter()
            .filter_map(|l| match l {
                ExportLine::Record { record, .. } => Some(record),
                _ => None,
            })
            .collect()
    }

    fn outbox_rows(t: &Token) -> usize {
        t.store.records(kind::OUTBOX, b"").unwrap().len()
    }

    #[test]
    fn a_change_committed_without_its_record_is_recorded_at_the_next_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pin = Pin::new(b"pin-12345".to_vec());
        let opts = InitOptions {
            kdf: KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 },
            ..InitOptions::default()
        };
        Token::init_with_options(&path, "t", &pin, Some(&pin), &opts).unwrap();
        let t = Token::open(&path).unwrap();
        t.login(UserType::User, &pin).unwrap();

        // The normal path: the record names the outbox row, and the row goes with the next write.
        let h = t.generate_key(KeyGenMechanism::AesKeyGen, &aes_template("a"), 0).unwrap();
        let rec = records(&t).into_iter().rfind(|r| r.op == "generate-key").unwrap();
        assert!(rec.detail.contains(MARK), "{}", rec.detail);
        assert_eq!(rec.object, t.describe(h).0);
        assert_eq!(outbox_rows(&t), 1);
        t.set_attributes(h, &[(AttrType::Label, AttrValue::Bytes(b"a2".to_vec()))]).unwrap();
        assert_eq!(outbox_rows(&t), 1, "the first row is gone, the second one is pending");
        assert_eq!(t.recover_audit_outbox(Duration::ZERO).unwrap(), 0);

        // A crash between the store commit and the audit append: the call's write commits its
        // outbox row, the record is never written.
        begin("generate-key", 7);
        let lost = t.generate_key_unaudited(KeyGenMechanism::AesKeyGen, &aes_template("b"), 0);
        let lost = lost.unwrap();
        let _ = t.obj(lost);
        let lost_uid = t.describe(lost).0;
        assert!(end().is_some(), "the write committed a row");
        let before = records(&t).len();
        t.verify_store().unwrap();

        // Another process opens the store: a young row may belong to a call still running, so
        // the unlock leaves it; once past the grace period it is recorded.
        let t2 = Token::open(&path).unwrap();
        t2.login(UserType::User, &pin).unwrap();
        assert!(!records(&t2).iter().any(|r| r.op == "audit-recovered"));
        assert_eq!(t2.recover_audit_outbox(Duration::ZERO).unwrap(), 1);
        let recs = records(&t2);
        let rec = recs.iter().find(|r| r.op == "audit-recovered").unwrap();
        assert_eq!(rec.object, lost_uid);
        assert_eq!(rec.session, 7);
        assert_eq!(rec.actor, "user");
        assert!(rec.detail.starts_with("generate-key committed"), "{}", rec.detail);
        assert!(recs.len() > before);
        assert_eq!(outbox_rows(&t2), 0);
        // Recorded once, never again; the store still verifies (the rows were authentic).
        assert_eq!(t2.recover_audit_outbox(Duration::ZERO).unwrap(), 0);
        t2.verify_store().unwrap();
    }

    #[test]
    fn a_front_door_record_names_the_row_of_its_kernel_calls() {
        use crate::kernel::Role;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pin = Pin::new(b"pin-12345".to_vec());
        let opts = InitOptions {
            kdf: KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 },
            ..InitOptions::default()
        };
        Token::init_with_options(&path, "t", &pin, Some(&pin), &opts).unwrap();
        let t = Token::open(&path).unwrap();
        t.login(UserType::So, &pin).unwrap();
        // One request, two kernel calls (as the daemon's create-user with a bound certificate),
        // one record: the calls share one row, which the record names.
        t.create_user("alice", Role::CryptoUser, b"alice-password", None).unwrap();
        t.bind_user_certificate("alice", &"ab".repeat(32)).unwrap();
        assert_eq!(outbox_rows(&t), 1);
        let ev = AuditEvent { op: "create-user", result: "ok", ..AuditEvent::default() };
        t.record_front_door(&ev).unwrap();
        let rec = records(&t).into_iter().rfind(|r| r.op == "create-user").unwrap();
        assert!(rec.detail.starts_with(MARK), "{}", rec.detail);
        assert_eq!(t.recover_audit_outbox(Duration::ZERO).unwrap(), 0);
        // A request whose record never comes (the daemon died): recovered, once.
        t.create_user("bob", Role::CryptoUser, b"bob-password", None).unwrap();
        end();
        assert_eq!(t.recover_audit_outbox(Duration::ZERO).unwrap(), 1);
        let rec = records(&t).into_iter().rfind(|r| r.op == "audit-recovered").unwrap();
        assert!(rec.detail.starts_with("user-admin committed"), "{}", rec.detail);
        assert_eq!(t.recover_audit_outbox(Duration::ZERO).unwrap(), 0);
        t.verify_store().unwrap();
    }

    #[test]
    fn a_failed_append_is_recovered_after_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pin = Pin::new(b"pin-12345".to_vec());
        let opts = InitOptions {
            kdf: KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 },
            ..InitOptions::default()
        };
        Token::init_with_options(&path, "t", &pin, Some(&pin), &opts).unwrap();
        let t = Token::open(&path).unwrap();
        t.login(UserType::User, &pin).unwrap();
        // The call commits, its append fails (as `finish` sees it).
        begin("generate-key", 3);
        let lost = t.generate_key_unaudited(KeyGenMechanism::AesKeyGen, &aes_template("c"), 0);
        let lost = lost.unwrap();
        let _ = t.obj(lost);
        let lost_uid = t.describe(lost).0;
        t.outbox_failed(end().unwrap());
        assert!(!records(&t).iter().any(|r| r.op == "audit-recovered"));
        // The next record that appends brings the lost one in, without waiting for an unlock.
        t.generate_key(KeyGenMechanism::AesKeyGen, &aes_template("d"), 0).unwrap();
        let recs = records(&t);
        let rec = recs.iter().find(|r| r.op == "audit-recovered").unwrap();
        assert_eq!(rec.object, lost_uid);
        assert!(rec.detail.ends_with("after a failed append"), "{}", rec.detail);
        // Its row goes with the next write; nothing is recorded twice.
        t.set_attributes(lost, &[(AttrType::Label, AttrValue::Bytes(b"c2".to_vec()))]).unwrap();
        assert_eq!(t.recover_audit_outbox(Duration::ZERO).unwrap(), 0);
        assert_eq!(records(&t).iter().filter(|r| r.op == "audit-recovered").count(), 1);
        t.verify_store().unwrap();
    }
}
