//! The PKCS#11 remote-slot service (`bulwark.p11.v1.Token`): what `libbulwark_pkcs11.so` calls
//! for a slot configured with an endpoint. Each RPC mirrors one method of core's `Hsm` trait and
//! runs on the daemon's one token, after the same authentication as every other service
//! ([`authorize`]: bearer token, seal check, audited refusals).
//!
//! Every request runs as the caller's principal and login ([`bulwark_core::kernel::as_caller`]),
//! and the token decides everything: which objects the caller sees (session objects belong to
//! the login that made them and are invisible to every other), which keys it may use (crypto
//! officers: all; crypto users: their grants and their own session objects), what it may create
//! or change (crypto users: session objects only), and that copies never grant more than their
//! source. The gate runs on every call — Sign, Encrypt... — the client's Prepare is never
//! trusted.
//!
//! What this layer adds, because one token serves many clients: the client's PKCS#11 session
//! handle is mapped, per bearer token, to a fresh daemon-wide session id, so session objects
//! die with their session, with the login (Logout), or when the login expires (swept on every
//! request and every 30 s), and a crashed client leaks nothing for longer than the session TTL.
//! Keys with `CKA_ALWAYS_AUTHENTICATE` need a context login — the bearer token of a fresh,
//! otherwise unused password login of the same user over the same TLS identity — with each
//! Sign / Decrypt.
//!
//! This module must never call the token's login, logout, lock or PIN methods: the token's
//! login state is the daemon's unseal state. Logs name operations and users, never data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::hsm::Hsm as _;
use bulwark_core::kernel::Role;
use bulwark_core::token::{SessionId, Usage, SESSION_HANDLE_BASE};
use bulwark_core::Error;
use bulwark_proto::p11::v1::token_server::Token as TokenRpc;
use bulwark_proto::p11::v1::{self as pb};
use bulwark_proto::p11::{
    attr_to_pb, keygen_from_ck, mechanism_from_pb, status_with_error, template_from_pb,
    usage_from_pb, with_error,
};
use tonic::{Request, Response, Status};

use crate::service::{authorize, connection_identity, ANY, USE};
use crate::state::{HsmState, Session};

/// Largest random request.
const MAX_RANDOM: u32 = bulwark_core::limits::MAX_RANDOM as u32;
/// How often expired logins are swept without traffic.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The session objects of one login (bearer token).
#[derive(Debug)]
struct Login {
    expires: Instant,
    /// Client session handle → daemon session id.
    sessions: HashMap<u64, SessionId>,
}

/// Which session objects belong to which login. Keys are SHA-256 digests of bearer tokens.
#[derive(Debug, Default)]
struct Registry {
    logins: Mutex<HashMap<[u8; 32], Login>>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// Registers a login the first time it is seen (it expires at most one TTL from now: the
    /// bearer session was opened before); then also returns the daemon sessions of logins that
    /// have expired, for the caller to close.
    fn touch(&self, bearer: &[u8; 32], ttl: Duration) -> Vec<SessionId> {
        let now = Instant::now();
        let mut l = lock(&self.logins);
        if l.contains_key(bearer) {
            // The hot path: O(1). Expired logins are swept when a new one registers and by the
            // periodic task.
            return Vec::new();
        }
        let mut dead = Vec::new();
        l.retain(|_, v| {
            let alive = v.expires > now;
            if !alive {
                dead.extend(v.sessions.values().copied());
            }
            alive
        });
        l.entry(*bearer).or_insert_with(|| Login { expires: now + ttl, sessions: HashMap::new() });
        dead
    }

    fn sweep(&self) -> Vec<SessionId> {
        let now = Instant::now();
        let mut dead = Vec::new();
        lock(&self.logins).retain(|_, v| {
            let alive = v.expires > now;
            if !alive {
                dead.extend(v.sessions.values().copied());
            }
            alive
        });
        dead
    }

    /// The daemon session for a client session of this login (allocated on first use).
    fn session(&self, bearer: &[u8; 32], client: u64) -> Result<SessionId, Status> {
        let mut l = lock(&self.logins);
        let login = l.get_mut(bearer).ok_or_else(|| Status::unauthenticated("login required"))?;
        Ok(*login
            .sessions
            .entry(client)
            .or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed) + 1))
    }

    /// Forgets a client session; returns its daemon session id, if it had one.
    fn close(&self, bearer: &[u8; 32], client: u64) -> Option<SessionId> {
        let mut l = lock(&self.logins);
        let login = l.get_mut(bearer)?;
        login.sessions.remove(&client)
    }

    /// Forgets a login; returns its daemon session ids.
    fn drop_login(&self, bearer: &[u8; 32]) -> Vec<SessionId> {
        lock(&self.logins)
            .remove(bearer)
            .map(|l| l.sessions.into_values().collect())
            .unwrap_or_default()
    }
}

