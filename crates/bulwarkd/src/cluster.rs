//! Cluster mode (docs/cluster.md): this node's lease, its catching up with the other nodes'
//! commits, and the barrier that makes revocations wait for every live node.
//!
//! A background thread per node ([`Node::spawn`]) keeps the lease: it reads the store's commit
//! sequence, brings the kernel up to date with it ([`bulwark_core::Token::catch_up`]: cached
//! objects dropped after a foreign commit, the whole store verified again, prepared keys sent
//! back through the full gate) and clears the daemon's label cache, then renews its lease row
//! acknowledging that sequence number. It wakes on the store's commit notifications
//! (`LISTEN/NOTIFY`) and at least every quarter lease (the poll is the backstop for a lost
//! notification or a broken listener).
//!
//! **Stops serving.** The node serves only until `t0 + lease - lease/5`, where `t0` is taken
//! before the renewal that succeeded was sent: the database holds the lease until *its* clock's
//! `now() + lease` at that statement, which is later, so the node always stops before the
//! others stop waiting for it. A node that was stopped (SIGSTOP), cut off from the database or
//! too slow finds its deadline passed and answers UNAVAILABLE until it has renewed **and**
//! caught up again: after a lapse it applies every commit once more *after* its new lease is
//! visible, so no commit that a writer did not wait for (because this node was out) escapes it.
//!
//! **The barrier.** Destroys, key state changes (revoke, compromise), access and trust changes,
//! user removal and role changes, restores and zeroization return only when every other live
//! node has acknowledged the commit sequence number read after the change committed, or its
//! lease has expired ([`Node::barrier`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bulwark_core::store::Store as _;
use bulwark_store_pg::cluster::ClusterView;
use bulwark_store_pg::PgStore;
use tonic::Status;

use crate::state::HsmState;

/// Operations after which the caller waits for every live node ([`Node::barrier`]).
pub const BARRIER_OPS: &[&str] = &[
    "destroy-key",
    "change-key-state",
    "set-key-access",
    "set-key-trusted",
    "delete-user",
    "set-user-role",
    "restore",
    "zeroize",
    "p11-destroy-object",
    "p11-set-attributes",
];

/// One cluster node's membership.
pub struct Node {
    pg: Arc<PgStore>,
    id: String,
    endpoint: std::sync::RwLock<String>,
    lease: Duration,
    start: Instant,
    /// Serving deadline, ns since `start` (0: not serving).
    serving_until: AtomicU64,
    /// The commit sequence number last acknowledged.
    applied: AtomicU64,
    /// Times the lease lapsed (for status and metrics).
    lapses: AtomicU64,
    stop: AtomicBool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish_non_exhaustive()
    }
}

/// What `bulwark cluster status` shows.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: String,
    /// Whether this node serves now.
    pub serving: bool,
    /// The commit sequence number this node acknowledged last.
    pub applied: u64,
    /// How often its lease lapsed since it started.
    pub lapses: u64,
    /// The database's view.
    pub view: ClusterView,
}

