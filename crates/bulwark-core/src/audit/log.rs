//! The audit log file: an SQLite database beside the store (`<store>-audit`), WAL mode,
//! `synchronous=FULL`, with triggers that refuse every UPDATE and DELETE of a record or a
//! checkpoint. It is a separate file so that audit commits never invalidate the token's object
//! cache or contend with object writes.
//!
//! **Group commit.** [`AuditLog::append`] queues the event; the first caller that finds no
//! flush in progress becomes the leader, writes every queued record in one transaction (one
//! fsync), then wakes the others. No caller returns before the transaction holding its record
//! has committed; when it fails, every caller in the batch gets the error. Sequence numbers,
//! chain values and the Merkle frontier are computed inside the write transaction, so several
//! processes may append to one log.
//!
//! Lock order: `group` (the queue) is never held while the connection is in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::merkle::{self, Frontier};
use super::{
    chain_next, genesis, now_ms, AuditEvent, AuditRecord, AuditSigner, Checkpoint, ExportLine, Hash,
};
use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_batches (
    first_seq INTEGER PRIMARY KEY, count INTEGER NOT NULL,
    records BLOB NOT NULL, chains BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT, size INTEGER NOT NULL, chain BLOB NOT NULL,
    root BLOB NOT NULL, time_ms INTEGER NOT NULL, sig BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_append_only_u BEFORE UPDATE ON audit_batches
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_d BEFORE DELETE ON audit_batches
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_u BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_d BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
";

/// An inclusion proof for one record, checkable offline ([`super::verify_proof`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The record's sequence number (its leaf index).
    pub seq: u64,
    /// Hex leaf hash of the record's canonical encoding.
    pub leaf: String,
    /// Hex sibling hashes from the leaf upwards (RFC 6962 audit path).
    pub path: Vec<String>,
    /// The signed checkpoint whose root the path leads to.
    pub checkpoint: Checkpoint,
}

/// One caller waiting for its record to be durable. Each waiter is woken on its own condition
/// variable (no thundering herd): once with its result, or once to lead the next batch.
struct Waiter {
    state: Mutex<WaitState>,
    cv: Condvar,
}

enum WaitState {
    Queued,
    Lead,
    Done(std::result::Result<u64, String>),
}

#[derive(Default)]
struct Group {
    queue: Vec<(Arc<Waiter>, Vec<AuditRecord>)>,
    /// A leader is writing (or has been chosen): newcomers queue and wait.
    flushing: bool,
}

/// When checkpoints are signed automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many records since the last checkpoint (0: never by count).
    pub every_records: u64,
    /// After this many milliseconds since the last checkpoint (0: never by time).
    pub every_ms: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self { every_records: 1000, every_ms: 60_000 }
    }
}

