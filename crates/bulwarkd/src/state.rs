//! The daemon's HSM state: the token (the only holder of the master key in this process, and
//! the security kernel: users, roles, grants, lockouts and approvals live in its store), the
//! seal state and unseal attempt, sessions, and the bounded worker pool that runs every
//! cryptographic or Argon2id computation off the async reactor.
//!
//! A session is a bearer token bound to the TLS identity (client certificate digest, or the
//! unix peer) that logged in: the token is refused over any other connection identity. Each
//! request runs as its session's principal ([`bulwark_core::kernel::as_caller`]); every
//! decision about what it may do is the token's.
//!
//! Seal state is one `RwLock<bool>`-free design: `sealed` is an atomic read on every request;
//! `unseal` and `seal` take the `unsealer` mutex, so the two transitions are serialized. A key
//! operation that races with `seal` finds the token locked and fails with "sealed" as well.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::NodeToken as Token;
use aws_lc_rs::digest;
use bulwark_core::audit::{self, Actor, AuditEvent};
use bulwark_core::kernel::{Caller, Principal, Role, UserId};
use bulwark_core::seal::{Progress, QuorumPolicy, Share, UnsealError, Unsealer};
use tokio::sync::Semaphore;
use tonic::Status;

/// A logged-in session.
#[derive(Clone, Debug)]
pub struct Session {
    /// User name.
    pub user: String,
    /// The user's permanent id.
    pub user_id: UserId,
    /// Role at login (the token re-reads the current one for every decision).
    pub role: Role,
    /// The TLS identity (or unix peer) the session is bound to.
    identity: String,
    /// The login that owns the session objects made in this session.
    pub login: u64,
    expires: Instant,
    created: Instant,
    /// Whether the session has served a request (a context login must be unused).
    used: bool,
}

impl Session {
    /// The caller for the token.
    pub fn caller(&self, client: String) -> Caller {
        Caller {
            principal: Principal { id: self.user_id, name: self.user.clone(), role: self.role },
            login: self.login,
            client,
        }
    }
}

/// Requests with at most this much data run their key operation on the calling task
/// ([`HsmState::run_inline`]); larger ones on the blocking pool.
pub const INLINE_MAX: usize = 16 * 1024;

/// Who a request runs as: an authenticated caller, or an unauthenticated actor (status,
/// unseal, login itself) that the token treats as nobody.
#[derive(Clone, Debug)]
pub enum Ctx {
    /// An authenticated session's principal.
    Caller(Caller),
    /// Nobody, recorded under this audit identity.
    Anonymous(Actor),
}

impl From<Actor> for Ctx {
    fn from(a: Actor) -> Self {
        Ctx::Anonymous(a)
    }
}

impl From<Caller> for Ctx {
    fn from(c: Caller) -> Self {
        Ctx::Caller(c)
    }
}

/// Everything a request handler needs.
pub struct HsmState {
    pub(crate) token: Token,
    sealed: AtomicBool,
    unsealer: Mutex<Unsealer>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    pool: Arc<Semaphore>,
    pub(crate) session_ttl: Duration,
    pub(crate) dev_mode: bool,
    pub(crate) labels: crate::keys::LabelCache,
    /// Serializes user administration (and the creation of the TOTP key).
    pub(crate) admin: Mutex<()>,
    /// Operation counters and latencies.
    pub metrics: crate::metrics::Metrics,
    /// Quorum approvals for user changes, if configured.
    pub(crate) approvals: Option<crate::config::ApprovalsConfig>,
    /// Cluster mode: this node's lease (a PostgreSQL store).
    pub(crate) cluster: Option<Arc<crate::cluster::Node>>,
    /// Where scratch files go (beside the store file, or in the node's data directory).
    pub(crate) local_path: std::path::PathBuf,
}

impl std::fmt::Debug for HsmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmState").field("sealed", &self.is_sealed()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn token_digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

impl HsmState {
    /// A sealed HSM over an opened quorum store.
    pub fn new(
        token: Token,
        policy: QuorumPolicy,
        workers: usize,
        session_ttl: Duration,
        dev_mode: bool,
    ) -> Self {
        Self {
            token,
            sealed: AtomicBool::new(true),
            unsealer: Mutex::new(Unsealer::new(policy)),
            sessions: Mutex::new(HashMap::new()),
            pool: Arc::new(Semaphore::new(workers.max(1))),
            session_ttl,
            dev_mode,
            labels: crate::keys::LabelCache::default(),
            admin: Mutex::new(()),
            metrics: crate::metrics::Metrics::default(),
            approvals: None,
            cluster: None,
            local_path: std::path::PathBuf::new(),
        }
    }

