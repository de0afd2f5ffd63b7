//! Audit across cluster nodes in the database (docs/audit.md "Cluster audit"): each node's
//! records, shipped from its local log, and the global checkpoint chain signed with the
//! domain's audit key.
//!
//! - `audit_nodes(node_id, log_id)`: which local log a node id ships (its chain starts at that
//!   log's genesis). Registered once by the node's first shipping round; another log under a
//!   registered node id (a node id reused, a log replaced by a fresh one) is refused.
//! - `audit_records(node_id, seq, record)`, primary key `(node_id, seq)`: a record is the
//!   node's export line, byte for byte. A second, different record for the same position (a
//!   node whose log was replaced by an older copy and went on, or a forger) conflicts with the
//!   key; it is never written over the first: the shipper compares, reports a **fork** and
//!   stops.
//! - `audit_global(n, time_ms, prev_hash, heads, signature)`, primary key `n`: appended by any
//!   node. Two nodes appending entry `n` at once conflict on the key; one wins, the other
//!   finds its entry refused and tries again later from the new head. Before it signs, the
//!   appender checks the last entry's signature and every node's new records against the
//!   chain value of the head before them, so nothing the database's owner edited gets signed.
//!
//! These tables are not part of the store's authenticated rows and not part of its versioned
//! schema: they are created with `CREATE TABLE IF NOT EXISTS` by the first node that ships.
//! Whoever writes the database directly can delete or edit rows; the signed global chain makes
//! that visible to the nodes (which raise an alarm) and to `bulwark audit verify` offline.

use bulwark_core::audit::{
    global_genesis, step_node_chain, AuditLog, AuditSigner, GlobalEntry, NodeHead,
};
use bulwark_core::{Error, Result};
use postgres::GenericClient;

use crate::{db_err, i64_of, u64_of, PgStore};

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS audit_nodes (
    node_id TEXT PRIMARY KEY,
    log_id BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_records (
    node_id TEXT NOT NULL,
    seq BIGINT NOT NULL CHECK (seq >= 0),
    record BYTEA NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE TABLE IF NOT EXISTS audit_global (
    n BIGINT PRIMARY KEY CHECK (n >= 0),
    time_ms BIGINT NOT NULL,
    prev_hash BYTEA NOT NULL,
    heads TEXT NOT NULL,
    signature BYTEA NOT NULL
);";

/// What went wrong with the cluster audit.
#[derive(Debug)]
pub enum AuditError {
    /// The database could not be used (retry later).
    Store(Error),
    /// The audit trail in the database is not what it must be: a fork, deleted or edited
    /// records, a broken global chain. An integrity alarm.
    Integrity(String),
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(e) => write!(f, "{e}"),
            Self::Integrity(m) => write!(f, "cluster audit integrity: {m}"),
        }
    }
}

impl std::error::Error for AuditError {}

impl From<Error> for AuditError {
    fn from(e: Error) -> Self {
        Self::Store(e)
    }
}

fn pe(e: &postgres::Error) -> AuditError {
    AuditError::Store(db_err(e))
}

/// A node's shipping progress (kept by the shipper between rounds).
#[derive(Clone, Debug, Default)]
pub struct Shipper {
    /// Records of this node known to be in the database (`None` before the first round).
    shipped: Option<u64>,
}

impl Shipper {
    /// Records known to be in the database.
    pub fn shipped(&self) -> u64 {
        self.shipped.unwrap_or(0)
    }
}

/// The appender's memory of the global chain: the highest entry it has seen, so that a chain
/// cut back in the database is noticed.
#[derive(Clone, Debug, Default)]
pub struct GlobalWatch {
    seen: Option<u64>,
}

fn node_size(c: &mut impl GenericClient, node: &str) -> std::result::Result<u64, AuditError> {
    let r = c
        .query_one("SELECT max(seq) FROM audit_records WHERE node_id = $1", &[&node])
        .map_err(|e| pe(&e))?;
    let m: Option<i64> = r.try_get(0).map_err(|e| pe(&e))?;
    Ok(m.map_or(0, |m| u64_of(m) + 1))
}

fn last_entry(c: &mut impl GenericClient) -> std::result::Result<Option<GlobalEntry>, AuditError> {
    let r = c
        .query_opt(
            "SELECT n, time_ms, prev_hash, heads, signature FROM audit_global \
             ORDER BY n DESC LIMIT 1",
            &[],
        )
        .map_err(|e| pe(&e))?;
    r.map(|r| entry_of(&r)).transpose()
}

