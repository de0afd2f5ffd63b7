//! The PKCS#11 remote-slot service (`bulwark.p11.v1.Token`): what `libbulwark_pkcs11.so` calls
//! for a slot configured with an endpoint. Each RPC mirrors one method of core's `Hsm` trait and
//! runs on the daemon's one token, after the same authentication as every other service
//! ([`authorize`]: bearer token, seal check, audited refusals).
//!
//! What this layer adds, because one token serves many clients:
//! - **Session objects are per login.** The client's PKCS#11 session handle is mapped, per bearer
//!   token, to a fresh daemon-wide session id; a session object is visible only to the login
//!   that created it, and dies with its session, with the login (Logout), or when the login
//!   expires (swept on every request and every 30 s), so a crashed client leaks nothing for
//!   longer than the session TTL.
//! - **Roles.** Crypto officers have the full PKCS#11 user rights. Crypto users see non-key
//!   objects and the token keys their access lists grant them, use token keys only where
//!   [`key_access`] allows, and may create or change session objects only. Security officers see
//!   public objects only and use no key. Labels starting with `bulwarkd.` are invisible and
//!   cannot be set.
//! - **The gate runs on every call**: Sign, Encrypt... re-check visibility, role and access list
//!   and the token's own policy; the client's Prepare is never trusted. Keys with
//!   `CKA_ALWAYS_AUTHENTICATE` need a context login (a fresh, single-use password login of the
//!   same user) with each Sign / Decrypt.
//!
//! This module must never call the token's login, logout, lock or PIN methods: the token's
//! login state is the daemon's unseal state. Logs name operations and users, never data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bulwark_core::attr::{AttrType, AttrValue, Attributes, ObjectClass};
use bulwark_core::hsm::Hsm as _;
use bulwark_core::template::Template;
use bulwark_core::token::{SessionId, Usage, SESSION_HANDLE_BASE};
use bulwark_core::Error;
use bulwark_proto::p11::v1::token_server::Token as TokenRpc;
use bulwark_proto::p11::v1::{self as pb};
use bulwark_proto::p11::{
    attr_to_pb, keygen_from_ck, mechanism_from_pb, status_with_error, template_from_pb,
    usage_from_pb, with_error,
};
use tonic::{Request, Response, Status};

use crate::keys::RESERVED_PREFIX;
use crate::service::{authorize, key_access, ANY, USE};
use crate::state::{HsmState, Session};
use crate::users::Role;

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
    /// Session-object handle → the daemon session id that owns it.
    objects: HashMap<u64, SessionId>,
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
        l.entry(*bearer).or_insert_with(|| Login {
            expires: now + ttl,
            sessions: HashMap::new(),
            objects: HashMap::new(),
        });
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

    fn owns(&self, bearer: &[u8; 32], h: u64) -> bool {
        lock(&self.logins).get(bearer).is_some_and(|l| l.objects.contains_key(&h))
    }

    fn add_object(&self, bearer: &[u8; 32], h: u64, sid: SessionId) {
        if h >= SESSION_HANDLE_BASE {
            if let Some(l) = lock(&self.logins).get_mut(bearer) {
                l.objects.insert(h, sid);
            }
        }
    }

    fn remove_object(&self, bearer: &[u8; 32], h: u64) {
        if let Some(l) = lock(&self.logins).get_mut(bearer) {
            l.objects.remove(&h);
        }
    }

    /// Forgets a client session; returns its daemon session id, if it had one.
    fn close(&self, bearer: &[u8; 32], client: u64) -> Option<SessionId> {
        let mut l = lock(&self.logins);
        let login = l.get_mut(bearer)?;
        let sid = login.sessions.remove(&client)?;
        login.objects.retain(|_, s| *s != sid);
        Some(sid)
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

fn prohibited(why: &'static str) -> Status {
    status_with_error(&Error::ActionProhibited(why))
}

fn is_key(a: &Attributes) -> bool {
    matches!(
        a.class(),
        Some(ObjectClass::PrivateKey | ObjectClass::SecretKey | ObjectClass::PublicKey)
    )
}

fn wants_token(t: &Template) -> bool {
    t.iter().any(|(k, v)| *k == AttrType::Token && *v == AttrValue::Bool(true))
}

/// Templates may not name reserved labels.
fn check_label(t: &Template) -> Result<(), Status> {
    let reserved = t.iter().any(|(k, v)| {
        *k == AttrType::Label
            && matches!(v, AttrValue::Bytes(b) if b.starts_with(RESERVED_PREFIX.as_bytes()))
    });
    if reserved {
        return Err(status_with_error(&Error::AttributeValueInvalid(AttrType::Label)));
    }
    Ok(())
}

fn usage_op(u: Usage) -> &'static str {
    match u {
        Usage::Sign => "sign",
        Usage::Verify => "verify",
        Usage::Encrypt => "encrypt",
        Usage::Decrypt => "decrypt",
        Usage::Wrap => "wrap",
        Usage::Unwrap => "unwrap",
        Usage::Derive => "derive",
        Usage::Encapsulate => "encapsulate",
        Usage::Decapsulate => "decapsulate",
    }
}