/// The caller of one request.
struct Caller {
    bearer: [u8; 32],
    session: Session,
    /// The TLS identity of the connection.
    identity: String,
    reg: Arc<Registry>,
}

/// The `Token` service over the daemon's state.
#[derive(Clone, Debug)]
pub struct TokenService {
    state: Arc<HsmState>,
    reg: Arc<Registry>,
}

fn bearer_of<T>(req: &Request<T>) -> Option<&str> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    out
}

/// A core error from the token as a status that carries it. A token found locked was sealed
/// under us: that is the sealed status, not "not logged in".
fn fail(e: &Error) -> Status {
    match e {
        Error::UserNotLoggedIn => bulwark_proto::sealed(),
        Error::Integrity(_) | Error::Rollback { .. } | Error::Internal(_) | Error::Store(_) => {
            tracing::error!(error = %e, "PKCS#11 operation failed");
            status_with_error(e)
        }
        e => status_with_error(e),
    }
}

impl Caller {
    /// A key with `CKA_ALWAYS_AUTHENTICATE` signs or decrypts only with a context login: the
    /// bearer token of a fresh, otherwise unused password login of the same user over the same
    /// TLS identity, which this call spends (one use). Enforced here, not only in the module,
    /// so that a modified client cannot skip it.
    fn context_login(&self, st: &HsmState, h: u64, token: &str) -> Result<(), Status> {
        let always = st.token.attribute(h, AttrType::AlwaysAuthenticate).map_err(|e| fail(&e))?
            == AttrValue::Bool(true);
        if !always {
            return Ok(());
        }
        if !token.is_empty() && st.take_context_login(token, &self.identity, self.session.user_id) {
            return Ok(());
        }
        tracing::warn!(user = %self.session.user, "context-specific login missing");
        Err(with_error(
            Status::failed_precondition("this key needs a context-specific login"),
            &Error::UserNotLoggedIn,
        ))
    }

    fn sid(&self, client: u64) -> Result<SessionId, Status> {
        self.reg.session(&self.bearer, client)
    }
}

impl TokenService {
    /// The service. Starts a task that sweeps expired logins (ends with the state).
    pub fn new(state: Arc<HsmState>) -> Self {
        let reg = Arc::new(Registry::default());
        let (weak_state, weak_reg): (Weak<HsmState>, Weak<Registry>) =
            (Arc::downgrade(&state), Arc::downgrade(&reg));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_EVERY);
                loop {
                    tick.tick().await;
                    let (Some(st), Some(reg)) = (weak_state.upgrade(), weak_reg.upgrade()) else {
                        break;
                    };
                    for sid in reg.sweep() {
                        st.token.close_session(sid);
                    }
                }
            });
        }
        Self { state, reg }
    }

    /// Authenticates, then runs `f` on the worker pool as the caller.
    async fn call<T, R, F>(
        &self,
        req: Request<T>,
        roles: &[Role],
        op: &'static str,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnOnce(&HsmState, &Caller, T) -> Result<R, Status> + Send + 'static,
    {
        let (session, actor) = authorize(&self.state, &req, roles, op).await?;
        let bearer = digest(bearer_of(&req).unwrap_or_default());
        let identity = connection_identity(&req);
        let caller = Caller { bearer, session, identity, reg: self.reg.clone() };
        let msg = req.into_inner();
        let ttl = self.state.session_ttl;
        self.state
            .run(op, actor, move |st| {
                for sid in caller.reg.touch(&caller.bearer, ttl) {
                    st.token.close_session(sid);
                }
                f(st, &caller, msg)
            })
            .await
            .map(Response::new)
    }
}

fn mech(m: Option<&pb::Mechanism>) -> Result<bulwark_core::mechanism::Mechanism, Status> {
    let m = m.ok_or_else(|| status_with_error(&Error::MechanismInvalid(0)))?;
    mechanism_from_pb(m).map_err(|e| status_with_error(&e))
}

fn template(t: &[pb::Attribute]) -> Result<Vec<(AttrType, AttrValue)>, Status> {
    template_from_pb(t).map_err(|e| status_with_error(&e))
}