fn entry_of(r: &postgres::Row) -> std::result::Result<GlobalEntry, AuditError> {
    let g = |e: postgres::Error| pe(&e);
    let heads: String = r.try_get(3).map_err(g)?;
    Ok(GlobalEntry {
        n: u64_of(r.try_get(0).map_err(g)?),
        time_ms: u64_of(r.try_get(1).map_err(g)?),
        prev: hex::encode(r.try_get::<_, Vec<u8>>(2).map_err(g)?),
        heads: GlobalEntry::parse_heads(&heads)
            .map_err(|_| AuditError::Integrity("a global entry's heads do not parse".into()))?,
        signature: hex::encode(r.try_get::<_, Vec<u8>>(4).map_err(g)?),
    })
}

impl PgStore {
    /// Creates the cluster audit tables when missing.
    ///
    /// # Errors
    /// `Store` when the database cannot be reached.
    pub fn audit_ensure_tables(&self) -> Result<()> {
        self.with(|c, _| c.batch_execute(CREATE).map_err(|e| db_err(&e)))
    }

    /// Inserts `node`'s record lines `first..first + lines.len()`. A position already taken
    /// with the same bytes is left as it is (a retry); with other bytes it is a fork: nothing
    /// of this call is written and [`AuditError::Integrity`] says where.
    ///
    /// # Errors
    /// As described; `Store` when the database cannot be reached.
    pub fn audit_ship(
        &self,
        node: &str,
        first: u64,
        lines: &[String],
    ) -> std::result::Result<(), AuditError> {
        self.with(|c, _| Ok(ship_tx(c, node, first, lines)))?
    }

    /// One shipping round of `node` from its local `log`: on the first round, checks that what
    /// the database holds for this node is a prefix of the local log (else the local log was
    /// replaced or the node id reused: a fork); then ships the records the database lacks, at
    /// most `max` per call. Returns the number shipped.
    ///
    /// # Errors
    /// [`AuditError::Integrity`] on a fork or on records deleted from the database.
    pub fn audit_ship_from(
        &self,
        node: &str,
        log: &AuditLog,
        state: &mut Shipper,
        max: usize,
    ) -> std::result::Result<u64, AuditError> {
        let in_db = self.with(|c, _| Ok(node_size(c, node)))??;
        let from = match state.shipped {
            None => {
                self.audit_register(node, &log.log_id())?;
                if in_db > 0 {
                    let local = log.record_lines(in_db - 1, 1)?;
                    let theirs = self.audit_record(node, in_db - 1)?;
                    match local.first() {
                        None => {
                            return Err(AuditError::Integrity(format!(
                                "node {node}: the database holds {in_db} records of this node \
                                 but its local log has fewer (local log replaced by an older \
                                 copy, or the node id reused): a fork"
                            )))
                        }
                        Some(l) if Some(l.as_bytes()) != theirs.as_deref() => {
                            return Err(AuditError::Integrity(format!(
                                "node {node}: record {} in the database differs from the local \
                                 log's: a fork",
                                in_db - 1
                            )))
                        }
                        Some(_) => {}
                    }
                }
                in_db
            }
            Some(s) if in_db < s => {
                return Err(AuditError::Integrity(format!(
                    "node {node}: the database holds {in_db} of this node's records, {s} were \
                     shipped: records deleted from the database"
                )))
            }
            Some(s) => s,
        };
        state.shipped = Some(from);
        let lines = log.record_lines(from, max)?;
        if lines.is_empty() {
            return Ok(0);
        }
        self.audit_ship(node, from, &lines)?;
        let n = lines.len() as u64;
        state.shipped = Some(from + n);
        Ok(n)
    }