/// One store's audit log.
pub struct AuditLog {
    path: PathBuf,
    log_id: [u8; 16],
    conn: Mutex<Connection>,
    /// The head after this process's last commit and the last checkpoint's (size, time):
    /// valid while no other process appended (checked with one `max(seq)` per batch).
    /// Locked only under `conn`.
    head_cache: Mutex<Option<(Head, (u64, u64))>>,
    group: Mutex<Group>,
    signer: RwLock<Option<Arc<AuditSigner>>>,
    policy: CheckpointPolicy,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish_non_exhaustive()
    }
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn hash_of(v: &[u8]) -> Result<Hash> {
    v.try_into().map_err(|_| Error::Integrity("audit log: malformed hash"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The log file that belongs to a store file.
pub(crate) fn log_path(store: &Path) -> PathBuf {
    let mut p = store.as_os_str().to_owned();
    p.push("-audit");
    PathBuf::from(p)
}

fn mark_path(log_id: &[u8; 16]) -> Option<PathBuf> {
    crate::rollback::state_dir().map(|d| d.join(format!("{}.audit", hex::encode(log_id))))
}

fn load_mark(log_id: &[u8; 16]) -> u64 {
    mark_path(log_id)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn record_mark(log_id: &[u8; 16], size: u64) {
    let Some(path) = mark_path(log_id) else { return };
    if load_mark(log_id) >= size {
        return;
    }
    let w = || -> std::io::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, size.to_string())?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = w() {
        tracing::warn!(error = %e, "cannot record the audit high-water mark");
    }
}

#[derive(Clone)]
struct Head {
    frontier: Frontier,
    chain: Hash,
}

fn read_head(c: &Connection, log_id: &[u8; 16]) -> Result<Head> {
    let f: Option<Vec<u8>> = c
        .query_row("SELECT v FROM audit_meta WHERE k = 'frontier'", [], |r| r.get(0))
        .optional()?;
    let frontier = match f {
        Some(b) => Frontier::decode(&b).ok_or(Error::Integrity("audit log: frontier malformed"))?,
        None => Frontier::default(),
    };
    let last: Option<(i64, i64, Vec<u8>)> = c
        .query_row(
            "SELECT first_seq, count, chains FROM audit_batches ORDER BY first_seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let chain = match last {
        None if frontier.size() == 0 => genesis(log_id),
        Some((first, count, chains)) if u(first) + u(count) == frontier.size() => {
            hash_of(chains.get(chains.len().saturating_sub(32)..).unwrap_or_default())?
        }
        _ => return Err(Error::Integrity("audit chain broken: head does not match the records")),
    };
    Ok(Head { frontier, chain })
}

/// Calls `f(record, stored chain value)` for every record with `seq >= since`, in order,
/// reading the batches in one snapshot.
fn scan(
    c: &Connection,
    since: u64,
    mut f: impl FnMut(AuditRecord, &[u8], Hash) -> Result<()>,
) -> Result<()> {
    let mut st = c.prepare_cached(
        "SELECT first_seq, count, records, chains FROM audit_batches
         WHERE first_seq + count > ?1 ORDER BY first_seq",
    )?;
    let mut rows = st.query([i(since)])?;
    let bad = || Error::Integrity("audit chain broken: a batch does not decode");
    while let Some(row) = rows.next()? {
        let (first, count): (i64, i64) = (row.get(0)?, row.get(1)?);
        let (records, chains): (Vec<u8>, Vec<u8>) = (row.get(2)?, row.get(3)?);
        let count = usize::try_from(count).map_err(|_| bad())?;
        if chains.len() != count * 32 {
            return Err(bad());
        }
        let mut rest = records.as_slice();
        for n in 0..count {
            let (len, t) = rest.split_at_checked(4).ok_or_else(bad)?;
            let len = u32::from_be_bytes(len.try_into().map_err(|_| bad())?) as usize;
            let (canonical, t) = t.split_at_checked(len).ok_or_else(bad)?;
            rest = t;
            let rec = AuditRecord::from_canonical(canonical).ok_or_else(bad)?;
            if rec.seq != u(first) + n as u64 {
                return Err(bad());
            }
            if rec.seq >= since {
                f(rec, canonical, hash_of(&chains[n * 32..n * 32 + 32])?)?;
            }
        }
    }
    Ok(())
}

impl AuditLog {
    /// Opens (creating when `create`) the log of the store at `store_path`. Fails with an
    /// integrity error when the log is missing but should exist, belongs to another store, or
    /// is shorter than this host has seen (rollback).
    pub fn open(
        store_path: &Path,
        log_id: [u8; 16],
        create: bool,
        policy: CheckpointPolicy,
    ) -> Result<Self> {
        let path = log_path(store_path);
        if !create && !path.exists() {
            return Err(Error::Integrity("audit log missing"));
        }
        #[cfg(unix)]
        if create && !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            // Private like the store: labels and client identities are nobody else's business.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| Error::Store(format!("cannot create the audit log: {}", e.kind())))?;
        }
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        let id: Option<Vec<u8>> = conn
            .query_row("SELECT v FROM audit_meta WHERE k = 'log_id'", [], |r| r.get(0))
            .optional()?;
        match id {
            Some(id) if id == log_id => {}
            Some(_) => return Err(Error::Integrity("audit log belongs to another store")),
            None if create => {
                conn.execute(
                    "INSERT INTO audit_meta (k, v) VALUES ('log_id', ?1)",
                    [log_id.to_vec()],
                )?;
            }
            None => return Err(Error::Integrity("audit log missing its identity")),
        }
        let log = Self {
            path,
            log_id,
            conn: Mutex::new(conn),
            head_cache: Mutex::new(None),
            group: Mutex::new(Group::default()),
            signer: RwLock::new(None),
            policy,
        };
        // Read the mark before the size: marks are recorded after their commit, so another
        // process appending between the two reads can only make the size larger, never turn a
        // healthy log into an apparently rolled-back one.
        let mark = load_mark(&log_id);
        if log.size()? < mark {
            return Err(Error::Integrity("audit log rolled back (shorter than seen before)"));
        }
        Ok(log)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log id (the store id).
    pub fn log_id(&self) -> [u8; 16] {
        self.log_id
    }

    /// Installs (or removes) the signing key used for checkpoints.
    pub fn set_signer(&self, s: Option<Arc<AuditSigner>>) {
        *self.signer.write().unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    }

    /// The signing key, when installed.
    pub fn signer(&self) -> Option<Arc<AuditSigner>> {
        self.signer.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Number of records.
    pub fn size(&self) -> Result<u64> {
        let c = lock(&self.conn);
        Ok(read_head(&c, &self.log_id)?.frontier.size())
    }

    /// Appends one record and returns its sequence number once it is durable (group commit:
    /// concurrent callers share one transaction and one fsync).
    pub fn append(&self, ev: &AuditEvent) -> Result<u64> {
        self.append_all(std::slice::from_ref(ev))
    }

    /// Appends several records as one unit (consecutive sequence numbers, one commit) and
    /// returns the first one's sequence number once all are durable: for a front door that
    /// serves a batch of requests at once.
    pub fn append_all(&self, evs: &[AuditEvent]) -> Result<u64> {
        if evs.is_empty() {
            return Err(Error::ArgumentsBad("no audit events"));
        }
        let now = now_ms();
        let recs: Vec<AuditRecord> =
            evs.iter().map(|ev| AuditRecord::from_event(0, now, ev)).collect();
        let me = Arc::new(Waiter { state: Mutex::new(WaitState::Queued), cv: Condvar::new() });
        let lead = {
            let mut g = lock(&self.group);
            g.queue.push((me.clone(), recs));
            !std::mem::replace(&mut g.flushing, true)
        };
        if !lead {
            let mut st = lock(&me.state);
            loop {
                match std::mem::replace(&mut *st, WaitState::Queued) {
                    WaitState::Done(r) => return r.map_err(Error::Store),
                    WaitState::Lead => break,
                    WaitState::Queued => {
                        st = me.cv.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                }
            }
        }
        // Leader: write everything queued so far (this caller's record included).
        let batch = std::mem::take(&mut lock(&self.group).queue);
        let res = self.write_batch(batch.iter().flat_map(|(_, r)| r.iter().cloned()).collect());
        if let Err(e) = &res {
            tracing::error!(error = %e, "audit append failed");
        }
        let mut mine = Err("audit record not written".to_owned());
        let mut offset = 0u64;
        for (w, recs) in &batch {
            let r = match &res {
                Ok(first) => Ok(first + offset),
                Err(e) => Err(format!("audit record not written ({e})")),
            };
            offset += recs.len() as u64;
            if Arc::ptr_eq(w, &me) {
                mine = r;
            } else {
                *lock(&w.state) = WaitState::Done(r);
                w.cv.notify_one();
            }
        }
        // Hand the lead to the first caller that queued meanwhile, if any.
        {
            let mut g = lock(&self.group);
            match g.queue.first() {
                Some((next, _)) => {
                    *lock(&next.state) = WaitState::Lead;
                    next.cv.notify_one();
                }
                None => g.flushing = false,
            }
        }
        mine.map_err(Error::Store)
    }

    fn write_batch(&self, batch: Vec<AuditRecord>) -> Result<u64> {
        let signer = self.signer();
        let mut c = lock(&self.conn);
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored: Option<(i64, i64)> = tx
            .prepare_cached(
                "SELECT first_seq, count FROM audit_batches ORDER BY first_seq DESC LIMIT 1",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let stored = stored.map_or(0, |(f, n)| u(f) + u(n));
        let cached = lock(&self.head_cache).take().filter(|(h, _)| h.frontier.size() == stored);
        let (mut head, (mut last_size, mut last_time)) = match cached {
            Some(c) => c,
            None => (read_head(&tx, &self.log_id)?, last_checkpoint_at(&tx)?),
        };
        let first = head.frontier.size();
        // One row per batch: the records' canonical encodings (length-prefixed) and the chain
        // value after each. One B-tree insert per fsync, whatever the batch size.
        let mut records = Vec::with_capacity(batch.len() * 200);
        let mut chains = Vec::with_capacity(batch.len() * 32);
        let count = batch.len();
        for mut r in batch {
            r.seq = head.frontier.size();
            let canonical = r.canonical();
            head.chain = chain_next(&head.chain, &canonical);
            head.frontier.push(merkle::leaf_hash(&canonical));
            let len = u32::try_from(canonical.len())
                .map_err(|_| Error::ArgumentsBad("audit record too large"))?;
            records.extend_from_slice(&len.to_be_bytes());
            records.extend_from_slice(&canonical);
            chains.extend_from_slice(&head.chain);
        }
        tx.prepare_cached(
            "INSERT INTO audit_batches (first_seq, count, records, chains) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![i(first), i(count as u64), records, chains])?;
        tx.prepare_cached("INSERT OR REPLACE INTO audit_meta (k, v) VALUES ('frontier', ?1)")?
            .execute([head.frontier.encode()])?;
        let mut signed = None;
        if let Some(s) = signer {
            let size = head.frontier.size();
            let now = now_ms();
            let by_count =
                self.policy.every_records > 0 && size - last_size >= self.policy.every_records;
            let by_time = self.policy.every_ms > 0
                && size > last_size
                && now.saturating_sub(last_time) >= self.policy.every_ms;
            if by_count || by_time {
                insert_checkpoint(&tx, &s, &self.log_id, &head, now)?;
                signed = Some(size);
                (last_size, last_time) = (size, now);
            }
        }
        tx.commit()?;
        *lock(&self.head_cache) = Some((head, (last_size, last_time)));
        if let Some(size) = signed {
            record_mark(&self.log_id, size);
        }
        Ok(first)
    }

    /// Signs a checkpoint over every record now in the log, after re-verifying the whole
    /// stored chain against the earlier checkpoints (a log that no longer verifies is never
    /// signed: that is an audit chain break, reported as an integrity error).
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let s = self.signer().ok_or(Error::UserNotLoggedIn)?;
        let lines = self.export_lines(0)?;
        let rep = super::verify_export(&lines_json(&lines)?, &s.public_key());
        if let Some((seq, why)) = &rep.bad {
            // Uncovered records at the end are expected: that is what this checkpoint is for.
            let uncovered_tail = why.starts_with("records not covered");
            // Compared with the snapshot just verified, not the live size: other writers may
            // append meanwhile, and their records are covered by the checkpoint below anyway
            // (it signs the head read in its own transaction).
            let exported = lines.iter().filter(|l| matches!(l, ExportLine::Record { .. })).count();
            if !uncovered_tail || rep.records != exported as u64 {
                tracing::error!(seq, why, "audit chain break");
                return Err(Error::Integrity("audit chain broken"));
            }
        }
        let mut c = lock(&self.conn);
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head = read_head(&tx, &self.log_id)?;
        let cp = insert_checkpoint(&tx, &s, &self.log_id, &head, now_ms())?;
        tx.commit()?;
        record_mark(&self.log_id, cp.size);
        Ok(cp)
    }

    /// Every record from `since` with the checkpoints that follow them, as export lines (no
    /// new checkpoint: see [`AuditLog::checkpoint`]).
    pub fn export_lines(&self, since: u64) -> Result<Vec<ExportLine>> {
        let c = lock(&self.conn);
        let tx = c.unchecked_transaction()?; // one snapshot
        let (prev_chain, frontier) = if since == 0 {
            (genesis(&self.log_id), Frontier::default())
        } else {
            let mut f = Frontier::default();
            let mut prev = None;
            scan(&tx, 0, |r, canonical, chain| {
                if r.seq < since {
                    f.push(merkle::leaf_hash(canonical));
                    prev = Some(chain);
                }
                Ok(())
            })?;
            if f.size() != since {
                return Err(Error::ArgumentsBad("--since is past the end of the log"));
            }
            (prev.ok_or(Error::ArgumentsBad("--since is past the end of the log"))?, f)
        };
        let mut out = vec![ExportLine::Header {
            version: 1,
            log_id: hex::encode(self.log_id),
            since,
            prev_chain: hex::encode(prev_chain),
            frontier: frontier.nodes().iter().map(hex::encode).collect(),
        }];
        let mut cps: Vec<Checkpoint> = Vec::new();
        {
            let mut st = tx.prepare(
                "SELECT size, chain, root, time_ms, sig FROM checkpoints WHERE size > ?1 ORDER BY id",
            )?;
            let rows = st.query_map([i(since)], |r| {
                Ok((
                    u(r.get(0)?),
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    u(r.get(3)?),
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })?;
            for row in rows {
                let (size, chain, root, time_ms, sig) = row?;
                cps.push(Checkpoint {
                    log_id: hex::encode(self.log_id),
                    size,
                    chain: hex::encode(chain),
                    root: hex::encode(root),
                    time_ms,
                    signature: hex::encode(sig),
                });
            }
        }
        let mut cp_iter = cps.into_iter().peekable();
        scan(&tx, since, |record, _, chain| {
            let seq = record.seq;
            out.push(ExportLine::Record { record, chain: hex::encode(chain) });
            while cp_iter.peek().is_some_and(|cp| cp.size <= seq + 1) {
                out.extend(cp_iter.next().map(ExportLine::Checkpoint));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// An inclusion proof of record `seq` in a fresh checkpoint.
    pub fn prove(&self, seq: u64) -> Result<Proof> {
        let cp = self.checkpoint()?;
        if seq >= cp.size {
            return Err(Error::ArgumentsBad("no audit record with that sequence number"));
        }
        let c = lock(&self.conn);
        let mut leaves: Vec<Hash> = Vec::new();
        scan(&c, 0, |r, canonical, _| {
            if r.seq < cp.size {
                leaves.push(merkle::leaf_hash(canonical));
            }
            Ok(())
        })?;
        if leaves.len() as u64 != cp.size {
            return Err(Error::Integrity("audit chain broken: records missing"));
        }
        let idx = usize::try_from(seq).map_err(|_| Error::Internal("index"))?;
        Ok(Proof {
            seq,
            leaf: hex::encode(leaves[idx]),
            path: merkle::inclusion_path(idx, &leaves).iter().map(hex::encode).collect(),
            checkpoint: cp,
        })
    }
}

/// Serializes export lines to JSON strings.
pub fn lines_json(lines: &[ExportLine]) -> Result<Vec<String>> {
    lines
        .iter()
        .map(|l| serde_json::to_string(l).map_err(|_| Error::Internal("audit json")))
        .collect()
}

fn last_checkpoint_at(tx: &rusqlite::Transaction<'_>) -> Result<(u64, u64)> {
    let r: Option<(i64, i64)> = tx
        .query_row("SELECT size, time_ms FROM checkpoints ORDER BY id DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(r.map_or((0, 0), |(s, t)| (u(s), u(t))))
}

fn insert_checkpoint(
    tx: &rusqlite::Transaction<'_>,
    s: &AuditSigner,
    log_id: &[u8; 16],
    head: &Head,
    now: u64,
) -> Result<Checkpoint> {
    let size = head.frontier.size();
    let root = head.frontier.root();
    let cp = s.sign_checkpoint(log_id, size, &head.chain, &root, now);
    tx.execute(
        "INSERT INTO checkpoints (size, chain, root, time_ms, sig) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            i(size),
            head.chain.to_vec(),
            root.to_vec(),
            i(now),
            hex::decode(&cp.signature).unwrap_or_default()
        ],
    )?;
    Ok(cp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_appends_are_gapless_and_the_table_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).unwrap(); // a fresh log id: no high-water mark yet
        let log = Arc::new(AuditLog::open(&store, id, true, CheckpointPolicy::default()).unwrap());
        let (s, _) = AuditSigner::generate().unwrap();
        log.set_signer(Some(Arc::new(s)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| {
                            log.append(&AuditEvent { op: "sign", ..AuditEvent::default() }).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..160).collect::<Vec<_>>());
        // A batch of events takes consecutive numbers.
        let evs: Vec<AuditEvent> =
            (0..5).map(|_| AuditEvent { op: "batch", ..AuditEvent::default() }).collect();
        assert_eq!(log.append_all(&evs).unwrap(), 160);
        assert_eq!(log.append(&AuditEvent { op: "after", ..AuditEvent::default() }).unwrap(), 165);
        let cp = log.checkpoint().unwrap();
        assert_eq!(cp.size, 166);
        let lines = lines_json(&log.export_lines(0).unwrap()).unwrap();
        let rep = super::super::verify_export(&lines, &log.signer().unwrap().public_key());
        assert!(rep.ok(), "{rep:?}");
        assert_eq!(rep.records, 166);
        let c = Connection::open(log.path()).unwrap();
        assert!(c
            .execute("UPDATE audit_batches SET chains = x'' WHERE first_seq = 0", [])
            .is_err());
        assert!(c.execute("DELETE FROM audit_batches", []).is_err());
        assert!(c.execute("DELETE FROM checkpoints", []).is_err());
        // A proof from the log verifies, and names the right record.
        let p = log.prove(42).unwrap();
        super::super::verify_proof(&p, &log.signer().unwrap().public_key(), None::<&[String]>)
            .unwrap();
    }
}
