//! SQLite store (rusqlite, bundled SQLite) in WAL mode.
//!
//! Several processes may open one store file: WAL lets readers run beside one writer, a busy
//! timeout makes writers queue, and `PRAGMA data_version` tells a connection that another one
//! committed. Every authenticated write runs in one `BEGIN IMMEDIATE` transaction
//! ([`Store::write`]) together with the new sealed state, so a killed process leaves either the
//! old or the new state, never a mix. The schema is versioned with `PRAGMA user_version` and
//! migrated forward on open; versions older than the authenticated set are refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::{HeaderNote, KeyslotRow, ObjectRow, RecordRow, ScanRow, Store, StoreHeader, StoreTx};
use crate::error::{Error, Result};

/// Forward migrations; index + 1 is the schema version they produce. Versions 1 and 2 (before
/// the authenticated set) are not migrated: their rows carry no set commitment, and a missing
/// MAC is never taken for an old format (see [`SqliteStore::open`]).
const MIGRATIONS: &[&str] = &[
    "", // v1: retired
    "", // v2: retired
    // v3: every authenticated row (keyslots, objects, records) in the sealed set commitment.
    "CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
     CREATE TABLE keyslots (
        user_type INTEGER PRIMARY KEY,
        salt BLOB NOT NULL, m_cost INTEGER NOT NULL, t_cost INTEGER NOT NULL,
        p_cost INTEGER NOT NULL, wrapped_mk BLOB NOT NULL, mac BLOB NOT NULL);
     CREATE TABLE attempts (who TEXT PRIMARY KEY, n INTEGER NOT NULL);
     CREATE TABLE objects (
        handle INTEGER PRIMARY KEY AUTOINCREMENT,
        uid BLOB NOT NULL UNIQUE,
        class INTEGER NOT NULL,
        label BLOB NOT NULL,
        ckaid BLOB NOT NULL,
        private INTEGER NOT NULL,
        attrs BLOB NOT NULL,
        secret BLOB,
        mac BLOB NOT NULL);
     CREATE INDEX objects_label ON objects(label);
     CREATE INDEX objects_ckaid ON objects(ckaid);
     CREATE INDEX objects_class ON objects(class);
     CREATE TABLE records (
        kind TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, mac BLOB NOT NULL,
        PRIMARY KEY (kind, key)) WITHOUT ROWID;
     -- The object count, kept by triggers in the writing transaction, so that C_GetTokenInfo
     -- does not scan a million objects. Informational: the authenticated count is sealed in
     -- the store state.
     CREATE TABLE object_count (n INTEGER NOT NULL);
     INSERT INTO object_count (n) VALUES (0);
     CREATE TRIGGER object_count_insert AFTER INSERT ON objects
        BEGIN UPDATE object_count SET n = n + 1; END;
     CREATE TRIGGER object_count_delete AFTER DELETE ON objects
        BEGIN UPDATE object_count SET n = n - 1; END;",
];

/// The oldest schema version this build opens.
const OLDEST_SCHEMA: i64 = 3;

/// The schema version this build writes.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A token store in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    shm: std::sync::OnceLock<Option<std::fs::File>>,
    conn: Mutex<Connection>,
    /// A second connection for reads (opened on first use): in WAL mode it reads the last
    /// commit while `conn` is inside a write and its sync, so no lookup waits on the disk.
    reader: Mutex<Option<Connection>>,
    /// Fingerprint of the WAL-index header when `data_version` was last read.
    wal_seen: AtomicU64,
    /// `PRAGMA data_version` as last read.
    data_version: AtomicU64,
}

/// A cheap fingerprint of the store's WAL index: the first copy of the WAL-index header in the
/// `-shm` file (SQLite file format, "WAL-Index Format": version, change counter `iChange`,
/// `mxFrame`, salts, checksums). Every write transaction by any process changes it. One `pread`
/// instead of a read transaction. `None` when it cannot be read (then SQLite is asked).
fn wal_fingerprint(shm: Option<&std::fs::File>) -> Option<u64> {
    let f = shm?;
    let mut hdr = [0u8; 48];
    #[cfg(unix)]
    std::os::unix::fs::FileExt::read_exact_at(f, &mut hdr, 0).ok()?;
    #[cfg(not(unix))]
    return None;
    Some(fold_header(&hdr))
}