    /// Registers `node` as shipping the local log `log_id`; an already registered node must
    /// name the same log.
    ///
    /// # Errors
    /// [`AuditError::Integrity`] when the node id belongs to another log.
    pub fn audit_register(
        &self,
        node: &str,
        log_id: &[u8; 16],
    ) -> std::result::Result<(), AuditError> {
        let have: Vec<u8> = self.with(|c, _| {
            c.execute(
                "INSERT INTO audit_nodes (node_id, log_id) VALUES ($1, $2) \
                 ON CONFLICT (node_id) DO NOTHING",
                &[&node, &log_id.as_slice()],
            )
            .map_err(|e| db_err(&e))?;
            let r = c
                .query_one("SELECT log_id FROM audit_nodes WHERE node_id = $1", &[&node])
                .map_err(|e| db_err(&e))?;
            r.try_get(0).map_err(|e| db_err(&e))
        })?;
        if have != log_id {
            return Err(AuditError::Integrity(format!(
                "node {node}: the database knows this node id with another local log (a node \
                 id reused, or the node's log replaced by a new one): a fork"
            )));
        }
        Ok(())
    }

    /// Whether the last global entry covers at least `size` records of `node`.
    ///
    /// # Errors
    /// `Store` when the database cannot be reached.
    pub fn audit_global_covers(
        &self,
        node: &str,
        size: u64,
    ) -> std::result::Result<bool, AuditError> {
        let last = self.with(|c, _| Ok(last_entry(c)))??;
        Ok(size == 0 || last.and_then(|l| l.head(node).map(|h| h.size >= size)).unwrap_or(false))
    }

    /// The stored bytes of `node`'s record `seq`.
    ///
    /// # Errors
    /// `Store` when the database cannot be reached.
    pub fn audit_record(&self, node: &str, seq: u64) -> Result<Option<Vec<u8>>> {
        let s = i64_of(seq)?;
        self.with(|c, _| {
            let r = c
                .query_opt(
                    "SELECT record FROM audit_records WHERE node_id = $1 AND seq = $2",
                    &[&node, &s],
                )
                .map_err(|e| db_err(&e))?;
            r.map(|r| r.try_get(0).map_err(|e| db_err(&e))).transpose()
        })
    }

