//! The Bulwark token store on PostgreSQL 15+ (cluster mode, DESIGN.md §7).
//!
//! [`PgStore`] implements core's [`Store`] with the same rows and the same semantics as the
//! SQLite store, so the security kernel (`Token<S: Store>`) runs on it unchanged: the database
//! holds only what the key hierarchy gives it (wrapped master keys, MACed rows, sealed key
//! material) and never judges integrity; the kernel does. What the store guarantees:
//!
//! - **One transaction per authenticated write** ([`Store::write`]): the header row is locked
//!   first (`SELECT ... FOR UPDATE`), so writers from every connection and every node queue on
//!   it; the transaction runs at `READ COMMITTED`, so once it holds the lock every statement sees
//!   everything committed before (no serialization failures to retry), and nobody else can
//!   change an authenticated row until it commits. The rows, the new sealed state and the
//!   generation commit together or not at all.
//! - **One snapshot per scan** ([`Store::scan`]): `REPEATABLE READ, READ ONLY`, the header and
//!   every row from it, streamed through a portal (memory stays flat in the number of rows).
//! - **Attempt counters** are an atomic `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`,
//!   committed (synchronously, with PostgreSQL's default `synchronous_commit`) before the count
//!   is returned, so parallel guesses from any number of nodes never exceed the limit.
//! - **The change counter** moves when another connection commits, and only then (see
//!   `changes.rs`: a commit sequence row bumped by every committing transaction, read with one
//!   cheap query per call).
//! - **Handles** come from a sequence (never reused, below 2^31); labels, `CKA_ID` and classes
//!   are indexed; records are found by key prefix with an index range.
//!
//! It never puts a URL, a password or row contents in an error or a log line.

#![forbid(unsafe_code)]

pub mod audit;
mod changes;
pub mod cluster;
mod conn;
pub mod devserver;
mod schema;
mod tx;

use std::path::Path;

use bulwark_core::store::{
    HeaderNote, KeyslotRow, ObjectRow, RecordRow, ScanRow, Store, StoreHeader, StoreTx,
};
use bulwark_core::{Error, Result};
use postgres::{GenericClient, IsolationLevel, Row};

pub use conn::PgTls;

use changes::Changes;
use conn::{Pool, Stmts};

/// Connection options of a [`PgStore`].
#[derive(Clone)]
pub struct PgOptions {
    /// Most connections opened at once (default 8).
    pub pool_size: usize,
    /// TLS to the database (default: none, loopback and Unix sockets only).
    pub tls: PgTls,
    /// The database password, when it is not in the URL (read by the caller from a file or
    /// the environment; never on a command line). Takes precedence over one in the URL.
    pub password: Option<std::sync::Arc<zeroize::Zeroizing<Vec<u8>>>>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Default for PgOptions {
    fn default() -> Self {
        Self { pool_size: 8, tls: PgTls::Disabled, password: None }
    }
}

/// A token store in one PostgreSQL database (its current schema).
pub struct PgStore {
    pool: Pool,
    changes: Changes,
    /// Names the database in messages (host and database name, never credentials).
    name: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("database", &self.name).finish_non_exhaustive()
    }
}

/// A PostgreSQL error as a store error: the SQLSTATE and the server's primary message (never
/// its detail, which may quote row values), or the client's own description.
pub(crate) fn db_err(e: &postgres::Error) -> Error {
    match e.as_db_error() {
        Some(d) => Error::Store(format!("PostgreSQL {}: {}", d.code().code(), d.message())),
        None if e.is_closed() => Error::Store("PostgreSQL connection closed".into()),
        None => match std::error::Error::source(e) {
            // The cause (an I/O or TLS error) says what went wrong: refused, timed out, an
            // untrusted certificate. URLs and passwords are never part of it.
            Some(cause) => Error::Store(format!("PostgreSQL: {e}: {cause}")),
            None => Error::Store(format!("PostgreSQL: {e}")),
        },
    }
}

pub(crate) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::Internal("value out of range for the store"))
}

fn get<'a, T: postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(|e| db_err(&e))
}

/// A value out of range of its column cannot come from this store: it is mapped to one that
/// fails the row's MAC, so that an edited row is reported as tampering, not as a fault.
fn u32_col(r: &Row, i: usize) -> Result<u32> {
    Ok(u32::try_from(get::<i64>(r, i)?).unwrap_or(u32::MAX))
}