#[tonic::async_trait]
impl TokenRpc for TokenService {
    async fn find(
        &self,
        req: Request<pb::FindRequest>,
    ) -> Result<Response<pb::FindResponse>, Status> {
        self.call(req, ANY, "p11-find", |st, _, r| {
            let t = template(&r.template)?;
            // The token returns only what this caller may see.
            let handles = st.token.find(&t).map_err(|e| fail(&e))?;
            Ok(pb::FindResponse { handles })
        })
        .await
    }

    async fn get_attributes(
        &self,
        req: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::AttributesResponse>, Status> {
        self.call(req, ANY, "p11-get-attributes", |st, _, r| {
            let a = st.token.object_info(r.handle).map_err(|e| fail(&e))?.attrs;
            Ok(pb::AttributesResponse {
                attributes: a.iter().map(|(k, v)| attr_to_pb(k, v)).collect(),
            })
        })
        .await
    }

    async fn get_attribute(
        &self,
        req: Request<pb::GetAttributeRequest>,
    ) -> Result<Response<pb::AttributesResponse>, Status> {
        self.call(req, ANY, "p11-get-attribute", |st, _, r| {
            let t = AttrType::from_raw(r.r#type)
                .ok_or_else(|| status_with_error(&Error::AttributeTypeInvalid(r.r#type)))?;
            // Reading key bytes is an export: the token checks it like a wrap of the key.
            let v = st.token.attribute(r.handle, t).map_err(|e| fail(&e))?;
            Ok(pb::AttributesResponse { attributes: vec![attr_to_pb(t, &v)] })
        })
        .await
    }

    async fn create_object(
        &self,
        req: Request<pb::CreateObjectRequest>,
    ) -> Result<Response<pb::HandleResponse>, Status> {
        self.call(req, USE, "p11-create-object", |st, c, r| {
            let t = template(&r.template)?;
            let sid = c.sid(r.session)?;
            let h = st.token.create_object(&t, sid).map_err(|e| fail(&e))?;
            if h < SESSION_HANDLE_BASE {
                st.labels.clear();
            }
            Ok(pb::HandleResponse { handle: h })
        })
        .await
    }

    async fn copy_object(
        &self,
        req: Request<pb::CopyObjectRequest>,
    ) -> Result<Response<pb::HandleResponse>, Status> {
        self.call(req, USE, "p11-copy-object", |st, c, r| {
            let t = template(&r.template)?;
            let sid = c.sid(r.session)?;
            // Copying needs the right to manage the source; the copy inherits its grants.
            let h = st.token.copy_object(r.handle, &t, sid).map_err(|e| fail(&e))?;
            if h < SESSION_HANDLE_BASE {
                st.labels.clear();
            }
            Ok(pb::HandleResponse { handle: h })
        })
        .await
    }

    async fn destroy_object(
        &self,
        req: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.call(req, USE, "p11-destroy-object", |st, _, r| {
            st.token.destroy_object(r.handle).map_err(|e| fail(&e))?;
            if r.handle < SESSION_HANDLE_BASE {
                st.labels.clear();
            }
            Ok(pb::Empty {})
        })
        .await
    }

    async fn set_attributes(
        &self,
        req: Request<pb::SetAttributesRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.call(req, ANY, "p11-set-attributes", |st, _, r| {
            let t = template(&r.template)?;
            st.token.set_attributes(r.handle, &t).map_err(|e| fail(&e))?;
            if r.handle < SESSION_HANDLE_BASE {
                st.labels.clear();
            }
            Ok(pb::Empty {})
        })
        .await
    }

    async fn close_session(
        &self,
        req: Request<pb::SessionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.call(req, ANY, "p11-close-session", |st, c, r| {
            if let Some(sid) = c.reg.close(&c.bearer, r.session) {
                st.token.close_session(sid);
            }
            Ok(pb::Empty {})
        })
        .await
    }

    async fn prepare(
        &self,
        req: Request<pb::KeyRequest>,
    ) -> Result<Response<pb::PrepareResponse>, Status> {
        self.call(req, USE, "p11-prepare", |st, _, r| {
            let usage = usage_from_pb(r.usage).map_err(|e| status_with_error(&e))?;
            let m = mech(r.mechanism.as_ref())?;
            let k = st.token.prepare(r.handle, usage, &m).map_err(|e| fail(&e))?;
            Ok(pb::PrepareResponse {
                signature_len: k.signature_len(&m) as u64,
                encrypt_len_fixed: k.encrypt_len(&m, 0) as u64,
                decrypt_len_fixed: k.decrypt_len_max(&m, 0) as u64,
                always_authenticate: k.always_authenticate().unwrap_or(false),
            })
        })
        .await
    }

    async fn sign(
        &self,
        req: Request<pb::DataRequest>,
    ) -> Result<Response<pb::DataResponse>, Status> {
        self.call(req, USE, "p11-sign", |st, c, r| {
            let m = mech(r.mechanism.as_ref())?;
            c.context_login(st, r.handle, &r.context_login)?;
            let data = st.token.sign(r.handle, &m, &r.data).map_err(|e| fail(&e))?;
            Ok(pb::DataResponse { data })
        })
        .await
    }

    async fn verify(&self, req: Request<pb::VerifyRequest>) -> Result<Response<pb::Empty>, Status> {
        self.call(req, USE, "p11-verify", |st, _, r| {
            let m = mech(r.mechanism.as_ref())?;
            st.token.verify(r.handle, &m, &r.data, &r.signature).map_err(|e| fail(&e))?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn encrypt(
        &self,
        req: Request<pb::DataRequest>,
    ) -> Result<Response<pb::DataResponse>, Status> {
        self.call(req, USE, "p11-encrypt", |st, _, r| {
            let m = mech(r.mechanism.as_ref())?;
            let data = st.token.encrypt(r.handle, &m, &r.data).map_err(|e| fail(&e))?;
            Ok(pb::DataResponse { data })
        })
        .await
    }

    async fn decrypt(
        &self,
        req: Request<pb::DataRequest>,
    ) -> Result<Response<pb::DataResponse>, Status> {
        self.call(req, USE, "p11-decrypt", |st, c, r| {
            let m = mech(r.mechanism.as_ref())?;
            c.context_login(st, r.handle, &r.context_login)?;
            let pt = st.token.decrypt(r.handle, &m, &r.data).map_err(|e| fail(&e))?;
            Ok(pb::DataResponse { data: pt.expose_secret().to_vec() })
        })
        .await
    }

    async fn encapsulate(
        &self,
        req: Request<pb::KeyRequest>,
    ) -> Result<Response<pb::EncapsulateResponse>, Status> {
        self.call(req, USE, "p11-encapsulate", |st, _, r| {
            let m = mech(r.mechanism.as_ref())?;
            let k = st.token.prepare(r.handle, Usage::Encapsulate, &m).map_err(|e| fail(&e))?;
            let (ciphertext, secret) = k.encapsulate().map_err(|e| fail(&e))?;
            Ok(pb::EncapsulateResponse {
                ciphertext,
                shared_secret: secret.expose_secret().to_vec(),
            })
        })
        .await
    }

    async fn decapsulate(
        &self,
        req: Request<pb::DataRequest>,
    ) -> Result<Response<pb::DataResponse>, Status> {
        self.call(req, USE, "p11-decapsulate", |st, _, r| {
            let m = mech(r.mechanism.as_ref())?;
            let k = st.token.prepare(r.handle, Usage::Decapsulate, &m).map_err(|e| fail(&e))?;
            let secret = k.decapsulate(&r.data).map_err(|e| fail(&e))?;
            Ok(pb::DataResponse { data: secret.expose_secret().to_vec() })
        })
        .await
    }

    async fn generate_key(
        &self,
        req: Request<pb::GenerateKeyRequest>,
    ) -> Result<Response<pb::HandleResponse>, Status> {
        self.call(req, USE, "p11-generate-key", |st, c, r| {
            let m = keygen_from_ck(r.ckm).map_err(|e| status_with_error(&e))?;
            let t = template(&r.template)?;
            let sid = c.sid(r.session)?;
            let h = st.token.generate_key(m, &t, sid).map_err(|e| fail(&e))?;
            if h < SESSION_HANDLE_BASE {
                st.labels.clear();
            }
            Ok(pb::HandleResponse { handle: h })
        })
        .await
    }

    async fn generate_key_pair(
        &self,
        req: Request<pb::GenerateKeyPairRequest>,
    ) -> Result<Response<pb::KeyPairResponse>, Status> {
        self.call(req, USE, "p11-generate-key-pair", |st, c, r| {
            let m = keygen_from_ck(r.ckm).map_err(|e| status_with_error(&e))?;
            let (pt, vt) = (template(&r.public_template)?, template(&r.private_template)?);
            let sid = c.sid(r.session)?;
            let (p, v) = st.token.generate_key_pair(m, &pt, &vt, sid).map_err(|e| fail(&e))?;
            if p < SESSION_HANDLE_BASE || v < SESSION_HANDLE_BASE {
                st.labels.clear();
            }
            Ok(pb::KeyPairResponse { public_handle: p, private_handle: v })
        })
        .await
    }

    async fn wrap_key(
        &self,
        req: Request<pb::WrapKeyRequest>,
    ) -> Result<Response<pb::DataResponse>, Status> {
        self.call(req, USE, "p11-wrap-key", |st, _, r| {
            if st.approvals.is_some() {
                // Key export under wrap is quorum-gated on this HSM, and PKCS#11 cannot carry
                // approvals: it goes through `bulwark key wrap --approval ...` (ExportKey).
                return Err(fail(&bulwark_core::Error::ActionProhibited(
                    "key export under wrap needs quorum approvals on this HSM (bulwark key wrap)",
                )));
            }
            let m = mech(r.mechanism.as_ref())?;
            // The token checks the wrapping key's use and that the target may leave (a crypto
            // user needs an export grant on it; the store policy may demand a trusted key).
            let data = st.token.wrap_key(r.wrapping, &m, r.target).map_err(|e| fail(&e))?;
            Ok(pb::DataResponse { data })
        })
        .await
    }

    async fn unwrap_key(
        &self,
        req: Request<pb::UnwrapKeyRequest>,
    ) -> Result<Response<pb::HandleResponse>, Status> {
        self.call(req, USE, "p11-unwrap-key", |st, c, r| {
            let m = mech(r.mechanism.as_ref())?;
            let t = template(&r.template)?;
            let sid = c.sid(r.session)?;
            let h =
                st.token.unwrap_key(r.unwrapping, &m, &r.wrapped, &t, sid).map_err(|e| fail(&e))?;
            if h < SESSION_HANDLE_BASE {
                st.labels.clear();
            }
            Ok(pb::HandleResponse { handle: h })
        })
        .await
    }

    async fn derive_key(
        &self,
        req: Request<pb::DeriveKeyRequest>,
    ) -> Result<Response<pb::HandleResponse>, Status> {
        self.call(req, USE, "p11-derive-key", |st, c, r| {
            let m = mech(r.mechanism.as_ref())?;
            let t = template(&r.template)?;
            let sid = c.sid(r.session)?;
            let h = st.token.derive_key(r.base, &m, &t, sid).map_err(|e| fail(&e))?;
            if h < SESSION_HANDLE_BASE {
                st.labels.clear();
            }
            Ok(pb::HandleResponse { handle: h })
        })
        .await
    }

    async fn random(
        &self,
        req: Request<pb::RandomRequest>,
    ) -> Result<Response<pb::DataResponse>, Status> {
        let n = req.get_ref().length;
        if n > MAX_RANDOM {
            return Err(status_with_error(&Error::DataLenRange));
        }
        self.call(req, ANY, "p11-random", move |st, _, _| {
            let mut data = vec![0u8; n as usize];
            st.token.random(&mut data).map_err(|e| fail(&e))?;
            Ok(pb::DataResponse { data })
        })
        .await
    }

    async fn logout(&self, req: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        let Some(token) = bearer_of(&req).map(str::to_owned) else {
            return Ok(Response::new(pb::Empty {}));
        };
        let bearer = digest(&token);
        let sids = self.reg.drop_login(&bearer);
        for sid in sids {
            self.state.token.close_session(sid);
        }
        self.state.close_session(&token);
        Ok(Response::new(pb::Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_sessions_belong_to_one_login_and_expire_with_it() {
        let r = Registry::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert!(r.touch(&a, Duration::ZERO).is_empty());
        let s1 = r.session(&a, 7).unwrap();
        assert_eq!(r.session(&a, 7).unwrap(), s1);
        assert!(r.session(&b, 7).is_err(), "unknown login");
        // Login a expired (TTL zero): the next request of anyone reports its sessions.
        let dead = r.touch(&b, Duration::from_secs(60));
        assert_eq!(dead, vec![s1]);
        // Daemon session ids are unique across logins, even for equal client handles.
        let s2 = r.session(&b, 7).unwrap();
        assert_ne!(s1, s2);
        assert_eq!(r.close(&b, 7), Some(s2));
        assert_eq!(r.close(&b, 7), None);
        let s3 = r.session(&b, 8).unwrap();
        assert_eq!(r.drop_login(&b), vec![s3]);
        assert!(r.sweep().is_empty());
    }
}