    /// Appends the next global entry when some node's head moved since the last one (or there
    /// is none yet), signed by `signer` for the domain `log_id`. Returns the entry written, or
    /// `None` when nothing moved or another node appended that position first.
    ///
    /// # Errors
    /// [`AuditError::Integrity`] when the last entry's signature does not verify, the chain was
    /// cut back, a node's records went missing or do not chain up to the head before them.
    pub fn audit_append_global(
        &self,
        log_id: &[u8; 16],
        signer: &AuditSigner,
        watch: &mut GlobalWatch,
    ) -> std::result::Result<Option<GlobalEntry>, AuditError> {
        let pk = signer.public_key();
        let r = self.with(|c, _| {
            Ok((|| {
                let last = last_entry(c)?;
                if let Some(seen) = watch.seen {
                    if last.as_ref().is_none_or(|l| l.n < seen) {
                        return Err(AuditError::Integrity(format!(
                            "the global audit chain was cut back: entry {seen} was seen, the \
                             database ends at {}",
                            last.as_ref().map_or_else(|| "nothing".into(), |l| l.n.to_string())
                        )));
                    }
                }
                if let Some(l) = &last {
                    if !l.verify_signature(log_id, &pk) {
                        return Err(AuditError::Integrity(format!(
                            "global audit entry {}: signature does not verify",
                            l.n
                        )));
                    }
                    watch.seen = Some(l.n);
                }
                let rows = c
                    .query(
                        "SELECT r.node_id, max(r.seq), n.log_id FROM audit_records r \
                         LEFT JOIN audit_nodes n USING (node_id) GROUP BY r.node_id, n.log_id \
                         ORDER BY r.node_id",
                        &[],
                    )
                    .map_err(|e| pe(&e))?;
                let mut sizes = Vec::with_capacity(rows.len());
                for r in rows {
                    let id: String = r.try_get(0).map_err(|e| pe(&e))?;
                    let m: i64 = r.try_get(1).map_err(|e| pe(&e))?;
                    let log: Option<Vec<u8>> = r.try_get(2).map_err(|e| pe(&e))?;
                    let log: [u8; 16] = log.and_then(|l| l.try_into().ok()).ok_or_else(|| {
                        AuditError::Integrity(format!(
                            "node {id}: records of a node whose log is not registered"
                        ))
                    })?;
                    sizes.push((id, u64_of(m) + 1, log));
                }
                let mut heads = Vec::new();
                let mut moved = last.is_none();
                if let Some(l) = &last {
                    for h in &l.heads {
                        if !sizes.iter().any(|(id, _, _)| *id == h.node_id) && h.size > 0 {
                            return Err(AuditError::Integrity(format!(
                                "node {}: its records are gone from the database (global \
                                 entry {} covers {})",
                                h.node_id, l.n, h.size
                            )));
                        }
                    }
                }
                for (id, size, node_log) in sizes {
                    let before = last.as_ref().and_then(|l| l.head(&id).cloned());
                    if before.as_ref().is_some_and(|h| h.log_id != hex::encode(node_log)) {
                        return Err(AuditError::Integrity(format!(
                            "node {id}: registered with another log than the global chain names"
                        )));
                    }
                    let (from, chain) = match &before {
                        Some(h) => (
                            h.size,
                            hex::decode(&h.chain)
                                .ok()
                                .and_then(|v| v.try_into().ok())
                                .ok_or_else(|| AuditError::Integrity("malformed head".into()))?,
                        ),
                        None => (0, bulwark_core::audit::genesis(&node_log)),
                    };
                    if size < from {
                        return Err(AuditError::Integrity(format!(
                            "node {id}: the database holds {size} records, global entry {} \
                             covers {from}: records deleted",
                            last.as_ref().map_or(0, |l| l.n)
                        )));
                    }
                    let chain = chain_up(c, &id, from, size, chain)?;
                    moved |= size != from || before.is_none();
                    heads.push(NodeHead {
                        node_id: id,
                        log_id: hex::encode(node_log),
                        size,
                        chain: hex::encode(chain),
                    });
                }
                if !moved {
                    return Ok(None);
                }
                let (n, prev) = match &last {
                    Some(l) => (
                        l.n + 1,
                        l.hash(log_id).ok_or_else(|| {
                            AuditError::Integrity("a global entry is malformed".into())
                        })?,
                    ),
                    None => (0, global_genesis(log_id)),
                };
                let e = signer
                    .sign_global(log_id, n, bulwark_core::audit::now_ms(), &prev, heads)
                    .map_err(AuditError::Store)?;
                let prev_b = hex::decode(&e.prev).unwrap_or_default();
                let sig = hex::decode(&e.signature).unwrap_or_default();
                let wrote = c
                    .execute(
                        "INSERT INTO audit_global (n, time_ms, prev_hash, heads, signature) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (n) DO NOTHING",
                        &[&i64_of(n)?, &i64_of(e.time_ms)?, &prev_b, &e.heads_json(), &sig],
                    )
                    .map_err(|e| pe(&e))?;
                if wrote == 0 {
                    return Ok(None); // another node took position n: next round
                }
                watch.seen = Some(n);
                Ok(Some(e))
            })())
        })?;
        r
    }

    /// Reads, in one snapshot, the global chain and every node's records up to the last
    /// global entry's head (later records are not yet covered by a signature: the next export
    /// has them), calling `f` with each export line in order: header, entries, node sections.
    ///
    /// # Errors
    /// `Store` on database errors; whatever `f` returns.
    pub fn audit_export_cluster(
        &self,
        log_id: &[u8; 16],
        mut f: impl FnMut(String) -> Result<()>,
    ) -> Result<()> {
        use bulwark_core::audit::{cluster_line_json, ClusterLine};
        self.with(|c, _| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| db_err(&e))?;
            let entries = tx
                .query(
                    "SELECT n, time_ms, prev_hash, heads, signature FROM audit_global ORDER BY n",
                    &[],
                )
                .map_err(|e| db_err(&e))?;
            let mut parsed = Vec::with_capacity(entries.len());
            for r in &entries {
                parsed.push(entry_of(r).map_err(|e| Error::Store(e.to_string()))?);
            }
            let mut nodes: Vec<String> = tx
                .query("SELECT DISTINCT node_id FROM audit_records ORDER BY node_id", &[])
                .map_err(|e| db_err(&e))?
                .iter()
                .map(|r| r.try_get(0).map_err(|e| db_err(&e)))
                .collect::<Result<_>>()?;
            if let Some(l) = parsed.last() {
                for h in &l.heads {
                    if !nodes.contains(&h.node_id) {
                        nodes.push(h.node_id.clone());
                    }
                }
            }
            nodes.sort();
            f(cluster_line_json(&ClusterLine::Cluster {
                version: 1,
                log_id: hex::encode(log_id),
                nodes: nodes.clone(),
            })?)?;
            let limits: Vec<(String, u64)> = parsed
                .last()
                .map(|l| l.heads.iter().map(|h| (h.node_id.clone(), h.size)).collect())
                .unwrap_or_default();
            for e in parsed {
                f(cluster_line_json(&ClusterLine::Global(e))?)?;
            }
            for node in nodes {
                f(cluster_line_json(&ClusterLine::Node { node_id: node.clone() })?)?;
                let limit = limits.iter().find(|(n, _)| *n == node).map_or(0, |(_, s)| *s);
                let mut from = 0i64;
                let end = i64_of(limit)?;
                while from < end {
                    let rows = tx
                        .query(
                            "SELECT seq, record FROM audit_records WHERE node_id = $1 \
                             AND seq >= $2 AND seq < $3 ORDER BY seq LIMIT 1024",
                            &[&node, &from, &end],
                        )
                        .map_err(|e| db_err(&e))?;
                    if rows.is_empty() {
                        break;
                    }
                    for r in &rows {
                        let seq: i64 = r.try_get(0).map_err(|e| db_err(&e))?;
                        let rec: Vec<u8> = r.try_get(1).map_err(|e| db_err(&e))?;
                        // Exported as stored: the verifier judges the bytes.
                        f(String::from_utf8_lossy(&rec).into_owned())?;
                        from = seq + 1;
                    }
                }
            }
            tx.commit().map_err(|e| db_err(&e))
        })
    }
}