/// Folds the 48 header bytes into 64 bits: each word goes through a bijective mixer (the
/// MurmurHash3 64-bit finalizer) chained with the previous state, so two headers collide only
/// by chance (about 2^-64), like the SipHash it replaces at a fraction of the cost (this runs on
/// every operation). The header is not secret and the fingerprint is not a defence against
/// whoever can write the store (they can change anything); it only has to notice commits.
fn fold_header(hdr: &[u8; 48]) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    for w in hdr.chunks_exact(8) {
        let mut x = h ^ u64::from_le_bytes(w.try_into().unwrap_or_default());
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        h = x.rotate_left(17) ^ h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    // 0 is reserved for "unknown".
    h | 1
}

/// Opens the `-shm` file for the change check. `O_NOATIME` where the kernel lets us (we own the
/// file): otherwise every check's `pread` also updates, or at least evaluates, the access time.
fn open_shm(p: &Path) -> Option<std::fs::File> {
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NOATIME: i32 = 0o1_000_000;
        if let Ok(f) = std::fs::OpenOptions::new().read(true).custom_flags(O_NOATIME).open(p) {
            return Some(f);
        }
    }
    std::fs::File::open(p).ok()
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit that returned is on disk (an acknowledged key is never lost).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if v > SCHEMA_VERSION || (v > 0 && v < OLDEST_SCHEMA) {
        return Err(Error::SchemaUnsupported(v));
    }
    if v == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read inside the write lock: another process may have migrated meanwhile.
    let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if v > 0 && v < OLDEST_SCHEMA {
        return Err(Error::SchemaUnsupported(v));
    }
    let from = if v == 0 { OLDEST_SCHEMA - 1 } else { v };
    for (i, m) in MIGRATIONS.iter().enumerate().skip(usize::try_from(from).unwrap_or(0)) {
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX))?;
    }
    tx.commit()?;
    Ok(())
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Internal("value out of range for the store"))
}

fn row_to_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectRow> {
    let uid: Vec<u8> = r.get(1)?;
    Ok(ObjectRow {
        handle: u64_of(r.get(0)?),
        // A uid of the wrong length cannot authenticate; all-zero makes the MAC check fail.
        uid: uid.as_slice().try_into().unwrap_or([0; 16]),
        class: u64_of(r.get(2)?),
        label: r.get(3)?,
        ckaid: r.get(4)?,
        private: r.get::<_, i64>(5)? != 0,
        attrs: r.get(6)?,
        secret: r.get(7)?,
        mac: r.get(8)?,
    })
}

fn row_to_keyslot(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyslotRow> {
    Ok(KeyslotRow {
        user_type: r.get(0)?,
        salt: r.get(1)?,
        m_cost: r.get(2)?,
        t_cost: r.get(3)?,
        p_cost: r.get(4)?,
        wrapped_mk: r.get(5)?,
        mac: r.get(6)?,
    })
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordRow> {
    Ok(RecordRow { kind: r.get(0)?, key: r.get(1)?, value: r.get(2)?, mac: r.get(3)? })
}

const OBJ_COLS: &str = "handle, uid, class, label, ckaid, private, attrs, secret, mac";
const SLOT_COLS: &str = "user_type, salt, m_cost, t_cost, p_cost, wrapped_mk, mac";
const REC_COLS: &str = "kind, key, value, mac";

/// The smallest byte string greater than every string starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn query_records(c: &Connection, kind: &str, prefix: &[u8]) -> Result<Vec<RecordRow>> {
    let rows = if let Some(end) = prefix_end(prefix) {
        let mut st = c.prepare_cached(&format!(
            "SELECT {REC_COLS} FROM records WHERE kind = ?1 AND key >= ?2 AND key < ?3 \
             ORDER BY key"
        ))?;
        let r = st.query_map(params![kind, prefix, end], row_to_record)?;
        r.collect::<rusqlite::Result<Vec<_>>>()?
    } else {
        let mut st = c.prepare_cached(&format!(
            "SELECT {REC_COLS} FROM records WHERE kind = ?1 AND key >= ?2 ORDER BY key"
        ))?;
        let r = st.query_map(params![kind, prefix], row_to_record)?;
        r.collect::<rusqlite::Result<Vec<_>>>()?
    };
    Ok(rows)
}

fn query_record(c: &Connection, kind: &str, key: &[u8]) -> Result<Option<RecordRow>> {
    let mut st =
        c.prepare_cached(&format!("SELECT {REC_COLS} FROM records WHERE kind = ?1 AND key = ?2"))?;
    Ok(st.query_row(params![kind, key], row_to_record).optional()?)
}

fn query_object(c: &Connection, handle: u64) -> Result<Option<ObjectRow>> {
    let mut st = c.prepare_cached(&format!("SELECT {OBJ_COLS} FROM objects WHERE handle = ?1"))?;
    Ok(st.query_row([i64_of(handle)?], row_to_object).optional()?)
}

fn query_keyslot(c: &Connection, user_type: u8) -> Result<Option<KeyslotRow>> {
    let mut st =
        c.prepare_cached(&format!("SELECT {SLOT_COLS} FROM keyslots WHERE user_type = ?1"))?;
    Ok(st.query_row([user_type], row_to_keyslot).optional()?)
}

fn get_meta(c: &Connection, k: &str) -> Result<Vec<u8>> {
    c.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
        .optional()?
        .ok_or(Error::Integrity("store metadata missing"))
}

fn read_header(c: &Connection) -> Result<StoreHeader> {
    let uid = get_meta(c, "store_uid")?;
    let gen = get_meta(c, "generation")?;
    let note = |k: &str| -> Result<Option<Vec<u8>>> {
        Ok(c.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0)).optional()?)
    };
    let alarm = note(HeaderNote::Alarm.name())?;
    let audit_pub = note(HeaderNote::AuditPub.name())?;
    Ok(StoreHeader {
        store_uid: uid.try_into().map_err(|_| Error::Integrity("store id malformed"))?,
        policy: String::from_utf8_lossy(&get_meta(c, "policy")?).into_owned(),
        generation: u64::from_be_bytes(
            gen.try_into().map_err(|_| Error::Integrity("generation malformed"))?,
        ),
        state: get_meta(c, "state")?,
        zeroized: get_meta(c, "zeroized")?.first().copied().unwrap_or(0) != 0,
        alarm: alarm.map(|a| String::from_utf8_lossy(&a).into_owned()),
        audit_pub,
    })
}