    /// A cluster node: `node` keeps the lease; scratch files go beside `local_path`.
    #[must_use]
    pub fn with_cluster(
        mut self,
        node: Option<Arc<crate::cluster::Node>>,
        local_path: std::path::PathBuf,
    ) -> Self {
        self.cluster = node;
        self.local_path = local_path;
        self
    }

    /// This node's cluster membership, if it is a cluster node.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Node>> {
        self.cluster.as_ref()
    }

    /// Where scratch files go.
    pub(crate) fn local_path(&self) -> &std::path::Path {
        &self.local_path
    }

    /// Requires quorum approvals for user changes.
    #[must_use]
    pub fn with_approvals(mut self, a: Option<crate::config::ApprovalsConfig>) -> Self {
        self.approvals = a;
        self
    }

    /// Checks the approvals of a quorum-gated request (no-op when approvals are not configured).
    /// FAILED_PRECONDITION names the digest to sign when there are too few valid approvals.
    pub(crate) fn check_approvals(
        &self,
        op: &str,
        fields: &[&str],
        approvals: &[bulwark_proto::v1::Approval],
        not_after: u64,
    ) -> Result<Vec<String>, Status> {
        let Some(cfg) = &self.approvals else { return Ok(Vec::new()) };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if not_after <= now || not_after > now + 86_400 {
            return Err(bulwark_proto::quorum_required(
                "quorum approval required: approval_not_after must be within the next 24 hours",
            ));
        }
        let store_id =
            self.token.status().map_err(|e| bulwark_proto::status_from_core(&e))?.store_id;
        let digest = bulwark_proto::approval_digest(&store_id, op, fields, not_after)
            .map_err(|e| bulwark_proto::status_from_core(&e))?;
        let mut ok: Vec<String> = Vec::new();
        for a in approvals {
            let Some(ap) = cfg.approvers.iter().find(|x| x.name == a.approver) else { continue };
            let Ok(pk) = hex::decode(&ap.public_key) else { continue };
            let key =
                aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, pk);
            if key.verify(&digest, &a.signature).is_ok() && !ok.contains(&ap.name) {
                ok.push(ap.name.clone());
            }
        }
        if ok.len() < cfg.threshold {
            return Err(bulwark_proto::quorum_required(format!(
                "quorum approval required: {} of the approvers must sign digest {} ({} valid)",
                cfg.threshold,
                hex::encode(digest),
                ok.len()
            )));
        }
        // Single use, recorded in the store (an authenticated record under the rollback
        // protection of the whole store).
        match self.token.use_approval(&digest, not_after, now) {
            Ok(()) => Ok(ok),
            Err(bulwark_core::Error::ActionProhibited(_)) => {
                Err(Status::failed_precondition("these approvals were already used"))
            }
            Err(e) => {
                tracing::error!(error = %e, "used-approvals record");
                Err(bulwark_proto::status_from_core(&e))
            }
        }
    }

    /// Whether the HSM is sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// (progress, threshold, shares) of the current unseal attempt.
    pub fn unseal_progress(&self) -> (u8, u8, u8) {
        let u = lock(&self.unsealer);
        (u.progress(), u.policy().threshold, u.policy().total)
    }

    /// Presents one share. Blocking (may derive keys); run on the pool.
    pub fn unseal(&self, share: Share) -> Result<(bool, u8, u8), UnsealError> {
        let mut u = lock(&self.unsealer);
        if !self.is_sealed() {
            return Err(UnsealError::NotSealed);
        }
        if self.token.is_zeroized() {
            // Refused before the share is even looked at: nothing can be recovered.
            return Err(UnsealError::Core(bulwark_core::Error::Zeroized));
        }
        let need = u.policy().threshold;
        match u.submit(share)? {
            Progress::Pending { have, need } => Ok((true, have, need)),
            Progress::Complete(keys) => {
                let (vault, ik) = *keys;
                self.token.unseal(vault, ik)?;
                self.sealed.store(false, Ordering::Release);
                tracing::warn!("HSM unsealed");
                Ok((false, need, need))
            }
        }
    }

    /// A tracer (debugger) is attached to the daemon: a tamper signal when the store's policy
    /// says so (the token then applies its tamper response).
    pub fn tracer_attached(&self, pid: u32) {
        if self.token.security_policy().tracer_is_tamper {
            self.external_tamper(&format!("tracer attached to bulwarkd (pid {pid})"));
        }
    }

    /// An external tamper signal (SIGUSR1, an enclosure sensor's stand-in): the store's tamper
    /// response applies — `alarm` refuses key service until the security officer clears it,
    /// `zeroize` destroys every key, and the daemon then also drops its sessions and seals.
    /// Blocking (store writes); run off the reactor.
    pub fn external_tamper(&self, why: &str) {
        tracing::error!(reason = why, "tamper signal");
        self.token.tamper_signal(why);
        if self.token.is_zeroized() {
            self.seal();
        }
    }

    /// Seals: wipes the master key and every cached key, ends every session.
    pub fn seal(&self) {
        let mut u = lock(&self.unsealer);
        self.sealed.store(true, Ordering::Release);
        self.token.lock();
        self.labels.clear();
        u.reset();
        lock(&self.sessions).clear();
        tracing::warn!("HSM sealed");
    }

    /// Refuses service while sealed.
    pub fn require_unsealed(&self) -> Result<(), Status> {
        if self.is_sealed() {
            return Err(bulwark_proto::sealed());
        }
        // A cluster node whose lease lapsed may have missed a revocation: it refuses until it
        // has renewed and caught up.
        if let Some(n) = &self.cluster {
            n.check()?;
        }
        Ok(())
    }

    /// Opens a session for `p`, bound to the connection identity `identity`; returns its
    /// bearer token.
    pub fn open_session(&self, p: &Principal, identity: &str) -> Result<String, Status> {
        let mut raw = [0u8; 32];
        // From the provider's DRBG (continuous RNG test included), not through the token: the
        // security officer must be able to log in while a tamper alarm stops key service.
        bulwark_core::crypto::Provider::get()
            .and_then(|p| p.random(&mut raw))
            .map_err(|e| bulwark_proto::status_from_core(&e))?;
        let token = hex::encode(raw);
        let mut s = lock(&self.sessions);
        let now = Instant::now();
        s.retain(|_, v| v.expires > now);
        let login = u64::from_be_bytes(raw[..8].try_into().unwrap_or_default());
        s.insert(
            token_digest(&token),
            Session {
                user: p.name.clone(),
                user_id: p.id,
                role: p.role,
                identity: identity.to_owned(),
                login,
                expires: now + self.session_ttl,
                created: now,
                used: false,
            },
        );
        Ok(token)
    }

    /// The session named by a bearer token, if it is alive and bound to `identity` (a token
    /// presented over another client certificate is no session at all).
    pub fn session(&self, token: &str, identity: &str) -> Option<Session> {
        let mut s = lock(&self.sessions);
        let v = s.get_mut(&token_digest(token))?;
        let bound = subtle::ConstantTimeEq::ct_eq(v.identity.as_bytes(), identity.as_bytes());
        if v.expires <= Instant::now() || !bool::from(bound) {
            return None;
        }
        v.used = true;
        Some(v.clone())
    }

    /// Takes a context login (`C_Login(CKU_CONTEXT_SPECIFIC)` on a remote slot): the bearer
    /// token of a fresh login of `user` over the same identity, never used for anything else,
    /// at most a minute old. It is spent whether or not it fits; a token of another user is
    /// left alone (it is not the caller's to end).
    pub fn take_context_login(&self, token: &str, identity: &str, user: UserId) -> bool {
        let mut s = lock(&self.sessions);
        let key = token_digest(token);
        let Some(v) = s.get(&key) else { return false };
        if v.user_id != user {
            return false;
        }
        let fresh = !v.used
            && v.expires > Instant::now()
            && v.created.elapsed() < Duration::from_secs(60)
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                v.identity.as_bytes(),
                identity.as_bytes(),
            ));
        s.remove(&key);
        fresh
    }

    /// Ends every session of the user `id` (revocation); returns how many.
    pub fn close_sessions_of(&self, id: UserId) -> usize {
        let mut s = lock(&self.sessions);
        let before = s.len();
        s.retain(|_, v| v.user_id != id);
        before - s.len()
    }

    /// Ends a session.
    pub fn close_session(&self, token: &str) {
        lock(&self.sessions).remove(&token_digest(token));
    }

    /// Appends a daemon-level audit record (login, unseal share, seal, user administration,
    /// refusals); token operations are recorded by the token itself, under the actor that
    /// [`HsmState::run`] installs. Blocking (durable append): call it on the pool.
    pub fn audit(&self, actor: &Actor, op: &'static str, result: &'static str, detail: String) {
        if self.token.audit_log().is_some() {
            let ev =
                AuditEvent { actor: actor.clone(), op, result, detail, ..AuditEvent::default() };
            // Names the outbox row of what this request's kernel calls committed, if any.
            if let Err(e) = self.token.record_front_door(&ev) {
                tracing::error!(error = %e, op, "audit append failed");
            }
        }
    }

    /// The audit log as exported JSON lines (for tests and a later audit-export RPC).
    pub fn audit_records(&self) -> Vec<String> {
        self.token
            .audit_log()
            .and_then(|l| l.export_lines(0).ok())
            .unwrap_or_default()
            .iter()
            .filter_map(|l| serde_json::to_string(l).ok())
            .collect()
    }

    /// Runs `f` on the bounded blocking pool (at most `workers` computations at once, never on
    /// the reactor), with `actor` as the identity the token records for what `f` does.
    pub async fn run<T, F>(
        self: &Arc<Self>,
        op: &'static str,
        actor: impl Into<Ctx>,
        f: F,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&HsmState) -> Result<T, Status> + Send + 'static,
    {
        let start = std::time::Instant::now();
        let mut r = self.run_unmetered(actor, f).await;
        if r.is_ok() && crate::cluster::BARRIER_OPS.contains(&op) {
            if let Some(n) = self.cluster.clone() {
                // Returns only once every live node applied the change (or its lease expired).
                let b = tokio::task::spawn_blocking(move || n.barrier()).await;
                if let Ok(Err(e)) | Err(e) = b.map_err(|_| bulwark_core::Error::Internal("barrier"))
                {
                    tracing::error!(error = %e, op, "cluster barrier failed");
                    r = Err(Status::unavailable(
                        "the change was committed, but this node cannot confirm that every \
                         cluster node applied it (database unreachable)",
                    ));
                }
            }
        }
        let result = match &r {
            Ok(_) => "ok",
            Err(st) => crate::metrics::code_name(st.code()),
        };
        self.metrics.observe(op, result, start.elapsed());
        r
    }

    /// [`HsmState::run`] on the calling task, without the hand-off to the blocking pool: for
    /// one key operation on a small message (a signature, a MAC, an AES-GCM block), where the
    /// hand-off (two thread wake-ups and context switches) costs more than the work itself.
    /// Still bounded by the pool's permits; a panic is an internal error, as on the pool. The
    /// slowest such call (an RSA-4096 signature, a few ms) holds one runtime worker meanwhile.
    pub async fn run_inline<T, F>(
        self: &Arc<Self>,
        op: &'static str,
        actor: impl Into<Ctx>,
        f: F,
    ) -> Result<T, Status>
    where
        F: FnOnce(&HsmState) -> Result<T, Status>,
    {
        let start = std::time::Instant::now();
        let permit = self
            .pool
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let ctx = actor.into();
        let me: &HsmState = self;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match ctx {
            Ctx::Caller(c) => bulwark_core::kernel::as_caller(c, || f(me)),
            Ctx::Anonymous(a) => audit::with_actor(a, || f(me)),
        }))
        .unwrap_or_else(|_| Err(Status::internal("internal error")));
        drop(permit);
        let result = match &r {
            Ok(_) => "ok",
            Err(st) => crate::metrics::code_name(st.code()),
        };
        self.metrics.observe(op, result, start.elapsed());
        r
    }

    /// [`HsmState::run_inline`] when `small` (the request's data is at most
    /// [`INLINE_MAX`] bytes), else [`HsmState::run`].
    pub async fn run_small<T, F>(
        self: &Arc<Self>,
        op: &'static str,
        actor: impl Into<Ctx>,
        small: bool,
        f: F,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&HsmState) -> Result<T, Status> + Send + 'static,
    {
        if small {
            self.run_inline(op, actor, f).await
        } else {
            self.run(op, actor, f).await
        }
    }

    /// [`HsmState::run`] without metrics (for paths that record their own result).
    pub(crate) async fn run_unmetered<T, F>(
        self: &Arc<Self>,
        actor: impl Into<Ctx>,
        f: F,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&HsmState) -> Result<T, Status> + Send + 'static,
    {
        let permit = self
            .pool
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let me = self.clone();
        let ctx = actor.into();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match ctx {
                Ctx::Caller(c) => bulwark_core::kernel::as_caller(c, || f(&me)),
                Ctx::Anonymous(a) => audit::with_actor(a, || f(&me)),
            }
        })
        .await
        .map_err(|_| Status::internal("internal error"))?
    }
}
