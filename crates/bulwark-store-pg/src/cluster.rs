//! Cluster bookkeeping beside the store (docs/cluster.md): node leases, the commit sequence,
//! and the change listener that wakes a node when another commits.
//!
//! **Leases.** Each serving node holds one row of `cluster_nodes`: its id, its endpoint, the
//! commit sequence number it has *applied* (its caches and its kernel's view are at least that
//! new: `acked_seq`), the store generation it saw, and `lease_until` — all times are the
//! database's clock, so nodes need no synchronized clocks among themselves. A node renews its
//! lease only together with an acknowledgement of what it applied, so a node that keeps its
//! lease keeps acknowledging; a node that stops renewing (stopped, cut off, crashed) drops out
//! when its lease expires. A writer that must not return before every node has seen its change
//! ([`PgStore::lagging_nodes`]) waits for every *live* node's acknowledgement.
//!
//! These rows are **not authenticated**: they say who is alive and what each node claims to
//! have applied, which the kernel never relies on for integrity (every node still checks every
//! row it reads against its MAC, the set commitment and the generation). Whoever can write
//! them can make a writer stop waiting early or wait a lease longer — what the database's
//! owner can do anyway by withholding commits.
//!
//! Nothing here bumps the commit sequence: lease traffic is not a change of the store, and
//! must not make every node re-verify it.

use std::time::Duration;

use bulwark_core::{Error, Result};

use crate::{db_err, i64_of, u64_of, PgStore};

/// One node's lease row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLease {
    /// The node's id (its configuration's `node_id`).
    pub node_id: String,
    /// Where clients reach it (informational).
    pub endpoint: String,
    /// When it registered (Unix ms, database clock).
    pub started_at_ms: i64,
    /// When it last renewed (Unix ms, database clock).
    pub renewed_at_ms: i64,
    /// Until when its lease holds (Unix ms, database clock).
    pub lease_until_ms: i64,
    /// The commit sequence number it has applied.
    pub acked_seq: u64,
    /// The store generation it saw when it last renewed.
    pub generation: u64,
    /// Whether the lease holds now (database clock).
    pub live: bool,
}

/// The whole cluster as the database sees it, read in one snapshot.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// The database's clock (Unix ms).
    pub now_ms: i64,
    /// The current commit sequence number.
    pub commit_seq: u64,
    /// The store generation in the header.
    pub generation: u64,
    /// Every lease row, live or lapsed, by node id.
    pub nodes: Vec<NodeLease>,
}

const MS: &str = "(extract(epoch FROM {c}) * 1000)::bigint";

fn ms(col: &str) -> String {
    MS.replace("{c}", col)
}

impl PgStore {
    /// The current commit sequence number (raw: it moves on every committed change, ours
    /// included).
    ///
    /// # Errors
    /// `Store` when the database cannot be reached.
    pub fn commit_seq(&self) -> Result<u64> {
        self.with(crate::read_seq)
    }

