//! The database schema and its versioned migrations.
//!
//! The version lives in the one-row table `schema_version`. Migrations are explicit SQL, run in
//! order in one transaction under an advisory lock (several nodes starting at once migrate
//! once); a database of a version this build does not know is refused, never "repaired".
//! The SQL stays within what PostgreSQL-wire databases commonly share (plain tables, B-tree
//! indexes, a sequence, `ON CONFLICT`, `RETURNING`, `FOR UPDATE`; no triggers, no stored
//! procedures), but only PostgreSQL 15+ is promised and tested.

use bulwark_core::{Error, Result};
use postgres::GenericClient;

use crate::db_err;

/// Forward migrations; index + 1 is the schema version they produce.
const MIGRATIONS: &[&str] = &[
    // v1: the token store, same rows and semantics as the SQLite store's schema 3.
    "CREATE TABLE header (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        store_uid BYTEA NOT NULL,
        policy TEXT NOT NULL,
        generation BIGINT NOT NULL,
        state BYTEA NOT NULL,
        zeroized BOOLEAN NOT NULL,
        alarm BYTEA,
        audit_pub BYTEA,
        object_count BIGINT NOT NULL);
     -- Bumped by every committing transaction (the change counter, see changes.rs).
     CREATE TABLE commits (id SMALLINT PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL);
     CREATE TABLE keyslots (
        user_type SMALLINT PRIMARY KEY,
        salt BYTEA NOT NULL, m_cost BIGINT NOT NULL, t_cost BIGINT NOT NULL,
        p_cost BIGINT NOT NULL, wrapped_mk BYTEA NOT NULL, mac BYTEA NOT NULL);
     CREATE TABLE attempts (who TEXT PRIMARY KEY, n BIGINT NOT NULL);
     -- Handles are never reused (a sequence never hands out a number twice, even when the
     -- transaction that took it rolls back) and stay below 2^31, where session-object handles
     -- begin.
     CREATE SEQUENCE object_handles AS BIGINT MINVALUE 1 MAXVALUE 2147483647 NO CYCLE;
     CREATE TABLE objects (
        handle BIGINT PRIMARY KEY DEFAULT nextval('object_handles'),
        uid BYTEA NOT NULL UNIQUE,
        class BIGINT NOT NULL,
        label BYTEA NOT NULL,
        ckaid BYTEA NOT NULL,
        private BOOLEAN NOT NULL,
        attrs BYTEA NOT NULL,
        secret BYTEA,
        mac BYTEA NOT NULL);
     CREATE INDEX objects_label ON objects (label);
     CREATE INDEX objects_ckaid ON objects (ckaid);
     CREATE INDEX objects_class ON objects (class);
     CREATE TABLE records (
        kind TEXT NOT NULL, key BYTEA NOT NULL, value BYTEA NOT NULL, mac BYTEA NOT NULL,
        PRIMARY KEY (kind, key));",
    // v2: cluster mode. One lease row per serving node (not authenticated: it says who is
    // alive and what each node has applied, nothing the kernel trusts; see cluster.rs). Times
    // are the database's clock.
    "CREATE TABLE cluster_nodes (
        node_id TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        renewed_at TIMESTAMPTZ NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL,
        acked_seq BIGINT NOT NULL,
        generation BIGINT NOT NULL);",
];

/// The schema version this build writes.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations
pub(crate) const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Advisory lock key serializing migrations ("bulwark" in ASCII).
const MIGRATION_LOCK: i64 = 0x0062_756c_7761_726b;

/// The schema version of the database: `None` when it holds no Bulwark schema at all.
pub(crate) fn version(c: &mut impl GenericClient) -> Result<Option<i32>> {
    let exists = c
        .query_one(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = 'schema_version'",
            &[],
        )
        .map_err(|e| db_err(&e))?
        .try_get::<_, i64>(0)
        .map_err(|e| db_err(&e))?;
    if exists == 0 {
        return Ok(None);
    }
    let row = c.query_opt("SELECT version FROM schema_version", &[]).map_err(|e| db_err(&e))?;
    match row {
        Some(r) => Ok(Some(r.try_get(0).map_err(|e| db_err(&e))?)),
        None => Err(Error::Integrity("schema_version is empty")),
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] (creating it on an empty database); refuses a
/// version this build does not know.
pub(crate) fn migrate(c: &mut postgres::Client) -> Result<()> {
    if let Some(v) = version(c)? {
        check(v)?;
        if v == SCHEMA_VERSION {
            return Ok(());
        }
    }
    let mut tx = c.transaction().map_err(|e| db_err(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(|e| db_err(&e))?;
    // Re-read under the lock: another node may have migrated meanwhile.
    let from = if let Some(v) = version(&mut tx)? {
        check(v)?;
        v
    } else {
        tx.batch_execute("CREATE TABLE schema_version (version INTEGER NOT NULL);")
            .map_err(|e| db_err(&e))?;
        tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
            .map_err(|e| db_err(&e))?;
        0
    };
    for (i, m) in MIGRATIONS.iter().enumerate().skip(usize::try_from(from).unwrap_or(0)) {
        tx.batch_execute(m).map_err(|e| db_err(&e))?;
        let v = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE schema_version SET version = $1", &[&v]).map_err(|e| db_err(&e))?;
        tracing::info!(version = v, "PostgreSQL store schema migrated");
    }
    tx.commit().map_err(|e| db_err(&e))
}

fn check(v: i32) -> Result<()> {
    if !(0..=SCHEMA_VERSION).contains(&v) {
        return Err(Error::SchemaUnsupported(i64::from(v)));
    }
    Ok(())
}