pub(crate) fn row_to_object(r: &Row) -> Result<ObjectRow> {
    let uid: Vec<u8> = get(r, 1)?;
    Ok(ObjectRow {
        handle: u64_of(get(r, 0)?),
        // A uid of the wrong length cannot authenticate; all-zero makes the MAC check fail.
        uid: uid.as_slice().try_into().unwrap_or([0; 16]),
        class: u64_of(get(r, 2)?),
        label: get(r, 3)?,
        ckaid: get(r, 4)?,
        private: get(r, 5)?,
        attrs: get(r, 6)?,
        secret: get(r, 7)?,
        mac: get(r, 8)?,
    })
}

pub(crate) fn row_to_keyslot(r: &Row) -> Result<KeyslotRow> {
    Ok(KeyslotRow {
        user_type: u8::try_from(get::<i16>(r, 0)?).unwrap_or(u8::MAX),
        salt: get(r, 1)?,
        m_cost: u32_col(r, 2)?,
        t_cost: u32_col(r, 3)?,
        p_cost: u32_col(r, 4)?,
        wrapped_mk: get(r, 5)?,
        mac: get(r, 6)?,
    })
}

pub(crate) fn row_to_record(r: &Row) -> Result<RecordRow> {
    Ok(RecordRow { kind: get(r, 0)?, key: get(r, 1)?, value: get(r, 2)?, mac: get(r, 3)? })
}

fn row_to_header(r: &Row) -> Result<StoreHeader> {
    let uid: Vec<u8> = get(r, 0)?;
    let generation: i64 = get(r, 2)?;
    let alarm: Option<Vec<u8>> = get(r, 5)?;
    Ok(StoreHeader {
        store_uid: uid.try_into().map_err(|_| Error::Integrity("store id malformed"))?,
        policy: get(r, 1)?,
        generation: u64::try_from(generation)
            .map_err(|_| Error::Integrity("generation malformed"))?,
        state: get(r, 3)?,
        zeroized: get(r, 4)?,
        alarm: alarm.map(|a| String::from_utf8_lossy(&a).into_owned()),
        audit_pub: get(r, 6)?,
    })
}

const SQL_HEADER: &str = "SELECT store_uid, policy, generation, state, zeroized, alarm, audit_pub \
                          FROM header WHERE id = 1";
const SQL_HEADER_LOCK: &str = "SELECT store_uid, policy, generation, state, zeroized, alarm, \
                               audit_pub FROM header WHERE id = 1 FOR UPDATE";
/// Bumps the commit sequence and wakes the other nodes (`LISTEN bulwark_commits`; the
/// notification is delivered when, and only if, the transaction commits).
const SQL_BUMP: &str = "WITH b AS (UPDATE commits SET seq = seq + 1 WHERE id = 1 RETURNING seq) \
                        SELECT seq, pg_notify('bulwark_commits', seq::text) FROM b";
const SQL_SEQ: &str = "SELECT seq FROM commits WHERE id = 1";
const SQL_KEYSLOT: &str = "SELECT user_type, salt, m_cost, t_cost, p_cost, wrapped_mk, mac \
                           FROM keyslots WHERE user_type = $1";
const SQL_OBJECT: &str = "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac \
                          FROM objects WHERE handle = $1";
const SQL_RECORD: &str = "SELECT kind, key, value, mac FROM records WHERE kind = $1 AND key = $2";
const SQL_RECORDS_RANGE: &str = "SELECT kind, key, value, mac FROM records \
                                 WHERE kind = $1 AND key >= $2 AND key < $3 ORDER BY key";
const SQL_RECORDS_FROM: &str =
    "SELECT kind, key, value, mac FROM records WHERE kind = $1 AND key >= $2 ORDER BY key";

pub(crate) fn read_header(c: &mut impl GenericClient, st: &mut Stmts) -> Result<StoreHeader> {
    let s = st.get(c, SQL_HEADER)?;
    let r = c.query_opt(&s, &[]).map_err(|e| db_err(&e))?;
    row_to_header(&r.ok_or(Error::Integrity("store header missing"))?)
}