fn put_keyslot(c: &Connection, ks: &KeyslotRow) -> Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO keyslots (user_type, salt, m_cost, t_cost, p_cost, wrapped_mk, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        ks.user_type,
        ks.salt,
        ks.m_cost,
        ks.t_cost,
        ks.p_cost,
        ks.wrapped_mk,
        ks.mac
    ])?;
    Ok(())
}

impl SqliteStore {
    /// Creates a new, empty store file (mode 0600) with its header; the kernel then writes the
    /// first keyslots, records and sealed state with [`Store::write`]. Fails with
    /// `AlreadyInitialized` if the file exists and holds a store.
    pub fn create(path: &Path, store_uid: [u8; 16], policy: &str) -> Result<Self> {
        crate::fsutil::check_store_path(path)?;
        if path.exists() && std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return Err(Error::AlreadyInitialized(path.display().to_string()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                return Err(Error::Store(format!("directory {} does not exist", dir.display())));
            }
        }
        create_private_file(path)?;
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n: i64 = tx.query_row("SELECT count(*) FROM meta", [], |r| r.get(0))?;
        if n > 0 {
            return Err(Error::AlreadyInitialized(path.display().to_string()));
        }
        {
            let mut ins = tx.prepare("INSERT INTO meta (k, v) VALUES (?1, ?2)")?;
            ins.execute(params!["store_uid", store_uid.to_vec()])?;
            ins.execute(params!["policy", policy.as_bytes()])?;
            ins.execute(params!["generation", 0u64.to_be_bytes().to_vec()])?;
            ins.execute(params!["state", Vec::<u8>::new()])?;
            ins.execute(params!["zeroized", vec![0u8]])?;
        }
        tx.commit()?;
        Ok(Self::wrap(path, conn))
    }

