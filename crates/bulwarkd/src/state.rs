//! The daemon's HSM state: the token (the only holder of the master key in this process), the
//! seal state and unseal attempt, users, sessions, and the bounded worker pool that runs every
//! cryptographic or Argon2id computation off the async reactor.
//!
//! Seal state is one `RwLock<bool>`-free design: `sealed` is an atomic read on every request;
//! `unseal` and `seal` take the `unsealer` mutex, so the two transitions are serialized. A key
//! operation that races with `seal` finds the token locked and fails with "sealed" as well.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use bulwark_core::audit::{self, Actor, AuditEvent};
use bulwark_core::seal::{Progress, QuorumPolicy, Share, UnsealError, Unsealer};
use bulwark_core::Token;
use tokio::sync::Semaphore;
use tonic::Status;

use crate::users::{Role, Users};

/// A logged-in session.
#[derive(Clone, Debug)]
pub struct Session {
    /// User name.
    pub user: String,
    /// Role.
    pub role: Role,
    expires: Instant,
}

/// Everything a request handler needs.
pub struct HsmState {
    pub(crate) token: Token,
    sealed: AtomicBool,
    unsealer: Mutex<Unsealer>,
    pub(crate) users: Users,
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
        users: Users,
        workers: usize,
        session_ttl: Duration,
        dev_mode: bool,
    ) -> Self {
        Self {
            token,
            sealed: AtomicBool::new(true),
            unsealer: Mutex::new(Unsealer::new(policy)),
            users,
            sessions: Mutex::new(HashMap::new()),
            pool: Arc::new(Semaphore::new(workers.max(1))),
            session_ttl,
            dev_mode,
            labels: crate::keys::LabelCache::default(),
            admin: Mutex::new(()),
            metrics: crate::metrics::Metrics::default(),
            approvals: None,
        }
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
        let mac = |d: &[u8]| self.users_mac(d);
        match self.users.use_approval(&digest, not_after, now, &mac) {
            Ok(true) => Ok(ok),
            Ok(false) => Err(Status::failed_precondition("these approvals were already used")),
            Err(e) => {
                tracing::error!(error = %e, "used-approvals record");
                Err(Status::unavailable("cannot record the use of the approvals"))
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
                self.check_users();
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

    /// HMAC of the user database under the HSM's key (hex).
    pub(crate) fn users_mac(&self, data: &[u8]) -> Result<String, String> {
        crate::keys::users_mac_key(&self.token, false)
            .and_then(|h| crate::keys::hmac_hex(&self.token, h, data))
            .map_err(|e| e.to_string())
    }

    /// After unseal: the user database must authenticate under the HSM's key. A database never
    /// bound to this HSM (first unseal after init, offline bootstrap) is bound now; a bound one
    /// that does not verify, or a bound one whose key is gone, disables every login.
    fn check_users(&self) {
        let key = crate::keys::users_mac_key(&self.token, false);
        let mac = |d: &[u8]| self.users_mac(d);
        let ok = match key {
            Ok(_) => self.users.verify_mac(&mac),
            Err(bulwark_core::Error::NotFound(_)) if !self.users.is_bound() => {
                let bound = crate::keys::users_mac_key(&self.token, true)
                    .map_err(|e| e.to_string())
                    .and_then(|_| self.users.bind(&mac));
                if let Err(e) = &bound {
                    tracing::error!(error = %e, "cannot bind the user database to the HSM");
                }
                bound.is_ok()
            }
            _ => false,
        };
        if !ok {
            tracing::error!("the user database does not authenticate: every login is refused");
            let actor = Actor { name: "-".into(), role: "-".into(), client: "bulwarkd".into() };
            self.audit(&actor, "users-integrity", "integrity", String::new());
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
        Ok(())
    }

    /// Opens a session; returns its bearer token.
    pub fn open_session(&self, user: &str, role: Role) -> Result<String, Status> {
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
        s.insert(
            token_digest(&token),
            Session { user: user.to_owned(), role, expires: now + self.session_ttl },
        );
        Ok(token)
    }

    /// The session named by a bearer token.
    pub fn session(&self, token: &str) -> Option<Session> {
        let s = lock(&self.sessions);
        s.get(&token_digest(token)).filter(|v| v.expires > Instant::now()).cloned()
    }

    /// Ends every session of `user` (revocation); returns how many.
    pub fn close_sessions_of(&self, user: &str) -> usize {
        let mut s = lock(&self.sessions);
        let before = s.len();
        s.retain(|_, v| v.user != user);
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
        if let Some(log) = self.token.audit_log() {
            let ev =
                AuditEvent { actor: actor.clone(), op, result, detail, ..AuditEvent::default() };
            if let Err(e) = log.append(&ev) {
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
        actor: Actor,
        f: F,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&HsmState) -> Result<T, Status> + Send + 'static,
    {
        let start = std::time::Instant::now();
        let r = self.run_unmetered(actor, f).await;
        let result = match &r {
            Ok(_) => "ok",
            Err(st) => crate::metrics::code_name(st.code()),
        };
        self.metrics.observe(op, result, start.elapsed());
        r
    }

    /// [`HsmState::run`] without metrics (for paths that record their own result).
    pub(crate) async fn run_unmetered<T, F>(
        self: &Arc<Self>,
        actor: Actor,
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
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            audit::with_actor(actor, || f(&me))
        })
        .await
        .map_err(|_| Status::internal("internal error"))?
    }
}
