//! The audit log file: an SQLite database beside the store (`<store>-audit`, WAL mode), with
//! triggers that refuse every UPDATE and DELETE of a record or a checkpoint. It is a separate
//! file so that audit commits never invalidate the token's object cache or contend with
//! object writes.
//!
//! **Sequencing.** The opener holding the sequencer lease (files.rs) assigns sequence numbers
//! and chain values in memory ([`AuditLog::append_with`] returns the record's number); every
//! record is in its final place in the one chain before the call returns. Records wait in
//! memory until a writer stores them, in order, one transaction (one row) per batch. The lease
//! passes to another opener (process) only after everything sequenced under it is written, so
//! several processes keep one gapless chain.
//!
//! **Durability classes** ([`Durability`]). Commits do not sync (SQLite `synchronous=NORMAL`);
//! durability comes from an explicit `fdatasync` of the WAL file, which covers every frame
//! written before it by any process. A `Durable` append returns only once its record, and every
//! record sequenced before it, is synced (group commit: one writer stores all that is pending,
//! one sync covers all who wait). A `Bounded` append returns at once; the log's flusher thread
//! writes and syncs within the [`Window`] (default 10 ms or 4,096 records), and no bounded
//! caller ever waits for a disk sync (only for memory, past 4 windows' worth of pending records).
//!
//! **Crash evidence.** Every opener registers itself durably (an `audit-open` record and an
//! `audit_openers` row naming a random opener id, pid and host; its lock file stays locked
//! while it lives), and a clean close records `audit-close`. The next opener that finds a
//! registered opener whose lock the kernel has released appends `unclean-shutdown` naming the
//! last sequence number that opener stored.
//!
//! **Rollback.** After every sync the durable size goes to the out-of-store mark (files.rs);
//! every lease acquisition and every write compares the stored log with the largest size this
//! process has seen, the mark and the file's identity.
//!
//! Lock order: `writer` → `seq` → `counters`; `sync` is taken with none of them held.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::counter::{Counters, UseCounter, UseKey};
use super::export::{hash_of, i, scan, stored_size, u, ExportIter};
use super::files::{self, Locks};
use super::merkle::{self, Frontier};

mod lifecycle;
use super::{
    chain_next, genesis, now_ms, AuditEvent, AuditRecord, AuditSigner, Checkpoint, Durability,
    ExportLine, Hash,
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
CREATE TABLE IF NOT EXISTS audit_openers (
    id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
    open_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL);
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

/// The bounded durability window: a bounded-class record is written and synced at most
/// `max_delay` after it was sequenced, or as soon as `max_records` records are pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Longest time a record waits in memory.
    pub max_delay: Duration,
    /// Most records waiting in memory before a flush starts.
    pub max_records: usize,
}

impl Default for Window {
    fn default() -> Self {
        Self { max_delay: Duration::from_millis(10), max_records: 4096 }
    }
}

/// How often the lease holder looks for another opener waiting for the lease.
const LEASE_POLL: Duration = Duration::from_millis(1);

/// One store's audit log.
pub struct AuditLog {
    inner: Arc<Inner>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    log_id: [u8; 16],
    file_id: Option<(u64, u64)>,
    policy: CheckpointPolicy,
    window: Window,
    opener: String,
    pid: u32,
    host: String,
    locks: Locks,
    writer: Mutex<Writer>,
    seq: Mutex<Seq>,
    /// Wakes the flusher (records pending, stop) and appenders held back by a full buffer.
    cv: Condvar,
    /// One WAL sync at a time: a caller that finds its record synced meanwhile skips its own.
    sync: Mutex<()>,
    wal: OnceLock<std::fs::File>,
    /// Stored size after this log's last write / after its last sync.
    written: AtomicU64,
    durable: AtomicU64,
    marked: AtomicU64,
    /// The largest stored size this process has seen (rollback check).
    known: AtomicU64,
    /// Bumped whenever a write fails and sequenced records are lost.
    failures: AtomicU64,
    signer: RwLock<Option<Arc<AuditSigner>>>,
    counters: Counters,
    broken: Mutex<Option<&'static str>>,
    stop: AtomicBool,
}

struct Writer {
    conn: Connection,
    /// Merkle frontier of the stored records (valid while the lease is held).
    frontier: Frontier,
    /// Size and time of the last checkpoint.
    last_cp: (u64, u64),
}