    /// Opens an existing store, migrating its schema forward if needed.
    pub fn open(path: &Path) -> Result<Self> {
        crate::fsutil::check_store_path(path)?;
        if !path.exists() {
            return Err(Error::NotInitialized(path.display().to_string()));
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        let is_db: rusqlite::Result<i64> =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
        if is_db.is_err() {
            return Err(Error::Integrity("the store file is not a Bulwark store"));
        }
        migrate(&mut conn)?;
        let n: i64 = conn.query_row("SELECT count(*) FROM meta", [], |r| r.get(0))?;
        if n == 0 {
            return Err(Error::NotInitialized(path.display().to_string()));
        }
        Ok(Self::wrap(path, conn))
    }

    fn wrap(path: &Path, conn: Connection) -> Self {
        Self {
            path: path.to_owned(),
            shm: std::sync::OnceLock::new(),
            conn: Mutex::new(conn),
            reader: Mutex::new(None),
            wal_seen: AtomicU64::new(0),
            data_version: AtomicU64::new(0),
        }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut c = self.conn.lock().map_err(|_| Error::Internal("store lock poisoned"))?;
        f(&mut c)
    }

    /// Runs a read on the reader connection. Each statement (or `f`'s own transaction) sees
    /// the last commit of any connection, this process's writer included.
    fn reading<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut r = self.reader.lock().map_err(|_| Error::Internal("store lock poisoned"))?;
        let c = match &mut *r {
            Some(c) => c,
            none => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(Duration::from_secs(10))?;
                c.pragma_update(None, "query_only", "ON")?;
                none.insert(c)
            }
        };
        f(c)
    }
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(|_| ())
        .map_err(|e| Error::Store(format!("cannot create {}: {}", path.display(), e.kind())))
}

#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> Result<()> {
    Ok(())
}

/// One write transaction as [`StoreTx`].
struct SqliteTx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

impl StoreTx for SqliteTx<'_> {
    fn header(&mut self) -> Result<StoreHeader> {
        read_header(self.tx)
    }

    fn set_state(&mut self, generation: u64, state: &[u8]) -> Result<()> {
        let mut st = self.tx.prepare_cached("UPDATE meta SET v = ?2 WHERE k = ?1")?;
        st.execute(params!["generation", generation.to_be_bytes().to_vec()])?;
        st.execute(params!["state", state])?;
        Ok(())
    }

    fn keyslot(&mut self, user_type: u8) -> Result<Option<KeyslotRow>> {
        query_keyslot(self.tx, user_type)
    }

    fn put_keyslot(&mut self, row: &KeyslotRow) -> Result<()> {
        put_keyslot(self.tx, row)
    }

    fn object(&mut self, handle: u64) -> Result<Option<ObjectRow>> {
        query_object(self.tx, handle)
    }

    fn insert_object(&mut self, row: &ObjectRow) -> Result<u64> {
        self.tx
            .prepare_cached(
                "INSERT INTO objects (uid, class, label, ckaid, private, attrs, secret, mac)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, x'')",
            )?
            .execute(params![
                row.uid.to_vec(),
                i64_of(row.class)?,
                row.label,
                row.ckaid,
                i64::from(row.private),
                row.attrs,
                row.secret
            ])?;
        Ok(u64_of(self.tx.last_insert_rowid()))
    }

    fn set_object_mac(&mut self, handle: u64, mac: &[u8]) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE objects SET mac = ?1 WHERE handle = ?2")?
            .execute(params![mac, i64_of(handle)?])?;
        Ok(())
    }

    fn update_object(&mut self, row: &ObjectRow) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE objects SET class = ?1, label = ?2, ckaid = ?3, private = ?4, attrs = ?5,
                 secret = ?6, mac = ?7 WHERE handle = ?8 AND uid = ?9",
            )?
            .execute(params![
                i64_of(row.class)?,
                row.label,
                row.ckaid,
                i64::from(row.private),
                row.attrs,
                row.secret,
                row.mac,
                i64_of(row.handle)?,
                row.uid.to_vec()
            ])?;
        Ok(n == 1)
    }

    fn delete_object(&mut self, handle: u64) -> Result<Option<ObjectRow>> {
        let old = query_object(self.tx, handle)?;
        if old.is_some() {
            self.tx
                .prepare_cached("DELETE FROM objects WHERE handle = ?1")?
                .execute([i64_of(handle)?])?;
        }
        Ok(old)
    }

    fn record(&mut self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>> {
        query_record(self.tx, kind, key)
    }

    fn records(&mut self, kind: &str, prefix: &[u8]) -> Result<Vec<RecordRow>> {
        query_records(self.tx, kind, prefix)
    }

    fn put_record(&mut self, row: &RecordRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO records (kind, key, value, mac) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![row.kind, row.key, row.value, row.mac])?;
        Ok(())
    }

    fn delete_record(&mut self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>> {
        let old = query_record(self.tx, kind, key)?;
        if old.is_some() {
            self.tx
                .prepare_cached("DELETE FROM records WHERE kind = ?1 AND key = ?2")?
                .execute(params![kind, key])?;
        }
        Ok(old)
    }
}