    /// Registers (`first`) or renews the lease of `node_id` for `ttl` from now (database
    /// clock), acknowledging that it applied every commit up to `acked_seq`. Returns the
    /// commit sequence number current when the lease was written.
    ///
    /// # Errors
    /// `Store` when the database cannot be reached.
    pub fn renew_lease(
        &self,
        node_id: &str,
        endpoint: &str,
        ttl: Duration,
        acked_seq: u64,
        generation: u64,
        first: bool,
    ) -> Result<u64> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let (ack, generation) = (i64_of(acked_seq)?, i64_of(generation)?);
        self.with(|c, _| {
            let sql = if first {
                "INSERT INTO cluster_nodes (node_id, endpoint, started_at, renewed_at, \
                 lease_until, acked_seq, generation) VALUES ($1, $2, now(), now(), \
                 now() + $3::float8 * interval '1 millisecond', $4, $5) \
                 ON CONFLICT (node_id) DO UPDATE SET endpoint = $2, started_at = now(), \
                 renewed_at = now(), lease_until = now() + $3::float8 * interval '1 millisecond', \
                 acked_seq = $4, generation = $5"
            } else {
                "INSERT INTO cluster_nodes (node_id, endpoint, started_at, renewed_at, \
                 lease_until, acked_seq, generation) VALUES ($1, $2, now(), now(), \
                 now() + $3::float8 * interval '1 millisecond', $4, $5) \
                 ON CONFLICT (node_id) DO UPDATE SET endpoint = $2, renewed_at = now(), \
                 lease_until = now() + $3::float8 * interval '1 millisecond', \
                 acked_seq = GREATEST(cluster_nodes.acked_seq, $4), generation = $5"
            };
            #[allow(clippy::cast_precision_loss)] // a lease of at most minutes
            let ttl_f = ttl_ms as f64;
            c.execute(sql, &[&node_id, &endpoint, &ttl_f, &ack, &generation])
                .map_err(|e| db_err(&e))?;
            let r =
                c.query_one("SELECT seq FROM commits WHERE id = 1", &[]).map_err(|e| db_err(&e))?;
            Ok(u64_of(r.try_get(0).map_err(|e| db_err(&e))?))
        })
    }

    /// Removes the lease of `node_id` (a clean shutdown: writers stop waiting for it at once).
    ///
    /// # Errors
    /// `Store` when the database cannot be reached.
    pub fn drop_lease(&self, node_id: &str) -> Result<()> {
        self.with(|c, _| {
            c.execute("DELETE FROM cluster_nodes WHERE node_id = $1", &[&node_id])
                .map_err(|e| db_err(&e))?;
            Ok(())
        })
    }

    /// The live nodes other than `except` that have not yet acknowledged commit `seq`.
    ///
    /// # Errors
    /// `Store` when the database cannot be reached.
    pub fn lagging_nodes(&self, seq: u64, except: &str) -> Result<Vec<String>> {
        let seq = i64_of(seq)?;
        self.with(|c, _| {
            let rows = c
                .query(
                    "SELECT node_id FROM cluster_nodes WHERE lease_until > now() \
                     AND acked_seq < $1 AND node_id <> $2 ORDER BY node_id",
                    &[&seq, &except],
                )
                .map_err(|e| db_err(&e))?;
            rows.iter().map(|r| r.try_get(0).map_err(|e| db_err(&e))).collect()
        })
    }

    /// Every lease, the commit sequence and the generation, from one snapshot.
    ///
    /// # Errors
    /// `Store` when the database cannot be reached.
    pub fn cluster_view(&self) -> Result<ClusterView> {
        self.with(|c, _| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| db_err(&e))?;
            let head = tx
                .query_one(
                    &format!(
                        "SELECT {}, (SELECT seq FROM commits WHERE id = 1), \
                         (SELECT generation FROM header WHERE id = 1)",
                        ms("now()")
                    ),
                    &[],
                )
                .map_err(|e| db_err(&e))?;
            let g = |r: &postgres::Row, i: usize| -> Result<i64> {
                r.try_get::<_, Option<i64>>(i)
                    .map_err(|e| db_err(&e))
                    .map(Option::unwrap_or_default)
            };
            let (now_ms, commit_seq, generation) = (g(&head, 0)?, g(&head, 1)?, g(&head, 2)?);
            let rows = tx
                .query(
                    &format!(
                        "SELECT node_id, endpoint, {}, {}, {}, acked_seq, generation, \
                         lease_until > now() FROM cluster_nodes ORDER BY node_id",
                        ms("started_at"),
                        ms("renewed_at"),
                        ms("lease_until")
                    ),
                    &[],
                )
                .map_err(|e| db_err(&e))?;
            let mut nodes = Vec::with_capacity(rows.len());
            for r in &rows {
                nodes.push(NodeLease {
                    node_id: r.try_get(0).map_err(|e| db_err(&e))?,
                    endpoint: r.try_get(1).map_err(|e| db_err(&e))?,
                    started_at_ms: g(r, 2)?,
                    renewed_at_ms: g(r, 3)?,
                    lease_until_ms: g(r, 4)?,
                    acked_seq: u64_of(g(r, 5)?),
                    generation: u64_of(g(r, 6)?),
                    live: r.try_get(7).map_err(|e| db_err(&e))?,
                });
            }
            tx.commit().map_err(|e| db_err(&e))?;
            Ok(ClusterView {
                now_ms,
                commit_seq: u64_of(commit_seq),
                generation: u64_of(generation),
                nodes,
            })
        })
    }

    /// A connection of its own (outside the pool) listening for commits.
    ///
    /// # Errors
    /// `Store` when the database cannot be reached.
    pub fn change_listener(&self) -> Result<ChangeListener> {
        crate::conn::offload(|| {
            let mut conn = self.pool.connect()?;
            conn.client.batch_execute("LISTEN bulwark_commits").map_err(|e| db_err(&e))?;
            Ok(ChangeListener { conn })
        })
    }
}

/// Wakes a node when another connection commits a change (`NOTIFY` sent by every committing
/// transaction of the store). A lost notification only delays a node until its next poll:
/// callers keep polling the commit sequence as a backstop.
pub struct ChangeListener {
    conn: crate::conn::Conn,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener").finish_non_exhaustive()
    }
}

impl ChangeListener {
    /// Waits at most `timeout` for a commit notification; true when at least one arrived
    /// (every pending one is consumed).
    ///
    /// # Errors
    /// `Store` when the connection broke (make a new listener).
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        crate::conn::offload(|| self.wait_here(timeout))
    }

    fn wait_here(&mut self, timeout: Duration) -> Result<bool> {
        use postgres::fallible_iterator::FallibleIterator;
        let first = {
            let mut n = self.conn.client.notifications();
            let r = n.timeout_iter(timeout).next().map_err(|e| db_err(&e))?;
            r.is_some()
        };
        if !first {
            if self.conn.client.is_closed() {
                return Err(Error::Store("PostgreSQL connection closed".into()));
            }
            return Ok(false);
        }
        let mut n = self.conn.client.notifications();
        while n.iter().next().map_err(|e| db_err(&e))?.is_some() {}
        Ok(true)
    }
}