enum OpenerOp {
    Insert { seq: u64 },
    Delete(String),
}

/// Sequenced records not yet written, and the head they lead to.
#[derive(Default)]
struct Seq {
    leased: bool,
    /// Next sequence number.
    size: u64,
    /// Chain value after record `size - 1`.
    chain: Hash,
    finalized: bool,
    first: u64,
    count: usize,
    records: Vec<u8>,
    chains: Vec<u8>,
    since: Option<Instant>,
    last_activity: Option<Instant>,
    ops: Vec<OpenerOp>,
    /// Records lost by a failed write, to be reported by the next record.
    lost: Option<(u64, u64, &'static str)>,
}

struct Batch {
    first: u64,
    count: usize,
    records: Vec<u8>,
    chains: Vec<u8>,
    ops: Vec<OpenerOp>,
}

impl Batch {
    fn canonicals(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.records.as_slice();
        std::iter::from_fn(move || {
            let (len, t) = rest.split_at_checked(4)?;
            let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
            let (c, t) = t.split_at_checked(len)?;
            rest = t;
            Some(c)
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seal {
    None,
    Checkpoint,
    Final,
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

fn last_checkpoint_at(c: &Connection) -> Result<(u64, u64)> {
    let r: Option<(i64, i64)> = c
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
    size: u64,
    chain: &Hash,
    root: &Hash,
    now: u64,
) -> Result<Checkpoint> {
    let cp = s.sign_checkpoint(log_id, size, chain, root, now);
    tx.prepare_cached(
        "INSERT INTO checkpoints (size, chain, root, time_ms, sig) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        i(size),
        chain.to_vec(),
        root.to_vec(),
        i(now),
        hex::decode(&cp.signature).unwrap_or_default()
    ])?;
    Ok(cp)
}

fn system_record(op: &str, client: String, result: &str, detail: String) -> AuditRecord {
    AuditRecord {
        seq: 0,
        time_ms: now_ms(),
        actor: "-".into(),
        role: "system".into(),
        client,
        session: 0,
        op: op.into(),
        mechanism: String::new(),
        object: String::new(),
        label: String::new(),
        result: result.into(),
        detail,
    }
}

impl AuditLog {
    /// Opens (creating when `create`) the log of the store at `store_path` with the default
    /// [`Window`], registers this opener and records unclean ends of earlier ones. Fails with
    /// an integrity error when the log is missing but should exist, belongs to another store,
    /// or is shorter than this host has seen (rollback).
    ///
    /// # Errors
    /// Integrity errors as above; store errors when the file cannot be opened or written.
    pub fn open(
        store_path: &Path,
        log_id: [u8; 16],
        create: bool,
        policy: CheckpointPolicy,
    ) -> Result<Self> {
        Self::open_with(store_path, log_id, create, policy, Window::default())
    }

    /// [`AuditLog::open`] with an explicit bounded-durability window.
    ///
    /// # Errors
    /// As [`AuditLog::open`].
    pub fn open_with(
        store_path: &Path,
        log_id: [u8; 16],
        create: bool,
        policy: CheckpointPolicy,
        window: Window,
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
        // Commits write the WAL without syncing it; durability is the explicit WAL sync of
        // the class that asks for it (see the module documentation).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
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
        // Read the mark before the size: marks are recorded after their sync, so another
        // process appending between the two reads can only make the size larger, never turn a
        // healthy log into an apparently rolled-back one.
        let mark = files::load_mark(&log_id);
        let size = stored_size(&conn)?;
        if size < mark {
            return Err(Error::Integrity("audit log rolled back (shorter than seen before)"));
        }
        let mut rid = [0u8; 16];
        crate::crypto::Provider::get()?.random(&mut rid)?;
        let opener = hex::encode(rid);
        let locks = Locks::open(files::lock_dir(&path, &log_id), &opener)?;
        let inner = Arc::new(Inner {
            file_id: files::file_id(&path),
            path,
            log_id,
            policy,
            window,
            opener,
            pid: std::process::id(),
            host: files::hostname(),
            locks,
            writer: Mutex::new(Writer { conn, frontier: Frontier::default(), last_cp: (0, 0) }),
            seq: Mutex::new(Seq::default()),
            cv: Condvar::new(),
            sync: Mutex::new(()),
            wal: OnceLock::new(),
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            marked: AtomicU64::new(mark),
            known: AtomicU64::new(size),
            failures: AtomicU64::new(0),
            signer: RwLock::new(None),
            counters: Counters::default(),
            broken: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        inner.register()?;
        let bg = inner.clone();
        let flusher = std::thread::Builder::new()
            .name("bulwark-audit".into())
            .spawn(move || bg.flusher())
            .map_err(|_| Error::Internal("cannot start the audit flusher"))?;
        Ok(Self { inner, flusher: Mutex::new(Some(flusher)) })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The log id (the store id).
    pub fn log_id(&self) -> [u8; 16] {
        self.inner.log_id
    }

    /// This opener's registration id (named in its `audit-open` / `audit-close` records).
    pub fn opener_id(&self) -> &str {
        &self.inner.opener
    }

    /// The bounded-durability window.
    pub fn window(&self) -> Window {
        self.inner.window
    }

    /// Installs (or removes) the signing key used for checkpoints.
    pub fn set_signer(&self, s: Option<Arc<AuditSigner>>) {
        *self.inner.signer.write().unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    }

    /// The signing key, when installed.
    pub fn signer(&self) -> Option<Arc<AuditSigner>> {
        self.inner.signer()
    }

    /// Number of records sequenced so far (stored or about to be).
    ///
    /// # Errors
    /// Store errors reading the file.
    pub fn size(&self) -> Result<u64> {
        {
            // Holding the lease, the head is this process's: no wait for a write in progress.
            let s = lock(&self.inner.seq);
            if s.leased {
                return Ok(s.size);
            }
        }
        let w = lock(&self.inner.writer);
        let s = lock(&self.inner.seq);
        if s.leased {
            return Ok(s.size);
        }
        drop(s);
        stored_size(&w.conn)
    }

    /// Appends one record durably: returns its sequence number once it, and every record
    /// sequenced before it, is on disk (group commit).
    ///
    /// # Errors
    /// Store errors (the record may not be durable: the caller must not report success);
    /// integrity errors when the log was rolled back or replaced; [`Error::Zeroized`] once the
    /// log was closed for good at zeroization.
    pub fn append(&self, ev: &AuditEvent) -> Result<u64> {
        self.append_all_with(std::slice::from_ref(ev), Durability::Durable)
    }

    /// Appends one record in the given durability class and returns its sequence number. A
    /// `Bounded` record is sequenced and chained when this returns, and durable within the
    /// window; the call never waits for a disk sync.
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub fn append_with(&self, ev: &AuditEvent, class: Durability) -> Result<u64> {
        self.append_all_with(std::slice::from_ref(ev), class)
    }

    /// Appends several records durably as one unit (consecutive sequence numbers, one
    /// commit) and returns the first one's sequence number: for a front door that serves a
    /// batch of requests at once.
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub fn append_all(&self, evs: &[AuditEvent]) -> Result<u64> {
        self.append_all_with(evs, Durability::Durable)
    }

    /// [`AuditLog::append_all`] in the given durability class.
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub fn append_all_with(&self, evs: &[AuditEvent], class: Durability) -> Result<u64> {
        if evs.is_empty() {
            return Err(Error::ArgumentsBad("no audit events"));
        }
        let now = now_ms();
        let recs: Vec<AuditRecord> =
            evs.iter().map(|ev| AuditRecord::from_event(0, now, ev)).collect();
        let (first, epoch) = self.inner.sequence(&recs, Vec::new())?;
        if class == Durability::Durable {
            self.inner.make_durable(first + evs.len() as u64, epoch)?;
        }
        Ok(first)
    }

    /// A counter of uses of one key by one principal for one operation and mechanism: the
    /// prepared key holds it and calls [`UseCounter::hit`] per use (one relaxed atomic add).
    /// The counts are written as aggregated `use-count` records at each flush (bounded
    /// class), and every checkpoint covers the counts made before it.
    pub fn use_counter(&self, key: UseKey) -> UseCounter {
        let c = self.inner.counters.register(key);
        self.inner.cv.notify_all(); // the flusher starts draining by the window
        c
    }

    /// `Ok` while records can still be added; the integrity error once this log was found
    /// broken (rolled back, cut, replaced). What a caller that only counts (no record of its
    /// own) checks, so that a broken log refuses counted uses like it refuses appends.
    ///
    /// # Errors
    /// [`Error::Integrity`] naming what broke.
    pub fn check_usable(&self) -> Result<()> {
        self.inner.check_broken()
    }

    /// Counts `n` uses of `key` without a pre-registered counter (a slot per call: for
    /// occasional uses; hot paths hold a [`UseCounter`]).
    pub fn count_use(&self, key: UseKey, n: u64) {
        self.use_counter(key).add(n);
    }

    /// Writes and syncs everything sequenced and counted so far (clean close, shutdown,
    /// before an export).
    ///
    /// # Errors
    /// Store or integrity errors from the write.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Signs a checkpoint over every record now in the log, after re-verifying the whole
    /// stored chain against the earlier checkpoints (a log that no longer verifies is never
    /// signed: that is an audit chain break, reported as an integrity error).
    ///
    /// # Errors
    /// [`Error::UserNotLoggedIn`] without a signer; integrity errors on a chain break.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        self.inner.seal(Seal::Checkpoint)?.ok_or(Error::UserNotLoggedIn)
    }

    /// Closes the log for good (zeroization): writes everything pending, signs a last
    /// checkpoint over it when a signer is installed, and marks the log final in the same
    /// transaction. Every later append, by any opener, fails with [`Error::Zeroized`], so the
    /// log's last checkpoint covers its last record and the export keeps verifying.
    ///
    /// # Errors
    /// As [`AuditLog::checkpoint`].
    pub fn finalize(&self) -> Result<Option<Checkpoint>> {
        self.inner.seal(Seal::Final)
    }

    /// A streaming export of every record from `since` with the checkpoints that follow
    /// them (no new checkpoint: see [`AuditLog::checkpoint`]), read from one snapshot in
    /// constant memory. Writes everything pending first, and checks the log for rollback.
    ///
    /// # Errors
    /// Integrity errors (rolled back or replaced log); [`Error::ArgumentsBad`] when `since`
    /// is past the end.
    pub fn export_iter(&self, since: u64) -> Result<ExportIter> {
        self.inner.flush_or_final()?;
        self.inner.check_rollback()?;
        ExportIter::open(&self.inner.path, self.inner.log_id, since)
    }

    /// [`AuditLog::export_iter`] collected (for small logs and tests).
    ///
    /// # Errors
    /// As [`AuditLog::export_iter`].
    pub fn export_lines(&self, since: u64) -> Result<Vec<ExportLine>> {
        self.export_iter(since)?.collect()
    }

    /// An inclusion proof of record `seq` in a fresh checkpoint.
    ///
    /// # Errors
    /// As [`AuditLog::checkpoint`]; [`Error::ArgumentsBad`] for a record not in the log.
    pub fn prove(&self, seq: u64) -> Result<Proof> {
        let cp = self.checkpoint()?;
        if seq >= cp.size {
            return Err(Error::ArgumentsBad("no audit record with that sequence number"));
        }
        let w = lock(&self.inner.writer);
        let mut leaves: Vec<Hash> = Vec::new();
        scan(&w.conn, 0, |r, canonical, _| {
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

impl Drop for AuditLog {
    /// A clean close: stops the flusher, writes what is pending and the counts, records
    /// `audit-close` durably and ends this opener's registration.
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.cv.notify_all();
        if let Some(h) = lock(&self.flusher).take() {
            let _ = h.join();
        }
        if let Err(e) = self.inner.close() {
            tracing::error!(error = %e, "audit log: clean close not recorded");
        }
    }
}

impl Inner {
    fn signer(&self) -> Option<Arc<AuditSigner>> {
        self.signer.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn client(&self) -> String {
        format!("pid={} host={}", self.pid, self.host)
    }

    fn check_broken(&self) -> Result<()> {
        match *lock(&self.broken) {
            Some(why) => Err(Error::Integrity(why)),
            None => Ok(()),
        }
    }

    fn latch(&self, e: &Error) {
        if let Error::Integrity(why) = e {
            lock(&self.broken).get_or_insert(why);
        }
    }

    /// The log file is still the one opened, and not shorter than this process or this host
    /// has seen it.
    fn check_file(&self, stored: u64) -> Result<()> {
        let r = if self.file_id.is_some() && files::file_id(&self.path) != self.file_id {
            Err(Error::Integrity("audit log file replaced under an open log"))
        } else if stored < self.known.load(Ordering::Acquire)
            || stored < files::peek_mark(&self.log_id)
        {
            Err(Error::Integrity("audit log rolled back (shorter than seen before)"))
        } else {
            self.known.fetch_max(stored, Ordering::AcqRel);
            Ok(())
        };
        r.inspect_err(|e| self.latch(e))
    }

    fn check_rollback(&self) -> Result<()> {
        self.check_broken()?;
        let stored = stored_size(&lock(&self.writer).conn)?;
        self.check_file(stored)
    }

    /// Takes the lease and loads the stored head, unless this log holds it already.
    fn acquire(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        if lock(&self.seq).leased {
            return Ok(());
        }
        self.check_broken()?;
        self.locks.acquire_lease()?;
        let loaded = (|| {
            let head = read_head(&w.conn, &self.log_id)?;
            self.check_file(head.frontier.size())?;
            let finalized: Option<i64> = w
                .conn
                .query_row("SELECT 1 FROM audit_meta WHERE k = 'final'", [], |r| r.get(0))
                .optional()?;
            Ok::<_, Error>((head, finalized.is_some(), last_checkpoint_at(&w.conn)?))
        })();
        let (head, finalized, last_cp) = match loaded {
            Ok(v) => v,
            Err(e) => {
                self.locks.release_lease();
                self.latch(&e);
                return Err(e);
            }
        };
        let mut s = lock(&self.seq);
        s.leased = true;
        s.size = head.frontier.size();
        s.chain = head.chain;
        s.finalized = finalized;
        s.first = s.size;
        w.frontier = head.frontier;
        w.last_cp = last_cp;
        drop(s);
        // The flusher polls while the lease is held: it hands the lease over when someone
        // waits, and gives it up after a quiet window (even if nothing is ever appended).
        self.cv.notify_all();
        Ok(())
    }

    /// Assigns sequence numbers and chain values to `recs` (in memory, under the lease) and
    /// queues them with `ops`; returns the first number and the failure epoch.
    fn sequence(&self, recs: &[AuditRecord], ops: Vec<OpenerOp>) -> Result<(u64, u64)> {
        self.sequence_with(recs, ops, true)
    }

    /// [`Inner::sequence`]; `hold_back`: wait while the disk does not keep up. The flusher's
    /// own drain of the use counters never waits (it is what makes room: waiting there would
    /// stop the log for good).
    fn sequence_with(
        &self,
        recs: &[AuditRecord],
        ops: Vec<OpenerOp>,
        hold_back: bool,
    ) -> Result<(u64, u64)> {
        let hard_cap =
            if hold_back { self.window.max_records.saturating_mul(4).max(1) } else { usize::MAX };
        // Encoded before the lock; only the number and the chain value are computed under it.
        let mut encoded: Vec<Vec<u8>> = recs.iter().map(AuditRecord::canonical).collect();
        loop {
            self.check_broken()?;
            let mut s = lock(&self.seq);
            while s.leased && s.count >= hard_cap && !self.stop.load(Ordering::Acquire) {
                // The disk does not keep up: hold appenders back rather than grow memory.
                s = self.cv.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if !s.leased {
                drop(s);
                self.acquire()?;
                continue;
            }
            if s.finalized {
                return Err(Error::Zeroized);
            }
            let was_empty = s.count == 0;
            if let Some((from, to, why)) = s.lost.take() {
                let detail = format!("records {from}..{to} were sequenced but not written ({why})");
                push_record(&mut s, &system_record("records-lost", self.client(), "lost", detail));
            }
            let first = s.size;
            for c in &mut encoded {
                push_canonical(&mut s, c);
            }
            s.ops.extend(ops);
            let now = Instant::now();
            if was_empty {
                s.since = Some(now);
            }
            s.last_activity = Some(now);
            let epoch = self.failures.load(Ordering::Acquire);
            let wake = was_empty || s.count >= self.window.max_records;
            drop(s);
            if wake {
                self.cv.notify_all();
            }
            return Ok((first, epoch));
        }
    }

    /// Writes everything pending (the caller holds `writer`); gives the lease up afterwards
    /// when `release`. Returns the checkpoint signed, if any.
    fn write_pending(
        &self,
        w: &mut Writer,
        release: bool,
        seal: Seal,
    ) -> Result<Option<Checkpoint>> {
        let (batch, chain) = {
            let mut s = lock(&self.seq);
            if !s.leased {
                return Ok(None);
            }
            let batch = Batch {
                first: s.first,
                count: std::mem::take(&mut s.count),
                records: std::mem::take(&mut s.records),
                chains: std::mem::take(&mut s.chains),
                ops: std::mem::take(&mut s.ops),
            };
            s.first = s.size;
            s.since = None;
            if release {
                s.leased = false;
            }
            (batch, s.chain)
        };
        self.cv.notify_all(); // appenders held back by a full buffer
        if batch.count == 0 && batch.ops.is_empty() && seal == Seal::None {
            if release {
                self.locks.release_lease();
            }
            return Ok(None);
        }
        match self.write_batch(w, &batch, &chain, seal) {
            Ok(cp) => {
                if release {
                    self.locks.release_lease();
                }
                Ok(cp)
            }
            Err(e) => {
                let why = super::error_code(&e);
                tracing::error!(error = %e, "audit records not written");
                let mut s = lock(&self.seq);
                let to = if s.leased { s.size } else { batch.first + batch.count as u64 };
                *s = Seq { lost: Some((batch.first, to, why)), ..Seq::default() };
                self.failures.fetch_add(1, Ordering::AcqRel);
                drop(s);
                self.locks.release_lease();
                self.latch(&e);
                Err(e)
            }
        }
    }

    fn write_batch(
        &self,
        w: &mut Writer,
        b: &Batch,
        chain: &Hash,
        seal: Seal,
    ) -> Result<Option<Checkpoint>> {
        let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored = stored_size(&tx)?;
        if stored != w.frontier.size() || stored != b.first {
            return Err(Error::Integrity("audit log changed under an open log (rolled back?)"));
        }
        self.check_file(stored)?;
        let mut frontier = w.frontier.clone();
        let mut last_cp = w.last_cp;
        if b.count > 0 {
            for c in b.canonicals() {
                frontier.push(merkle::leaf_hash(c));
            }
            if frontier.size() != b.first + b.count as u64 {
                return Err(Error::Internal("audit batch malformed"));
            }
            tx.prepare_cached(
                "INSERT INTO audit_batches (first_seq, count, records, chains)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![i(b.first), i(b.count as u64), b.records, b.chains])?;
            tx.prepare_cached("INSERT OR REPLACE INTO audit_meta (k, v) VALUES ('frontier', ?1)")?
                .execute([frontier.encode()])?;
            tx.prepare_cached("UPDATE audit_openers SET last_seq = ?1 WHERE id = ?2")?
                .execute(params![i(frontier.size() - 1), self.opener])?;
        }
        for op in &b.ops {
            match op {
                OpenerOp::Insert { seq } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO audit_openers (id, pid, host, open_seq, last_seq)
                         VALUES (?1, ?2, ?3, ?4, ?4)",
                        params![self.opener, self.pid, self.host, i(*seq)],
                    )?;
                }
                OpenerOp::Delete(id) => {
                    tx.execute("DELETE FROM audit_openers WHERE id = ?1", [id])?;
                }
            }
        }
        let size = frontier.size();
        let mut signed = None;
        if let Some(s) = self.signer() {
            let now = now_ms();
            let p = self.policy;
            let by_count = p.every_records > 0 && size - last_cp.0 >= p.every_records;
            let by_time =
                p.every_ms > 0 && size > last_cp.0 && now.saturating_sub(last_cp.1) >= p.every_ms;
            if seal != Seal::None || (b.count > 0 && (by_count || by_time)) {
                let root = frontier.root();
                signed = Some(insert_checkpoint(&tx, &s, &self.log_id, size, chain, &root, now)?);
                last_cp = (size, now);
            }
        }
        if seal == Seal::Final {
            tx.execute(
                "INSERT OR REPLACE INTO audit_meta (k, v) VALUES ('final', ?1)",
                [size.to_string().into_bytes()],
            )?;
            tx.execute("DELETE FROM audit_openers", [])?;
        }
        tx.commit()?;
        w.frontier = frontier;
        w.last_cp = last_cp;
        self.written.store(size, Ordering::Release);
        self.known.fetch_max(size, Ordering::AcqRel);
        if self.wal.get().is_none() {
            let mut p = self.path.as_os_str().to_owned();
            p.push("-wal");
            let f = std::fs::File::open(PathBuf::from(p)).map_err(|e| {
                Error::Store(format!("audit log: cannot open its WAL: {}", e.kind()))
            })?;
            let _ = self.wal.set(f);
        }
        if seal == Seal::Final {
            lock(&self.seq).finalized = true;
        }
        Ok(signed)
    }

    /// Syncs the WAL so that every record this log has written is durable (group sync).
    fn sync(&self, end: u64) -> Result<()> {
        if self.durable.load(Ordering::Acquire) >= end {
            return Ok(());
        }
        let _g = lock(&self.sync);
        if self.durable.load(Ordering::Acquire) >= end {
            return Ok(());
        }
        let target = self.written.load(Ordering::Acquire);
        if let Some(wal) = self.wal.get() {
            wal.sync_data()
                .map_err(|e| Error::Store(format!("audit log: sync failed: {}", e.kind())))?;
        }
        self.durable.fetch_max(target, Ordering::AcqRel);
        if self.marked.fetch_max(target, Ordering::AcqRel) < target {
            files::record_mark(&self.log_id, target);
        }
        Ok(())
    }

    /// Returns once records `..end` (sequenced in failure epoch `epoch`) are durable.
    fn make_durable(&self, end: u64, epoch: u64) -> Result<()> {
        if self.written.load(Ordering::Acquire) < end {
            let mut w = lock(&self.writer);
            if self.written.load(Ordering::Acquire) < end
                && self.failures.load(Ordering::Acquire) == epoch
            {
                self.write_pending(&mut w, false, Seal::None)?;
            }
        }
        if self.failures.load(Ordering::Acquire) != epoch
            || self.written.load(Ordering::Acquire) < end
        {
            return Err(Error::Store("audit record not written".into()));
        }
        self.sync(end)
    }

    /// Drains the use counters into the sequence (bounded class).
    fn drain_counts(&self) -> Result<()> {
        let recs = self.counters.drain();
        if !recs.is_empty() {
            self.sequence_with(&recs, Vec::new(), false)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.drain_counts()?;
        let written = {
            let mut w = lock(&self.writer);
            self.write_pending(&mut w, false, Seal::None)?;
            self.written.load(Ordering::Acquire)
        };
        self.sync(written)
    }

    /// [`Inner::flush`], tolerating a finalized log (nothing can be pending in it).
    fn flush_or_final(&self) -> Result<()> {
        match self.flush() {
            Err(Error::Zeroized) => Ok(()),
            r => r,
        }
    }
}

/// Sequences one record onto the head (the caller holds `seq` and the lease).
fn push_record(s: &mut Seq, r: &AuditRecord) {
    push_canonical(s, &mut r.canonical());
}

/// [`push_record`] for a record already encoded: writes its number in place.
fn push_canonical(s: &mut Seq, canonical: &mut [u8]) {
    let at = AuditRecord::SEQ_OFFSET;
    canonical[at..at + 8].copy_from_slice(&s.size.to_be_bytes());
    let canonical = &*canonical;
    s.chain = chain_next(&s.chain, canonical);
    let len = u32::try_from(canonical.len()).unwrap_or(u32::MAX);
    s.records.extend_from_slice(&len.to_be_bytes());
    s.records.extend_from_slice(canonical);
    s.chains.extend_from_slice(&s.chain);
    s.size += 1;
    s.count += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(dir: &Path) -> AuditLog {
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).unwrap(); // a fresh log id: no high-water mark yet
        AuditLog::open(&dir.join("s.db"), id, true, CheckpointPolicy::default()).unwrap()
    }

    fn ev(op: &'static str) -> AuditEvent {
        AuditEvent { op, ..AuditEvent::default() }
    }

    #[test]
    fn concurrent_appends_are_gapless_and_the_table_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(fresh(dir.path()));
        let (s, _) = AuditSigner::generate().unwrap();
        log.set_signer(Some(Arc::new(s)));
        let base = log.size().unwrap(); // the opener's own record
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let class = if t % 2 == 0 { Durability::Durable } else { Durability::Bounded };
                    (0..20)
                        .map(|_| log.append_with(&ev("sign"), class).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (base..base + 160).collect::<Vec<_>>());
        // A batch of events takes consecutive numbers.
        let evs: Vec<AuditEvent> = (0..5).map(|_| ev("batch")).collect();
        assert_eq!(log.append_all(&evs).unwrap(), base + 160);
        assert_eq!(log.append(&ev("after")).unwrap(), base + 165);
        let cp = log.checkpoint().unwrap();
        assert_eq!(cp.size, base + 166);
        let lines = super::super::lines_to_json(&log.export_lines(0).unwrap()).unwrap();
        let rep = super::super::verify_export(&lines, &log.signer().unwrap().public_key());
        assert!(rep.ok(), "{rep:?}");
        assert_eq!(rep.records, base + 166);
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

    #[test]
    fn bounded_records_become_durable_within_the_window_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let log = fresh(dir.path());
        let seq = log.append_with(&ev("sign"), Durability::Bounded).unwrap();
        let stored = || stored_size(&Connection::open(log.path()).unwrap()).unwrap();
        let start = Instant::now();
        while stored() <= seq {
            assert!(start.elapsed() < Duration::from_secs(10), "never flushed");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            log.inner.durable.load(Ordering::Acquire) > seq || {
                std::thread::sleep(Duration::from_millis(50));
                log.inner.durable.load(Ordering::Acquire) > seq
            }
        );
    }

    #[test]
    fn a_durable_append_returns_only_once_synced_with_everything_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = fresh(dir.path());
        let b = log.append_with(&ev("sign"), Durability::Bounded).unwrap();
        let d = log.append(&ev("login")).unwrap();
        assert!(d > b);
        // `durable` advances only after the WAL sync that covered the record returned.
        assert!(log.inner.durable.load(Ordering::Acquire) > d);
        let stored = stored_size(&Connection::open(log.path()).unwrap()).unwrap();
        assert!(stored > d, "the bounded record sequenced before it is stored too");
    }

    #[test]
    fn a_log_replaced_by_an_older_copy_is_refused_by_the_process_that_has_it_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = fresh(dir.path());
        log.append(&ev("one")).unwrap();
        log.flush().unwrap();
        let old = dir.path().join("old-copy");
        std::fs::copy(log.path(), &old).unwrap();
        let mut wal = log.path().as_os_str().to_owned();
        wal.push("-wal");
        let _ = std::fs::copy(PathBuf::from(&wal), dir.path().join("old-copy-wal"));
        for _ in 0..3 {
            log.append(&ev("two")).unwrap();
        }
        // The attacker puts the old copy back (a new file in its place).
        std::fs::rename(&old, log.path()).unwrap();
        assert!(matches!(log.append(&ev("three")), Err(Error::Integrity(_))));
        assert!(matches!(log.export_iter(0), Err(Error::Integrity(_))));
        // Latched: the log stays refused.
        assert!(matches!(
            log.append_with(&ev("four"), Durability::Bounded),
            Err(Error::Integrity(_))
        ));
    }

    #[test]
    fn a_log_shortened_in_place_is_refused_at_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let log = fresh(dir.path());
        log.append(&ev("one")).unwrap();
        // Another writer (an attacker with the file) drops the records' table content by
        // recreating it: the stored size falls below what this process has seen.
        let c = Connection::open(log.path()).unwrap();
        c.execute_batch(
            "DROP TRIGGER audit_append_only_d; DELETE FROM audit_batches WHERE first_seq > 0;",
        )
        .unwrap();
        drop(c);
        let r = log.append(&ev("two"));
        assert!(matches!(r, Err(Error::Integrity(_))), "{r:?}");
    }

    #[test]
    fn two_opens_keep_one_chain_and_close_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).unwrap();
        let store = dir.path().join("s.db");
        let a = AuditLog::open(&store, id, true, CheckpointPolicy::default()).unwrap();
        let b = AuditLog::open(&store, id, false, CheckpointPolicy::default()).unwrap();
        for n in 0..50 {
            let l = if n % 3 == 0 { &a } else { &b };
            l.append_with(&ev("sign"), Durability::Bounded).unwrap();
        }
        a.append(&ev("admin")).unwrap();
        drop((a, b));
        let c = AuditLog::open(&store, id, false, CheckpointPolicy::default()).unwrap();
        let recs: Vec<AuditRecord> = c
            .export_lines(0)
            .unwrap()
            .into_iter()
            .filter_map(|l| match l {
                ExportLine::Record { record, .. } => Some(record),
                _ => None,
            })
            .collect();
        assert!(recs.iter().enumerate().all(|(i, r)| r.seq == i as u64));
        assert_eq!(recs.iter().filter(|r| r.op == "sign").count(), 50);
        assert_eq!(recs.iter().filter(|r| r.op == "audit-open").count(), 3);
        assert_eq!(recs.iter().filter(|r| r.op == "audit-close").count(), 2);
        assert!(!recs.iter().any(|r| r.op == "unclean-shutdown"), "{recs:#?}");
    }
}