impl Store for SqliteStore {
    fn header(&self) -> Result<StoreHeader> {
        self.reading(|c| {
            let tx = c.transaction()?; // one consistent snapshot
            read_header(&tx)
        })
    }

    fn keyslot(&self, user_type: u8) -> Result<Option<KeyslotRow>> {
        self.reading(|c| query_keyslot(c, user_type))
    }

    fn object(&self, handle: u64) -> Result<Option<ObjectRow>> {
        self.reading(|c| query_object(c, handle))
    }

    fn find(
        &self,
        class: Option<u64>,
        label: Option<&[u8]>,
        ckaid: Option<&[u8]>,
    ) -> Result<Vec<ObjectRow>> {
        self.reading(|c| {
            let class = class.map(i64_of).transpose()?;
            // Only the given conditions go into the WHERE clause: `(?1 IS NULL OR label = ?1)`
            // defeats SQLite's index use and made every lookup a full scan (28 ms at 100 k
            // objects instead of microseconds).
            let mut conds: Vec<&str> = Vec::new();
            let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
            if let Some(v) = &class {
                conds.push("class = ?");
                args.push(v);
            }
            if let Some(v) = &label {
                conds.push("label = ?");
                args.push(v);
            }
            if let Some(v) = &ckaid {
                conds.push("ckaid = ?");
                args.push(v);
            }
            let filter = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let mut st = c.prepare_cached(&format!(
                "SELECT {OBJ_COLS} FROM objects {filter} ORDER BY handle"
            ))?;
            let rows = st.query_map(&args[..], row_to_object)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn count(&self) -> Result<u64> {
        self.reading(|c| {
            let mut st = c.prepare_cached("SELECT n FROM object_count")?;
            Ok(u64_of(st.query_row([], |r| r.get(0))?))
        })
    }

    fn record(&self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>> {
        self.reading(|c| query_record(c, kind, key))
    }

    fn records(&self, kind: &str, prefix: &[u8]) -> Result<Vec<RecordRow>> {
        self.reading(|c| query_records(c, kind, prefix))
    }

    fn change_counter(&self) -> Result<u64> {
        // Fast path: the WAL index is unchanged, so no connection has committed since we last
        // asked SQLite (one pread instead of a read transaction: ~10x cheaper).
        let shm = self.shm.get_or_init(|| {
            let mut p = self.path.as_os_str().to_owned();
            p.push("-shm");
            open_shm(Path::new(&p))
        });
        let fp = wal_fingerprint(shm.as_ref());
        if let Some(fp) = fp {
            if self.wal_seen.load(Ordering::Acquire) == fp {
                return Ok(self.data_version.load(Ordering::Acquire));
            }
        }
        // `data_version` must come from the writer connection (it moves only for other
        // connections' commits, so this process's own writes are not taken for foreign ones).
        // While that connection is inside this process's own write (and its sync), the last
        // value read stands: that write checks for foreign commits itself before it writes,
        // and the next call after it asks again. Only the very first read waits.
        let mut guard = match self.conn.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::WouldBlock)
                if self.wal_seen.load(Ordering::Acquire) != 0 =>
            {
                return Ok(self.data_version.load(Ordering::Acquire));
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                self.conn.lock().map_err(|_| Error::Internal("store lock poisoned"))?
            }
            Err(std::sync::TryLockError::Poisoned(_)) => {
                return Err(Error::Internal("store lock poisoned"))
            }
        };
        (|c: &mut Connection| {
            let mut st = c.prepare_cached("PRAGMA data_version")?;
            let v = u64_of(st.query_row([], |r| r.get(0))?);
            // Both under the connection lock, the version first: a reader that sees this
            // fingerprint sees this version or a later one, never an older thread's pair (the
            // fingerprint was read before the version, so it is at worst older than `v`, which
            // only costs one more query).
            self.data_version.store(v, Ordering::Release);
            self.wal_seen.store(fp.unwrap_or(0), Ordering::Release);
            Ok(v)
        })(&mut guard)
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            f(&mut SqliteTx { tx: &tx })?;
            tx.commit()?;
            Ok(())
        })
    }