impl Node {
    /// A node of the cluster on `pg`.
    pub fn new(pg: Arc<PgStore>, id: String, endpoint: String, lease: Duration) -> Self {
        Self {
            pg,
            id,
            endpoint: std::sync::RwLock::new(endpoint),
            lease: lease.max(Duration::from_millis(500)),
            start: Instant::now(),
            serving_until: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            lapses: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The database.
    pub fn pg(&self) -> &Arc<PgStore> {
        &self.pg
    }

    /// Sets the endpoint shown for this node when none was configured.
    pub fn set_endpoint_if_empty(&self, e: String) {
        let mut cur = self.endpoint.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cur.is_empty() {
            *cur = e;
        }
    }

    fn endpoint(&self) -> String {
        self.endpoint.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether this node holds a lease it may serve under now.
    pub fn serving(&self) -> bool {
        self.now_ns() < self.serving_until.load(Ordering::Acquire)
    }

    /// UNAVAILABLE unless [`Node::serving`].
    pub fn check(&self) -> Result<(), Status> {
        if self.serving() {
            return Ok(());
        }
        Err(Status::unavailable(
            "this cluster node is not serving: its lease lapsed or it has not caught up with \
             the cluster yet; use another node or retry",
        ))
    }

    /// Starts the lease thread; it ends when [`Node::shutdown`] is called or the state is
    /// dropped.
    pub fn spawn(self: &Arc<Self>, state: Weak<HsmState>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name(format!("bulwarkd-lease-{}", self.id))
            .spawn(move || me.run(&state))
            .map(|_| ())
    }

    /// Stops the lease thread and gives the lease up (writers stop waiting for this node).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.serving_until.store(0, Ordering::Release);
        if let Err(e) = self.pg.drop_lease(&self.id) {
            tracing::warn!(error = %e, "cannot give the cluster lease up");
        }
    }

    fn run(&self, state: &Weak<HsmState>) {
        let mut listener = None;
        let mut registered = false;
        let mut last_error: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            let Some(st) = state.upgrade() else { break };
            if st.is_sealed() {
                self.serving_until.store(0, Ordering::Release);
                if registered {
                    let _ = self.pg.drop_lease(&self.id);
                    registered = false;
                }
                drop(st);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let r = self.round(&st, !registered);
            drop(st);
            if let Err(e) = r {
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::error!(error = %e, node = %self.id, "cluster lease not renewed");
                    last_error = Some(Instant::now());
                }
                listener = None;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            registered = true;
            let wait = self.lease / 4;
            if listener.is_none() {
                listener = self.pg.change_listener().ok();
            }
            match listener.as_mut() {
                Some(l) => {
                    if l.wait(wait).is_err() {
                        listener = None;
                    }
                }
                None => std::thread::sleep(wait.min(Duration::from_millis(200))),
            }
        }
        if registered && !self.stop.load(Ordering::Acquire) {
            let _ = self.pg.drop_lease(&self.id);
        }
    }

    /// Applies what was committed, then renews the lease acknowledging it.
    fn round(&self, st: &HsmState, first: bool) -> bulwark_core::Result<()> {
        let was_serving = self.serving();
        if !was_serving && !first && self.serving_until.load(Ordering::Acquire) != 0 {
            self.lapses.fetch_add(1, Ordering::Relaxed);
            self.serving_until.store(0, Ordering::Release);
            tracing::warn!(node = %self.id, "cluster lease lapsed: not serving until caught up");
        }
        let t0 = self.now_ns();
        let seq = self.pg.commit_seq()?;
        if first || !was_serving || seq != self.applied.load(Ordering::Acquire) {
            apply(st)?;
        }
        let generation = self.pg.header()?.generation;
        let endpoint = self.endpoint();
        self.pg.renew_lease(&self.id, &endpoint, self.lease, seq, generation, first)?;
        self.applied.store(seq, Ordering::Release);
        if !was_serving {
            // Our lease is visible from here on, so writers wait for us; whatever committed
            // while we were out is applied before we serve.
            let seq2 = self.pg.commit_seq()?;
            if seq2 != seq {
                apply(st)?;
                self.pg.renew_lease(&self.id, &endpoint, self.lease, seq2, generation, false)?;
                self.applied.store(seq2, Ordering::Release);
            }
            tracing::info!(node = %self.id, seq = seq2, "cluster node serving");
        }
        let margin = self.lease / 5;
        let until =
            t0 + u64::try_from(self.lease.saturating_sub(margin).as_nanos()).unwrap_or(u64::MAX);
        self.serving_until.store(until, Ordering::Release);
        Ok(())
    }

    /// Waits until every other live node has acknowledged the commits made so far, or its
    /// lease expired. Blocking.
    pub fn barrier(&self) -> bulwark_core::Result<()> {
        let seq = self.pg.commit_seq()?;
        let deadline = Instant::now() + self.lease * 3;
        let mut pause = Duration::from_millis(1);
        loop {
            let lagging = self.pg.lagging_nodes(seq, &self.id)?;
            if lagging.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::error!(
                    nodes = ?lagging,
                    seq,
                    "cluster nodes neither acknowledged a change nor let their lease expire"
                );
                return Ok(());
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// This node's cluster gauges for `/metrics` (local state only: no database query).
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let id = &self.id;
        let _ = writeln!(
            out,
            "# HELP bulwark_cluster_serving 1 while this node holds a lease it serves under."
        );
        let _ = writeln!(out, "# TYPE bulwark_cluster_serving gauge");
        let _ =
            writeln!(out, "bulwark_cluster_serving{{node=\"{id}\"}} {}", u8::from(self.serving()));
        let _ = writeln!(
            out,
            "# HELP bulwark_cluster_applied_seq Commit sequence number this node acknowledged."
        );
        let _ = writeln!(out, "# TYPE bulwark_cluster_applied_seq gauge");
        let _ = writeln!(
            out,
            "bulwark_cluster_applied_seq{{node=\"{id}\"}} {}",
            self.applied.load(Ordering::Acquire)
        );
        let _ = writeln!(
            out,
            "# HELP bulwark_cluster_lease_lapses_total Times this node's lease lapsed."
        );
        let _ = writeln!(out, "# TYPE bulwark_cluster_lease_lapses_total counter");
        let _ = writeln!(
            out,
            "bulwark_cluster_lease_lapses_total{{node=\"{id}\"}} {}",
            self.lapses.load(Ordering::Relaxed)
        );
        out
    }

    /// The cluster as the database sees it, and this node's own state.
    pub fn status(&self) -> bulwark_core::Result<NodeStatus> {
        Ok(NodeStatus {
            node_id: self.id.clone(),
            serving: self.serving(),
            applied: self.applied.load(Ordering::Acquire),
            lapses: self.lapses.load(Ordering::Relaxed),
            view: self.pg.cluster_view()?,
        })
    }
}

/// Brings the node's kernel and caches up to date with the store.
fn apply(st: &HsmState) -> bulwark_core::Result<()> {
    let actor = bulwark_core::audit::Actor {
        name: "bulwarkd".into(),
        role: "system".into(),
        client: "cluster catch-up".into(),
    };
    let r = bulwark_core::audit::with_actor(actor, || st.token.catch_up());
    st.labels.clear();
    r
}