impl Caller {
    /// The attributes of object `h` if this caller may see it; invisible objects are
    /// `ObjectHandleInvalid`, exactly like an object that does not exist.
    fn visible(&self, st: &HsmState, h: u64) -> Result<Attributes, Status> {
        let invisible = || status_with_error(&Error::ObjectHandleInvalid);
        if h >= SESSION_HANDLE_BASE && !self.reg.owns(&self.bearer, h) {
            return Err(invisible());
        }
        let a = st.token.object_info(h).map_err(|e| fail(&e))?.attrs;
        if a.label().starts_with(RESERVED_PREFIX) {
            return Err(invisible());
        }
        match self.session.role {
            Role::CryptoOfficer => Ok(a),
            Role::CryptoUser if h >= SESSION_HANDLE_BASE || !is_key(&a) => Ok(a),
            Role::CryptoUser => {
                let label = a.label();
                let granted = st.users.key_acl(&label).is_some_and(|acl| {
                    ["sign", "verify", "encrypt", "decrypt", "public"]
                        .iter()
                        .any(|op| acl.allows(&self.session.user, self.session.role, op))
                });
                if granted {
                    Ok(a)
                } else {
                    Err(invisible())
                }
            }
            _ if !a.bool_or(AttrType::Private, true) => Ok(a),
            _ => Err(invisible()),
        }
    }

    /// The key gate: key `h` is visible and, for a crypto user's token key, its access list
    /// grants `usage`. The token's own policy (usage flags, allowed mechanisms, dates) runs in
    /// the token call that follows.
    fn gate(&self, st: &HsmState, h: u64, usage: Usage) -> Result<Attributes, Status> {
        let a = self.visible(st, h)?;
        match self.session.role {
            Role::CryptoOfficer => Ok(a),
            Role::CryptoUser if h >= SESSION_HANDLE_BASE => Ok(a),
            Role::CryptoUser => {
                key_access(st, &self.session, &a.label(), usage_op(usage)).map(|()| a).map_err(
                    |s| with_error(s, &Error::KeyFunctionNotPermitted("not in your access list")),
                )
            }
            _ => Err(prohibited("this role uses no keys")),
        }
    }

    /// A key with `CKA_ALWAYS_AUTHENTICATE` signs or decrypts only with a context login: the
    /// bearer token of a fresh password login of the same user, which this call ends (one use).
    /// Enforced here, not only in the module, so that a modified client cannot skip it.
    fn context_login(&self, st: &HsmState, key: &Attributes, token: &str) -> Result<(), Status> {
        if !key.bool_or(AttrType::AlwaysAuthenticate, false) {
            return Ok(());
        }
        let fresh = (!token.is_empty()).then(|| st.session(token)).flatten();
        if !token.is_empty() {
            st.close_session(token);
        }
        match fresh {
            Some(s) if s.user == self.session.user => Ok(()),
            _ => {
                tracing::warn!(user = %self.session.user, "context-specific login missing");
                Err(with_error(
                    Status::failed_precondition("this key needs a context-specific login"),
                    &Error::UserNotLoggedIn,
                ))
            }
        }
    }

    /// Writes to token objects need a crypto officer; session objects are anyone's with a
    /// key-using role.
    fn may_write(&self, token_object: bool) -> Result<(), Status> {
        match self.session.role {
            Role::CryptoOfficer => Ok(()),
            Role::CryptoUser if !token_object => Ok(()),
            Role::CryptoUser => {
                tracing::warn!(user = %self.session.user, "token-object write refused for role");
                Err(prohibited("crypto users may not create, change or destroy token objects"))
            }
            _ => Err(prohibited("this role may not create objects")),
        }
    }

    fn sid(&self, client: u64) -> Result<SessionId, Status> {
        self.reg.session(&self.bearer, client)
    }