pub(crate) fn lock_header(c: &mut impl GenericClient, st: &mut Stmts) -> Result<StoreHeader> {
    let s = st.get(c, SQL_HEADER_LOCK)?;
    let r = c.query_opt(&s, &[]).map_err(|e| db_err(&e))?;
    row_to_header(&r.ok_or(Error::Integrity("store header missing"))?)
}

pub(crate) fn query_keyslot(
    c: &mut impl GenericClient,
    st: &mut Stmts,
    user_type: u8,
) -> Result<Option<KeyslotRow>> {
    let s = st.get(c, SQL_KEYSLOT)?;
    c.query_opt(&s, &[&i16::from(user_type)])
        .map_err(|e| db_err(&e))?
        .as_ref()
        .map(row_to_keyslot)
        .transpose()
}

pub(crate) fn query_object(
    c: &mut impl GenericClient,
    st: &mut Stmts,
    handle: u64,
) -> Result<Option<ObjectRow>> {
    let s = st.get(c, SQL_OBJECT)?;
    c.query_opt(&s, &[&i64_of(handle)?])
        .map_err(|e| db_err(&e))?
        .as_ref()
        .map(row_to_object)
        .transpose()
}

pub(crate) fn query_record(
    c: &mut impl GenericClient,
    st: &mut Stmts,
    kind: &str,
    key: &[u8],
) -> Result<Option<RecordRow>> {
    let s = st.get(c, SQL_RECORD)?;
    c.query_opt(&s, &[&kind, &key]).map_err(|e| db_err(&e))?.as_ref().map(row_to_record).transpose()
}

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

pub(crate) fn query_records(
    c: &mut impl GenericClient,
    st: &mut Stmts,
    kind: &str,
    prefix: &[u8],
) -> Result<Vec<RecordRow>> {
    // `bytea` compares bytewise (as memcmp), so the prefix is an index range on (kind, key).
    let rows = if let Some(end) = prefix_end(prefix) {
        let s = st.get(c, SQL_RECORDS_RANGE)?;
        c.query(&s, &[&kind, &prefix, &end.as_slice()])
    } else {
        let s = st.get(c, SQL_RECORDS_FROM)?;
        c.query(&s, &[&kind, &prefix])
    }
    .map_err(|e| db_err(&e))?;
    rows.iter().map(row_to_record).collect()
}

/// The `find` statement for the filters given: only those conditions go into the `WHERE`
/// clause, so each lookup uses its index.
fn find_sql(class: bool, label: bool, ckaid: bool) -> &'static str {
    match (class, label, ckaid) {
        (false, false, false) => "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac FROM objects ORDER BY handle",
        (true, false, false) => "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac FROM objects WHERE class = $1 ORDER BY handle",
        (false, true, false) => "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac FROM objects WHERE label = $1 ORDER BY handle",
        (false, false, true) => "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac FROM objects WHERE ckaid = $1 ORDER BY handle",
        (true, true, false) => "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac FROM objects WHERE class = $1 AND label = $2 ORDER BY handle",
        (true, false, true) => "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac FROM objects WHERE class = $1 AND ckaid = $2 ORDER BY handle",
        (false, true, true) => "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac FROM objects WHERE label = $1 AND ckaid = $2 ORDER BY handle",
        (true, true, true) => "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac FROM objects WHERE class = $1 AND label = $2 AND ckaid = $3 ORDER BY handle",
    }
}

/// A redacted name of the database for messages: hosts and database name.
fn describe(cfg: &postgres::Config) -> String {
    use postgres::config::Host;
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(n) => n.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    format!("postgresql database {:?} on {}", cfg.get_dbname().unwrap_or(""), hosts.join(","))
}

impl PgStore {
    /// Creates the store in an empty database (or one holding only an older Bulwark schema
    /// without a store): the schema, then the header with `store_uid` and the unlock `policy`;
    /// the kernel then writes the first keyslots, records and sealed state with
    /// [`Store::write`] (see [`init_quorum`]). `AlreadyInitialized` if the database holds a
    /// store.
    ///
    /// # Errors
    /// `ArgumentsBad` for a malformed URL or one the TLS policy refuses; `Store` when the
    /// database cannot be reached; `SchemaUnsupported` for a schema newer than this build.
    pub fn create(url: &str, store_uid: [u8; 16], policy: &str, opts: &PgOptions) -> Result<Self> {
        conn::offload(|| Self::create_here(url, store_uid, policy, opts))
    }