    fn scan(&self, f: &mut dyn FnMut(ScanRow<'_>) -> Result<()>) -> Result<StoreHeader> {
        self.reading(|c| {
            let tx = c.transaction()?; // one snapshot for the header and every row
            let header = read_header(&tx)?;
            {
                let mut st = tx.prepare(&format!("SELECT {SLOT_COLS} FROM keyslots"))?;
                let mut rows = st.query([])?;
                while let Some(r) = rows.next()? {
                    f(ScanRow::Keyslot(&row_to_keyslot(r)?))?;
                }
            }
            {
                let mut st = tx.prepare(&format!("SELECT {OBJ_COLS} FROM objects"))?;
                let mut rows = st.query([])?;
                while let Some(r) = rows.next()? {
                    f(ScanRow::Object(&row_to_object(r)?))?;
                }
            }
            {
                let mut st = tx.prepare(&format!("SELECT {REC_COLS} FROM records"))?;
                let mut rows = st.query([])?;
                while let Some(r) = rows.next()? {
                    f(ScanRow::Record(&row_to_record(r)?))?;
                }
            }
            Ok(header)
        })
    }

    fn count_attempt(&self, who: &str) -> Result<u32> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO attempts (who, n) VALUES (?1, 1)
                 ON CONFLICT (who) DO UPDATE SET n = n + 1",
            )?
            .execute([who])?;
            let n: u32 = tx
                .prepare_cached("SELECT n FROM attempts WHERE who = ?1")?
                .query_row([who], |r| r.get(0))?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn attempts(&self, who: &str) -> Result<u32> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT n FROM attempts WHERE who = ?1")?
                .query_row([who], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    fn clear_attempts(&self, who: &str) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM attempts WHERE who = ?1")?.execute([who])?;
            Ok(())
        })
    }

    fn set_header_note(&self, name: HeaderNote, value: Option<&[u8]>) -> Result<()> {
        self.with(|c| {
            match value {
                Some(v) => c.execute(
                    "INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)",
                    params![name.name(), v],
                )?,
                None => c.execute("DELETE FROM meta WHERE k = ?1", [name.name()])?,
            };
            Ok(())
        })
    }

    fn zeroize(&self) -> Result<()> {
        self.with(|c| {
            // Freed pages are overwritten with zeros, not merely unlinked.
            c.pragma_update(None, "secure_delete", "ON")?;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE keyslots SET wrapped_mk = zeroblob(length(wrapped_mk)), salt = x''",
                [],
            )?;
            tx.execute("DELETE FROM keyslots", [])?;
            // Every object (sealed material, and the now unverifiable public records) and
            // every record (some hold master-key-sealed values: the audit key) goes too.
            tx.execute("DELETE FROM objects", [])?;
            tx.execute("DELETE FROM records", [])?;
            tx.execute("DELETE FROM attempts", [])?;
            tx.execute("UPDATE meta SET v = x'' WHERE k = 'state'", [])?;
            tx.execute("UPDATE meta SET v = x'01' WHERE k = 'zeroized'", [])?;
            tx.commit()?;
            // Rewrite the file so the old pages holding wrapped keys are not left behind.
            c.execute_batch(
                "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{fold_header, prefix_end, SqliteStore};
    use crate::store::Store as _;

    /// Reads do not wait for this process's write in progress (its commit and sync): lookups
    /// use the reader connection, and the change counter keeps its last value meanwhile.
    #[test]
    fn reads_do_not_wait_for_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = SqliteStore::create(&path, [3; 16], "{}").unwrap();
        let before = s.change_counter().unwrap();
        let writing = s.conn.lock().unwrap(); // a write holds the writer connection
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let found = s.find(None, Some(b"x"), None).map(|v| v.len());
                let header = s.header().map(|h| h.store_uid);
                let change = s.change_counter();
                tx.send((found.ok(), header.ok(), change.ok())).unwrap();
            });
            let got = rx.recv_timeout(std::time::Duration::from_secs(20));
            drop(writing);
            assert_eq!(got.unwrap(), (Some(0), Some([3; 16]), Some(before)));
        });
    }

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn header_fingerprint_changes_with_any_byte() {
        let base = [0u8; 48];
        let f0 = fold_header(&base);
        assert_ne!(f0, 0);
        let mut seen = std::collections::HashSet::from([f0]);
        for i in 0..48 {
            for bit in 0..8 {
                let mut h = base;
                h[i] ^= 1 << bit;
                assert!(seen.insert(fold_header(&h)), "byte {i} bit {bit}");
            }
        }
        // Counters that move together (iChange and mxFrame both +1) still change it.
        let mut a = base;
        let mut b = base;
        a[8] = 1;
        a[16] = 1;
        b[8] = 2;
        b[16] = 2;
        assert_ne!(fold_header(&a), fold_header(&b));
    }
}