    fn created(&self, st: &HsmState, h: u64, sid: SessionId) {
        if h >= SESSION_HANDLE_BASE {
            self.reg.add_object(&self.bearer, h, sid);
        } else {
            st.labels.clear();
        }
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
        let caller = Caller { bearer, session, reg: self.reg.clone() };
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
        self.call(req, ANY, "p11-find", |st, c, r| {
            let t = template(&r.template)?;
            let found = st.token.find(&t).map_err(|e| fail(&e))?;
            let handles = found.into_iter().filter(|h| c.visible(st, *h).is_ok()).collect();
            Ok(pb::FindResponse { handles })
        })
        .await
    }

    async fn get_attributes(
        &self,
        req: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::AttributesResponse>, Status> {
        self.call(req, ANY, "p11-get-attributes", |st, c, r| {
            let a = c.visible(st, r.handle)?;
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
        self.call(req, ANY, "p11-get-attribute", |st, c, r| {
            let t = AttrType::from_raw(r.r#type)
                .ok_or_else(|| status_with_error(&Error::AttributeTypeInvalid(r.r#type)))?;
            let a = c.visible(st, r.handle)?;
            let own = r.handle >= SESSION_HANDLE_BASE;
            if t.is_secret_component() && c.session.role == Role::CryptoUser && !own {
                // Reading key bytes is an export: only a "*" grant allows it.
                key_access(st, &c.session, &a.label(), "export")
                    .map_err(|s| with_error(s, &Error::AttributeSensitive(t)))?;
            }
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
            check_label(&t)?;
            c.may_write(wants_token(&t))?;
            let sid = c.sid(r.session)?;
            let h = st.token.create_object(&t, sid).map_err(|e| fail(&e))?;
            c.created(st, h, sid);
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
            check_label(&t)?;
            let src = c.visible(st, r.handle)?;
            let token_copy = t
                .iter()
                .find(|(k, _)| *k == AttrType::Token)
                .map_or(src.bool_or(AttrType::Token, false), |(_, v)| *v == AttrValue::Bool(true));
            c.may_write(token_copy)?;
            let sid = c.sid(r.session)?;
            let h = st.token.copy_object(r.handle, &t, sid).map_err(|e| fail(&e))?;
            c.created(st, h, sid);
            Ok(pb::HandleResponse { handle: h })
        })
        .await
    }

    async fn destroy_object(
        &self,
        req: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.call(req, USE, "p11-destroy-object", |st, c, r| {
            c.visible(st, r.handle)?;
            c.may_write(r.handle < SESSION_HANDLE_BASE)?;
            st.token.destroy_object(r.handle).map_err(|e| fail(&e))?;
            if r.handle >= SESSION_HANDLE_BASE {
                c.reg.remove_object(&c.bearer, r.handle);
            } else {
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
        self.call(req, USE, "p11-set-attributes", |st, c, r| {
            let t = template(&r.template)?;
            check_label(&t)?;
            c.visible(st, r.handle)?;
            c.may_write(r.handle < SESSION_HANDLE_BASE)?;
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
        self.call(req, USE, "p11-prepare", |st, c, r| {
            let usage = usage_from_pb(r.usage).map_err(|e| status_with_error(&e))?;
            let m = mech(r.mechanism.as_ref())?;
            let key = c.gate(st, r.handle, usage)?;
            let k = st.token.prepare(r.handle, usage, &m).map_err(|e| fail(&e))?;
            Ok(pb::PrepareResponse {
                signature_len: k.signature_len(&m) as u64,
                encrypt_len_fixed: k.encrypt_len(&m, 0) as u64,
                decrypt_len_fixed: k.decrypt_len_max(&m, 0) as u64,
                always_authenticate: key.bool_or(AttrType::AlwaysAuthenticate, false),
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
            let key = c.gate(st, r.handle, Usage::Sign)?;
            c.context_login(st, &key, &r.context_login)?;
            let data = st.token.sign(r.handle, &m, &r.data).map_err(|e| fail(&e))?;
            Ok(pb::DataResponse { data })
        })
        .await
    }

    async fn verify(&self, req: Request<pb::VerifyRequest>) -> Result<Response<pb::Empty>, Status> {
        self.call(req, USE, "p11-verify", |st, c, r| {
            let m = mech(r.mechanism.as_ref())?;
            c.gate(st, r.handle, Usage::Verify)?;
            st.token.verify(r.handle, &m, &r.data, &r.signature).map_err(|e| fail(&e))?;
            Ok(pb::Empty {})
        })
        .await
    }

    async fn encrypt(
        &self,
        req: Request<pb::DataRequest>,
    ) -> Result<Response<pb::DataResponse>, Status> {
        self.call(req, USE, "p11-encrypt", |st, c, r| {
            let m = mech(r.mechanism.as_ref())?;
            c.gate(st, r.handle, Usage::Encrypt)?;
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
            let key = c.gate(st, r.handle, Usage::Decrypt)?;
            c.context_login(st, &key, &r.context_login)?;
            let pt = st.token.decrypt(r.handle, &m, &r.data).map_err(|e| fail(&e))?;
            Ok(pb::DataResponse { data: pt.expose_secret().to_vec() })
        })
        .await
    }

    async fn encapsulate(
        &self,
        req: Request<pb::KeyRequest>,
    ) -> Result<Response<pb::EncapsulateResponse>, Status> {
        self.call(req, USE, "p11-encapsulate", |st, c, r| {
            let m = mech(r.mechanism.as_ref())?;
            c.gate(st, r.handle, Usage::Encapsulate)?;
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
        self.call(req, USE, "p11-decapsulate", |st, c, r| {
            let m = mech(r.mechanism.as_ref())?;
            c.gate(st, r.handle, Usage::Decapsulate)?;
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
            check_label(&t)?;
            c.may_write(wants_token(&t))?;
            let sid = c.sid(r.session)?;
            let h = st.token.generate_key(m, &t, sid).map_err(|e| fail(&e))?;
            c.created(st, h, sid);
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
            check_label(&pt)?;
            check_label(&vt)?;
            c.may_write(wants_token(&pt) || wants_token(&vt))?;
            let sid = c.sid(r.session)?;
            let (p, v) = st.token.generate_key_pair(m, &pt, &vt, sid).map_err(|e| fail(&e))?;
            c.created(st, p, sid);
            c.created(st, v, sid);
            Ok(pb::KeyPairResponse { public_handle: p, private_handle: v })
        })
        .await
    }

    async fn wrap_key(
        &self,
        req: Request<pb::WrapKeyRequest>,
    ) -> Result<Response<pb::DataResponse>, Status> {
        self.call(req, USE, "p11-wrap-key", |st, c, r| {
            if st.approvals.is_some() {
                // Key export under wrap is quorum-gated on this HSM, and PKCS#11 cannot carry
                // approvals: it goes through `bulwark key wrap --approval ...` (ExportKey).
                return Err(fail(&bulwark_core::Error::ActionProhibited(
                    "key export under wrap needs quorum approvals on this HSM (bulwark key wrap)",
                )));
            }
            let m = mech(r.mechanism.as_ref())?;
            c.gate(st, r.wrapping, Usage::Wrap)?;
            // The wrapped key leaves the HSM (encrypted): a crypto user needs "wrap" on it too.
            c.gate(st, r.target, Usage::Wrap)?;
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
            check_label(&t)?;
            c.gate(st, r.unwrapping, Usage::Unwrap)?;
            c.may_write(wants_token(&t))?;
            let sid = c.sid(r.session)?;
            let h =
                st.token.unwrap_key(r.unwrapping, &m, &r.wrapped, &t, sid).map_err(|e| fail(&e))?;
            c.created(st, h, sid);
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
            check_label(&t)?;
            c.gate(st, r.base, Usage::Derive)?;
            c.may_write(wants_token(&t))?;
            let sid = c.sid(r.session)?;
            let h = st.token.derive_key(r.base, &m, &t, sid).map_err(|e| fail(&e))?;
            c.created(st, h, sid);
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
    fn session_objects_belong_to_one_login_and_expire_with_it() {
        let r = Registry::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let (h1, h2) = (SESSION_HANDLE_BASE + 1, SESSION_HANDLE_BASE + 2);
        assert!(r.touch(&a, Duration::ZERO).is_empty());
        let s1 = r.session(&a, 7).unwrap();
        assert_eq!(r.session(&a, 7).unwrap(), s1);
        r.add_object(&a, h1, s1);
        assert!(r.owns(&a, h1));
        assert!(!r.owns(&b, h1), "another login never sees it");
        assert!(r.session(&b, 7).is_err(), "unknown login");
        // Login a expired (TTL zero): the next request of anyone reports its sessions.
        let dead = r.touch(&b, Duration::from_secs(60));
        assert_eq!(dead, vec![s1]);
        assert!(!r.owns(&a, h1));
        // Daemon session ids are unique across logins, even for equal client handles.
        let s2 = r.session(&b, 7).unwrap();
        assert_ne!(s1, s2);
        r.add_object(&b, h2, s2);
        assert_eq!(r.close(&b, 7), Some(s2));
        assert!(!r.owns(&b, h2));
        assert_eq!(r.close(&b, 7), None);
        let s3 = r.session(&b, 8).unwrap();
        assert_eq!(r.drop_login(&b), vec![s3]);
        assert!(r.sweep().is_empty());
    }
}