    fn create_here(url: &str, store_uid: [u8; 16], policy: &str, opts: &PgOptions) -> Result<Self> {
        let (pool, name) = Self::connect(url, opts)?;
        {
            let mut c = pool.get()?;
            schema::migrate(&mut c.client)?;
            let mut tx = c.client.transaction().map_err(|e| db_err(&e))?;
            let n = tx
                .execute(
                    "INSERT INTO header (id, store_uid, policy, generation, state, zeroized, \
                     object_count) VALUES (1, $1, $2, 0, ''::bytea, false, 0) \
                     ON CONFLICT (id) DO NOTHING",
                    &[&store_uid.as_slice(), &policy],
                )
                .map_err(|e| db_err(&e))?;
            if n == 0 {
                return Err(Error::AlreadyInitialized(name));
            }
            tx.execute(
                "INSERT INTO commits (id, seq) VALUES (1, 1) ON CONFLICT (id) DO NOTHING",
                &[],
            )
            .map_err(|e| db_err(&e))?;
            tx.commit().map_err(|e| db_err(&e))?;
        }
        Self::finish(pool, name)
    }

    /// Opens the store of a database, migrating its schema forward if needed.
    ///
    /// # Errors
    /// As [`PgStore::create`]; `NotInitialized` when the database holds no store.
    pub fn open(url: &str, opts: &PgOptions) -> Result<Self> {
        conn::offload(|| Self::open_here(url, opts))
    }

    fn open_here(url: &str, opts: &PgOptions) -> Result<Self> {
        let (pool, name) = Self::connect(url, opts)?;
        {
            let mut c = pool.get()?;
            if schema::version(&mut c.client)?.is_none() {
                return Err(Error::NotInitialized(name));
            }
            schema::migrate(&mut c.client)?;
            let n: i64 = c
                .client
                .query_one("SELECT count(*) FROM header", &[])
                .and_then(|r| r.try_get(0))
                .map_err(|e| db_err(&e))?;
            if n == 0 {
                return Err(Error::NotInitialized(name));
            }
        }
        Self::finish(pool, name)
    }

    fn connect(url: &str, opts: &PgOptions) -> Result<(Pool, String)> {
        let mut cfg = conn::configure(url, &opts.tls)?;
        if let Some(pw) = &opts.password {
            cfg.password(pw.as_slice());
        }
        let name = describe(&cfg);
        Ok((Pool::new(cfg, opts.tls.clone(), opts.pool_size), name))
    }

    fn finish(pool: Pool, name: String) -> Result<Self> {
        let seq = {
            let mut c = pool.get()?;
            let conn = &mut *c;
            read_seq(&mut conn.client, &mut conn.stmts)?
        };
        Ok(Self { pool, changes: Changes::new(seq), name })
    }

    /// Names the database (hosts and database name; never credentials).
    pub fn describe(&self) -> &str {
        &self.name
    }