/// Chains `node`'s records `from..to` after `chain`; the new head.
fn chain_up(
    c: &mut impl GenericClient,
    node: &str,
    from: u64,
    to: u64,
    mut chain: bulwark_core::audit::Hash,
) -> std::result::Result<bulwark_core::audit::Hash, AuditError> {
    let (mut next, end) = (i64_of(from)?, i64_of(to)?);
    while next < end {
        let rows = c
            .query(
                "SELECT seq, record FROM audit_records WHERE node_id = $1 AND seq >= $2 \
                 AND seq < $3 ORDER BY seq LIMIT 1024",
                &[&node, &next, &end],
            )
            .map_err(|e| pe(&e))?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let seq: i64 = r.try_get(0).map_err(|e| pe(&e))?;
            if seq != next {
                return Err(AuditError::Integrity(format!(
                    "node {node}: record {next} is missing from the database"
                )));
            }
            let rec: Vec<u8> = r.try_get(1).map_err(|e| pe(&e))?;
            let text = String::from_utf8(rec).map_err(|_| {
                AuditError::Integrity(format!("node {node}: record {seq} is not text"))
            })?;
            chain = step_node_chain(&chain, u64_of(seq), &text)
                .map_err(|e| AuditError::Integrity(format!("node {node}: {e}")))?;
            next += 1;
        }
    }
    if next < end {
        return Err(AuditError::Integrity(format!(
            "node {node}: record {next} is missing from the database"
        )));
    }
    Ok(chain)
}

fn ship_tx(
    c: &mut postgres::Client,
    node: &str,
    first: u64,
    lines: &[String],
) -> std::result::Result<(), AuditError> {
    let mut tx = c.transaction().map_err(|e| pe(&e))?;
    let ins = tx
        .prepare(
            "INSERT INTO audit_records (node_id, seq, record) VALUES ($1, $2, $3) \
             ON CONFLICT (node_id, seq) DO NOTHING",
        )
        .map_err(|e| pe(&e))?;
    for (k, line) in lines.iter().enumerate() {
        let seq = first + k as u64;
        let s = i64_of(seq)?;
        let wrote = tx.execute(&ins, &[&node, &s, &line.as_bytes()]).map_err(|e| pe(&e))?;
        if wrote == 0 {
            let r = tx
                .query_one(
                    "SELECT record FROM audit_records WHERE node_id = $1 AND seq = $2",
                    &[&node, &s],
                )
                .map_err(|e| pe(&e))?;
            let have: Vec<u8> = r.try_get(0).map_err(|e| pe(&e))?;
            if have != line.as_bytes() {
                // Dropping the transaction rolls back every insert of this call.
                return Err(AuditError::Integrity(format!(
                    "node {node}: a different record {seq} is already in the database: a fork \
                     (refused by the (node id, sequence) key)"
                )));
            }
        }
    }
    tx.commit().map_err(|e| pe(&e))
}