    /// Runs `f` in a transaction that commits a change of its own: bumps the commit sequence
    /// last, registers it as ours, then commits.
    fn committing<T>(
        &self,
        isolation: IsolationLevel,
        f: impl FnOnce(&mut postgres::Transaction<'_>, &mut Stmts) -> Result<(T, bool)>,
    ) -> Result<T> {
        conn::offload(|| self.committing_here(isolation, f))
    }

    fn committing_here<T>(
        &self,
        isolation: IsolationLevel,
        f: impl FnOnce(&mut postgres::Transaction<'_>, &mut Stmts) -> Result<(T, bool)>,
    ) -> Result<T> {
        let mut lease = self.pool.get()?;
        let conn = &mut *lease;
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(isolation)
            .start()
            .map_err(|e| db_err(&e))?;
        let (v, changed) = f(&mut tx, &mut conn.stmts)?;
        if !changed {
            tx.commit().map_err(|e| db_err(&e))?;
            return Ok(v);
        }
        let s = conn.stmts.get(&mut tx, SQL_BUMP)?;
        let seq = u64_of(
            tx.query_one(&s, &[]).and_then(|r| r.try_get::<_, i64>(0)).map_err(|e| db_err(&e))?,
        );
        self.changes.own_pending(seq);
        if let Err(e) = tx.commit() {
            self.changes.own_failed(seq);
            return Err(db_err(&e));
        }
        Ok(v)
    }

    fn with<T>(&self, f: impl FnOnce(&mut postgres::Client, &mut Stmts) -> Result<T>) -> Result<T> {
        conn::offload(|| {
            let mut lease = self.pool.get()?;
            let conn = &mut *lease;
            f(&mut conn.client, &mut conn.stmts)
        })
    }
}

fn read_seq(c: &mut impl GenericClient, st: &mut Stmts) -> Result<u64> {
    let s = st.get(c, SQL_SEQ)?;
    let r = c.query_opt(&s, &[]).map_err(|e| db_err(&e))?;
    let r = r.ok_or(Error::Integrity("store commit sequence missing"))?;
    Ok(u64_of(get(&r, 0)?))
}

impl Store for PgStore {
    fn header(&self) -> Result<StoreHeader> {
        self.with(read_header)
    }

    fn keyslot(&self, user_type: u8) -> Result<Option<KeyslotRow>> {
        self.with(|c, st| query_keyslot(c, st, user_type))
    }

    fn object(&self, handle: u64) -> Result<Option<ObjectRow>> {
        self.with(|c, st| query_object(c, st, handle))
    }

    fn find(
        &self,
        class: Option<u64>,
        label: Option<&[u8]>,
        ckaid: Option<&[u8]>,
    ) -> Result<Vec<ObjectRow>> {
        let class = class.map(i64_of).transpose()?;
        self.with(|c, st| {
            let mut args: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
            if let Some(v) = &class {
                args.push(v);
            }
            if let Some(v) = &label {
                args.push(v);
            }
            if let Some(v) = &ckaid {
                args.push(v);
            }
            let s = st.get(c, find_sql(class.is_some(), label.is_some(), ckaid.is_some()))?;
            let rows = c.query(&s, &args).map_err(|e| db_err(&e))?;
            rows.iter().map(row_to_object).collect()
        })
    }

    fn count(&self) -> Result<u64> {
        self.with(|c, st| {
            let s = st.get(c, "SELECT object_count FROM header WHERE id = 1")?;
            let r = c.query_one(&s, &[]).map_err(|e| db_err(&e))?;
            Ok(u64_of(get(&r, 0)?))
        })
    }

    fn record(&self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>> {
        self.with(|c, st| query_record(c, st, kind, key))
    }

    fn records(&self, kind: &str, prefix: &[u8]) -> Result<Vec<RecordRow>> {
        self.with(|c, st| query_records(c, st, kind, prefix))
    }

    fn change_counter(&self) -> Result<u64> {
        self.with(|c, st| {
            let ticket = self.changes.begin_read();
            let seq = read_seq(c, st)?;
            Ok(self.changes.observe(&ticket, seq))
        })
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        self.committing(IsolationLevel::ReadCommitted, |tx, st| {
            // Writers queue here; from now on no other writer can change a row until we commit.
            let header = lock_header(tx, st)?;
            f(&mut tx::PgTx { tx, st, header })?;
            Ok(((), true))
        })
    }

    fn scan(&self, f: &mut dyn FnMut(ScanRow<'_>) -> Result<()>) -> Result<StoreHeader> {
        const BATCH: i32 = 512;
        self.with(|c, _| {
            let mut tx = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| db_err(&e))?;
            let r = tx.query_opt(SQL_HEADER, &[]).map_err(|e| db_err(&e))?;
            let header = row_to_header(&r.ok_or(Error::Integrity("store header missing"))?)?;
            let tables = [
                "SELECT user_type, salt, m_cost, t_cost, p_cost, wrapped_mk, mac FROM keyslots",
                "SELECT handle, uid, class, label, ckaid, private, attrs, secret, mac FROM objects",
                "SELECT kind, key, value, mac FROM records",
            ];
            for (i, sql) in tables.iter().enumerate() {
                let portal = tx.bind(*sql, &[]).map_err(|e| db_err(&e))?;
                loop {
                    let rows = tx.query_portal(&portal, BATCH).map_err(|e| db_err(&e))?;
                    for r in &rows {
                        match i {
                            0 => f(ScanRow::Keyslot(&row_to_keyslot(r)?))?,
                            1 => f(ScanRow::Object(&row_to_object(r)?))?,
                            _ => f(ScanRow::Record(&row_to_record(r)?))?,
                        }
                    }
                    if rows.len() < BATCH as usize {
                        break;
                    }
                }
            }
            tx.commit().map_err(|e| db_err(&e))?;
            Ok(header)
        })
    }

    fn count_attempt(&self, who: &str) -> Result<u32> {
        self.committing(IsolationLevel::ReadCommitted, |tx, st| {
            let s = st.get(
                tx,
                "INSERT INTO attempts (who, n) VALUES ($1, 1) \
                 ON CONFLICT (who) DO UPDATE SET n = attempts.n + 1 RETURNING n",
            )?;
            let n: i64 = get(&tx.query_one(&s, &[&who]).map_err(|e| db_err(&e))?, 0)?;
            Ok((u32::try_from(n).unwrap_or(u32::MAX), true))
        })
    }

    fn attempts(&self, who: &str) -> Result<u32> {
        self.with(|c, st| {
            let s = st.get(c, "SELECT n FROM attempts WHERE who = $1")?;
            let r = c.query_opt(&s, &[&who]).map_err(|e| db_err(&e))?;
            Ok(match r {
                Some(r) => u32::try_from(get::<i64>(&r, 0)?).unwrap_or(u32::MAX),
                None => 0,
            })
        })
    }

    fn clear_attempts(&self, who: &str) -> Result<()> {
        self.committing(IsolationLevel::ReadCommitted, |tx, st| {
            let s = st.get(tx, "DELETE FROM attempts WHERE who = $1")?;
            let n = tx.execute(&s, &[&who]).map_err(|e| db_err(&e))?;
            // Nothing deleted is no change (as SQLite: no commit, no new data version).
            Ok(((), n > 0))
        })
    }

    fn set_header_note(&self, name: HeaderNote, value: Option<&[u8]>) -> Result<()> {
        let sql = match name {
            HeaderNote::Alarm => "UPDATE header SET alarm = $1 WHERE id = 1",
            HeaderNote::AuditPub => "UPDATE header SET audit_pub = $1 WHERE id = 1",
        };
        self.committing(IsolationLevel::ReadCommitted, |tx, st| {
            let s = st.get(tx, sql)?;
            tx.execute(&s, &[&value]).map_err(|e| db_err(&e))?;
            Ok(((), true))
        })
    }

    fn zeroize(&self) -> Result<()> {
        self.committing(IsolationLevel::ReadCommitted, |tx, st| {
            lock_header(tx, st)?;
            // Every master-key wrapping, every object (sealed material, and the now
            // unverifiable public records) and every record (some hold master-key-sealed
            // values: the audit key) goes.
            tx.batch_execute(
                "DELETE FROM keyslots; DELETE FROM objects; DELETE FROM records;
                 DELETE FROM attempts;
                 UPDATE header SET state = ''::bytea, zeroized = true, object_count = 0
                 WHERE id = 1;",
            )
            .map_err(|e| db_err(&e))?;
            Ok(((), true))
        })?;
        // PostgreSQL keeps deleted row versions until they are vacuumed: rewrite the tables so
        // the old pages holding wrapped keys are no longer part of them. (Copies in the WAL,
        // its archive, replicas and backups are beyond the store's reach: see docs/cluster.md.)
        self.with(|c, _| {
            c.batch_execute("VACUUM (FULL) keyslots, objects, records, attempts")
                .map_err(|e| db_err(&e))
        })
    }
}

/// Creates a `quorum` store in the database at `url` (as `bulwark_core::seal::
/// init_quorum_store_with_users` does in a SQLite file): a fresh master key wrapped under a
/// fresh unseal key split into `total` shares of which `threshold` unseal, the security
/// `policy`, and the first `users`. The audit log is the local file `<audit_base>-audit`.
///
/// # Errors
/// As [`PgStore::create`] and the core's initialization.
#[allow(clippy::too_many_arguments)] // the core's initialization arguments, plus where
pub fn init_quorum(
    url: &str,
    opts: &PgOptions,
    audit_base: &Path,
    label: &str,
    total: u8,
    threshold: u8,
    policy: &bulwark_core::token::SecurityPolicy,
    users: &[bulwark_core::token::InitialUser],
) -> Result<bulwark_core::seal::QuorumInit> {
    bulwark_core::seal::init_quorum_store_on(
        |uid, unlock| PgStore::create(url, uid, unlock, opts),
        audit_base,
        label,
        total,
        threshold,
        policy,
        users,
    )
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
