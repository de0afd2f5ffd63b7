//! [`RemoteHsm`]: core's [`Hsm`] trait over the daemon's `bulwark.p11.v1.Token` service, so that
//! a PKCS#11 slot configured with an endpoint behaves like an embedded one.
//!
//! The login state is the application's (one bearer token per slot, shared by its sessions, as
//! PKCS#11 wants). A PIN is `user:password`, or `user:password:otp` for users with a second
//! factor (a final `:` followed by exactly six digits is taken as the code). `CKU_USER` needs a
//! crypto officer or crypto user, `CKU_SO` a security officer. Users and PINs are managed with
//! `bulwark user`: `C_InitPIN` and `C_SetPIN` are `NotSupported` here.
//!
//! Errors come back as the daemon's core error (see `bulwark_proto::p11`), so the module returns
//! the CKR_* an embedded slot would; an unreachable or sealed HSM is `Error::Store`
//! (`CKR_DEVICE_ERROR`).
//! This module holds no key material; the bearer token and PINs live in zeroizing buffers and
//! are never logged.

use std::future::Future;
use std::sync::{Arc, RwLock};

use bulwark_core::attr::{AttrType, AttrValue, Attributes};
use bulwark_core::crypto::{aes_decrypt_len_max, aes_encrypt_len, Provider, PublicKey};
use bulwark_core::hsm::{Hsm, PreparedKey};
use bulwark_core::mechanism::{DigestAlg, KeyGenMechanism, Mechanism};
use bulwark_core::secret::{Pin, SecretBytes};
use bulwark_core::template::Template;
use bulwark_core::token::{SessionId, TokenStatus, Usage};
use bulwark_core::{Error, Result, UserType};
use bulwark_proto::p11::v1::token_client::TokenClient;
use bulwark_proto::p11::v1::{self as pb};
use bulwark_proto::p11::{
    attr_from_pb, error_from_status, mechanism_to_pb, template_to_pb, usage_to_pb,
};
use bulwark_proto::v1::hsm_client::HsmClient;
use bulwark_proto::Reason;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use zeroize::Zeroizing;

use crate::failover::Failover;
use crate::ClientConfig;

/// Largest random request the daemon serves at once.
const RANDOM_CHUNK: usize = 1 << 20;

/// AES cipher mechanisms, whose output lengths follow from the mechanism alone.
fn is_aes(m: &Mechanism) -> bool {
    matches!(
        m,
        Mechanism::AesGcm { .. }
            | Mechanism::AesGcmGenerated { .. }
            | Mechanism::AesCbc { .. }
            | Mechanism::AesCbcPad { .. }
            | Mechanism::AesCbcPadPart { .. }
            | Mechanism::AesCtr { .. }
            | Mechanism::AesEcb
    )
}

type RpcResult<R> = std::result::Result<tonic::Response<R>, tonic::Status>;

struct LoginState {
    kind: UserType,
    user: String,
    bearer: Zeroizing<String>,
}

struct Inner {
    rt: tokio::runtime::Runtime,
    channel: Failover,
    login: RwLock<Option<LoginState>>,
    /// The fresh login of the last `C_Login(CKU_CONTEXT_SPECIFIC)`, for the next Sign or
    /// Decrypt with a `CKA_ALWAYS_AUTHENTICATE` key (the daemon ends it when it is used).
    context: std::sync::Mutex<Option<Zeroizing<String>>>,
    provider: &'static Provider,
}

/// A remote token: the daemon behind `endpoint`, reached over mTLS.
pub struct RemoteHsm {
    inner: Arc<Inner>,
    endpoint: String,
}

impl std::fmt::Debug for RemoteHsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHsm")
            .field("endpoint", &self.endpoint)
            .field("logged_in", &self.logged_in())
            .finish_non_exhaustive()
    }
}

/// A status from the daemon as the core error it carries, or the closest one.
fn core_error(st: &tonic::Status) -> Error {
    if let Some(e) = error_from_status(st) {
        return e;
    }
    match st.code() {
        Code::Unauthenticated => Error::UserNotLoggedIn,
        Code::PermissionDenied => Error::ActionProhibited("not permitted for this role"),
        Code::FailedPrecondition if bulwark_proto::reason(st) == Some(Reason::Sealed) => {
            Error::Store("the HSM is sealed".into())
        }
        Code::DataLoss => Error::Integrity("reported by the HSM"),
        Code::Unimplemented => Error::NotSupported("the HSM does not offer this operation"),
        Code::InvalidArgument => Error::ArgumentsBad("refused by the HSM"),
        Code::NotFound => Error::ObjectHandleInvalid,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
            Error::Store("cannot reach the HSM".into())
        }
        _ => Error::Internal("reported by the HSM"),
    }
}

/// Splits a PIN into (user, password, otp).
fn parse_pin(pin: &Pin) -> Result<(String, Zeroizing<String>, Zeroizing<String>)> {
    let text = std::str::from_utf8(pin.expose_secret()).map_err(|_| Error::PinIncorrect)?;
    let (user, rest) = text.split_once(':').ok_or(Error::PinIncorrect)?;
    if user.is_empty() || rest.is_empty() {
        return Err(Error::PinIncorrect);
    }
    let (password, otp) = match rest.rsplit_once(':') {
        Some((pw, code)) if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) => {
            (pw, code)
        }
        _ => (rest, ""),
    };
    Ok((user.to_owned(), Zeroizing::new(password.to_owned()), Zeroizing::new(otp.to_owned())))
}

impl Inner {
    /// Runs `f` on the client runtime and waits for it. Works from any thread, including one
    /// that is itself inside another tokio runtime (the future never runs on the caller's).
    fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().map_err(|_| Error::Internal("the client runtime stopped"))
    }

    fn bearer(&self) -> Option<Zeroizing<String>> {
        self.login
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|l| l.bearer.clone())
    }

    fn request<T>(msg: T, bearer: Option<&str>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(b) = bearer {
            if let Ok(v) = MetadataValue::try_from(format!("Bearer {b}")) {
                r.metadata_mut().insert("authorization", v);
            }
        }
        r
    }

    /// One authenticated Token RPC. Without a login it is `UserNotLoggedIn` and sends nothing;
    /// a login the daemon no longer knows (expired, revoked, sealed meanwhile) is forgotten.
    fn call<T, R, F, Fut>(&self, msg: T, f: F) -> Result<R>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnOnce(TokenClient<Failover>, tonic::Request<T>) -> Fut + Send + 'static,
        Fut: Future<Output = RpcResult<R>> + Send,
    {
        let bearer = self.bearer().ok_or(Error::UserNotLoggedIn)?;
        let req = Self::request(msg, Some(bearer.as_str()));
        let client = TokenClient::new(self.channel.clone());
        match self.run(async move { f(client, req).await })? {
            Ok(r) => Ok(r.into_inner()),
            Err(st) => {
                let e = core_error(&st);
                let ended = error_from_status(&st).is_none()
                    && (st.code() == Code::Unauthenticated
                        || bulwark_proto::reason(&st) == Some(Reason::Sealed));
                if ended {
                    // The daemon ended this login: the application must log in again.
                    *self.login.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                }
                Err(e)
            }
        }
    }

    /// The Login RPC; returns (bearer, role).
    fn password_login(&self, pin: &Pin) -> Result<(String, Zeroizing<String>, String)> {
        let (user, password, otp) = parse_pin(pin)?;
        let msg = bulwark_proto::v1::LoginRequest {
            user: user.clone(),
            password: password.to_string(),
            otp: otp.to_string(),
        };
        let mut client = HsmClient::new(self.channel.clone());
        let r = self.run(async move { client.login(tonic::Request::new(msg)).await })?;
        match r {
            Ok(resp) => {
                let resp = resp.into_inner();
                // Kept so that the login can follow a failover to another node.
                self.channel.remember_login(&resp.session, &user, &password, !otp.is_empty());
                Ok((user, Zeroizing::new(resp.session), resp.role))
            }
            Err(st) => Err(match st.code() {
                Code::Unauthenticated => Error::PinIncorrect,
                Code::PermissionDenied => Error::PinLocked,
                _ => core_error(&st),
            }),
        }
    }

    /// The pending context login, if `needed` (taken: it works once).
    fn take_context(&self, needed: bool) -> Zeroizing<String> {
        if !needed {
            return Zeroizing::new(String::new());
        }
        self.context
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_else(|| Zeroizing::new(String::new()))
    }

    fn end_login(&self, bearer: &str) {
        self.channel.forget_login(bearer);
        let req = Self::request(pb::Empty {}, Some(bearer));
        let mut client = TokenClient::new(self.channel.clone());
        let _ = self.run(async move { client.logout(req).await });
    }
}

impl RemoteHsm {
    /// A remote token at `cfg.endpoint`. Connects lazily: an unreachable HSM shows up on the
    /// first call, as `Error::Store` (CKR_DEVICE_ERROR).
    ///
    /// # Errors
    /// `ArgumentsBad` for a malformed endpoint or TLS configuration, `Internal` if the client
    /// runtime cannot start, `ErrorState` if the crypto provider failed its self-tests.
    pub fn new(cfg: &ClientConfig) -> Result<Self> {
        let provider = Provider::get()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bulwark-remote")
            .enable_all()
            .build()
            .map_err(|_| Error::Internal("cannot start the client runtime"))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cfg.ca_pem));
        match (&cfg.cert_pem, &cfg.key_pem) {
            (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(c, &k[..])),
            (None, None) => {}
            _ => return Err(Error::ArgumentsBad("a client certificate needs its key")),
        }
        if let Some(n) = &cfg.server_name {
            tls = tls.domain_name(n.clone());
        }
        let names = crate::failover::split_endpoints(&cfg.endpoint);
        if names.is_empty() {
            return Err(Error::ArgumentsBad("bad endpoint"));
        }
        let mut eps = Vec::with_capacity(names.len());
        for name in &names {
            let ep = Endpoint::from_shared(name.clone())
                .map_err(|_| Error::ArgumentsBad("bad endpoint"))?
                .tls_config(tls.clone())
                .map_err(|_| Error::ArgumentsBad("bad TLS configuration"))?
                .connect_timeout(std::time::Duration::from_secs(10))
                // A safety net against a hung daemon or network, well above the slowest
                // operation (RSA-4096 generation on a busy HSM); a dead peer is noticed by
                // keepalives.
                .timeout(std::time::Duration::from_secs(120))
                .tcp_keepalive(Some(std::time::Duration::from_secs(30)))
                .http2_keep_alive_interval(std::time::Duration::from_secs(30))
                .keep_alive_while_idle(true);
            eps.push(ep);
        }
        // Connects lazily (on the first call), trying the nodes in order.
        let channel = Failover::new(eps, names);
        Ok(Self {
            inner: Arc::new(Inner {
                rt,
                channel,
                login: RwLock::new(None),
                context: std::sync::Mutex::new(None),
                provider,
            }),
            endpoint: cfg.endpoint.clone(),
        })
    }

    fn objects_call<T, F, Fut>(&self, msg: T, f: F) -> Result<u64>
    where
        T: Send + 'static,
        F: FnOnce(TokenClient<Failover>, tonic::Request<T>) -> Fut + Send + 'static,
        Fut: Future<Output = RpcResult<pb::HandleResponse>> + Send,
    {
        Ok(self.inner.call(msg, f)?.handle)
    }
}

/// A key that passed the daemon's gate at Prepare. Every operation goes back to the daemon,
/// which runs the gate again: nothing here is trusted by the HSM.
struct RemoteKey {
    inner: Arc<Inner>,
    handle: u64,
    mech: Mechanism,
    signature_len: usize,
    encrypt_len_fixed: usize,
    decrypt_len_fixed: usize,
    always_authenticate: bool,
}

impl std::fmt::Debug for RemoteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteKey(handle {}, {:?})", self.handle, self.mech.ck_type())
    }
}

impl RemoteKey {
    fn data(&self, mech: &Mechanism, data: &[u8]) -> pb::DataRequest {
        pb::DataRequest {
            handle: self.handle,
            mechanism: Some(mechanism_to_pb(mech)),
            data: data.to_vec(),
            context_login: String::new(),
        }
    }

    /// [`RemoteKey::data`] with the pending context login (Sign and Decrypt).
    fn data_with_context(&self, mech: &Mechanism, data: &[u8]) -> pb::DataRequest {
        let ctx = self.inner.take_context(self.always_authenticate);
        pb::DataRequest { context_login: ctx.to_string(), ..self.data(mech, data) }
    }
}

impl PreparedKey for RemoteKey {
    fn sign(&self, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        let r = self.data_with_context(mech, data);
        Ok(self.inner.call(r, |mut c, r| async move { c.sign(r).await })?.data)
    }

    fn verify(&self, mech: &Mechanism, data: &[u8], sig: &[u8]) -> Result<()> {
        let r = pb::VerifyRequest {
            handle: self.handle,
            mechanism: Some(mechanism_to_pb(mech)),
            data: data.to_vec(),
            signature: sig.to_vec(),
        };
        self.inner.call(r, |mut c, r| async move { c.verify(r).await })?;
        Ok(())
    }

    fn verify_recover(&self, mech: &Mechanism, sig: &[u8]) -> Result<Vec<u8>> {
        // Recovering the data under a public key needs no secret, so it runs here (like
        // digests); the daemon's gate already passed this key for verification at Prepare.
        let r = pb::GetAttributeRequest {
            handle: self.handle,
            r#type: AttrType::PublicKeyInfo.to_raw(),
        };
        let resp = self.inner.call(r, |mut c, r| async move { c.get_attribute(r).await })?;
        let first = resp.attributes.first().ok_or(Error::Internal("empty attribute reply"))?;
        let AttrValue::Bytes(spki) = attr_from_pb(first)?.1 else {
            return Err(Error::KeyTypeInconsistent);
        };
        let public = PublicKey::from_spki_der(&spki)?;
        self.inner.provider.load_public(&public)?.verify_recover(self.inner.provider, mech, sig)
    }

    fn encrypt(&self, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        let r = self.data(mech, data);
        Ok(self.inner.call(r, |mut c, r| async move { c.encrypt(r).await })?.data)
    }

    fn decrypt(&self, mech: &Mechanism, data: &[u8]) -> Result<SecretBytes> {
        let r = self.data_with_context(mech, data);
        let out =
            Zeroizing::new(self.inner.call(r, |mut c, r| async move { c.decrypt(r).await })?.data);
        Ok(SecretBytes::from_slice(&out))
    }

    fn signature_len(&self, mech: &Mechanism) -> usize {
        if *mech == self.mech {
            self.signature_len
        } else {
            0
        }
    }

    // The two length functions are the engine's own for AES (crypto/cipher.rs); other
    // mechanisms (RSA) have the fixed length the daemon returned.
    fn encrypt_len(&self, mech: &Mechanism, in_len: usize) -> usize {
        match aes_encrypt_len(mech, in_len) {
            0 if !is_aes(mech) => self.encrypt_len_fixed,
            n => n,
        }
    }

    fn decrypt_len_max(&self, mech: &Mechanism, in_len: usize) -> usize {
        if is_aes(mech) {
            aes_decrypt_len_max(mech, in_len)
        } else {
            self.decrypt_len_fixed
        }
    }

    fn encapsulate(&self) -> Result<(Vec<u8>, SecretBytes)> {
        let r = pb::KeyRequest {
            handle: self.handle,
            usage: usage_to_pb(Usage::Encapsulate).into(),
            mechanism: Some(mechanism_to_pb(&self.mech)),
        };
        let resp = self.inner.call(r, |mut c, r| async move { c.encapsulate(r).await })?;
        let secret = Zeroizing::new(resp.shared_secret);
        Ok((resp.ciphertext, SecretBytes::from_slice(&secret)))
    }

    fn decapsulate(&self, ciphertext: &[u8]) -> Result<SecretBytes> {
        let r = self.data(&self.mech, ciphertext);
        let out = Zeroizing::new(
            self.inner.call(r, |mut c, r| async move { c.decapsulate(r).await })?.data,
        );
        Ok(SecretBytes::from_slice(&out))
    }
}

impl Hsm for RemoteHsm {
    fn status(&self) -> Result<TokenStatus> {
        let mut client = HsmClient::new(self.inner.channel.clone());
        let st = self
            .inner
            .run(async move {
                client.status(tonic::Request::new(bulwark_proto::v1::StatusRequest {})).await
            })?
            .map_err(|s| core_error(&s))?
            .into_inner();
        Ok(TokenStatus {
            label: st.label,
            policy: st.policy,
            store_id: st.store_id,
            generation: st.generation,
            objects: st.objects,
            // Users are the daemon's; lockouts are reported by C_Login (CKR_PIN_LOCKED).
            user_pin_initialized: true,
            user_pin_failures: 0,
            so_pin_failures: 0,
            logged_in: self.logged_in(),
            zeroized: false,
        })
    }

    fn logged_in(&self) -> Option<UserType> {
        self.inner
            .login
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|l| l.kind)
    }

    fn login(&self, user: UserType, pin: &Pin) -> Result<()> {
        match self.logged_in() {
            Some(k) if k == user => return Err(Error::UserAlreadyLoggedIn),
            Some(_) => return Err(Error::AnotherUserLoggedIn),
            None => {}
        }
        let (name, bearer, role) = self.inner.password_login(pin)?;
        let fits = match user {
            UserType::User => role == "crypto-officer" || role == "crypto-user",
            UserType::So => role == "security-officer",
        };
        if !fits {
            // Right password, wrong kind of user for this login type.
            self.inner.end_login(&bearer);
            return Err(Error::PinIncorrect);
        }
        let mut l = self.inner.login.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if l.is_some() {
            // Another thread logged in meanwhile: keep its login, drop ours.
            drop(l);
            self.inner.end_login(&bearer);
            return Err(Error::UserAlreadyLoggedIn);
        }
        *l = Some(LoginState { kind: user, user: name, bearer });
        Ok(())
    }

    fn logout(&self) -> Result<()> {
        let old =
            self.inner.login.write().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let old = old.ok_or(Error::UserNotLoggedIn)?;
        self.inner.end_login(&old.bearer);
        let ctx =
            self.inner.context.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(ctx) = ctx {
            self.inner.end_login(&ctx);
        }
        Ok(())
    }

    fn lock(&self) {
        let _ = self.logout();
    }

    fn init_pin(&self, _: &Pin) -> Result<()> {
        Err(Error::NotSupported("remote slot: users are managed with `bulwark user`"))
    }

    fn set_pin(&self, _: &Pin, _: &Pin) -> Result<()> {
        Err(Error::NotSupported("remote slot: passwords are managed with `bulwark user`"))
    }

    fn check_pin(&self, pin: &Pin) -> Result<()> {
        let me = self
            .inner
            .login
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|l| l.user.clone())
            .ok_or(Error::UserNotLoggedIn)?;
        // A fresh password login of the same user proves the PIN (failures count on the
        // daemon). The daemon ends it when the next Sign / Decrypt with an always-authenticate
        // key presents it; it enforces the context login itself.
        let (name, bearer, _) = self.inner.password_login(pin)?;
        if name != me {
            self.inner.end_login(&bearer);
            return Err(Error::PinIncorrect);
        }
        let old = self
            .inner
            .context
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(bearer);
        if let Some(old) = old {
            self.inner.end_login(&old);
        }
        Ok(())
    }

    fn find(&self, t: &Template) -> Result<Vec<u64>> {
        if self.logged_in().is_none() {
            // The network HSM serves nothing without a login: no object is visible.
            return Ok(Vec::new());
        }
        let r = pb::FindRequest { template: template_to_pb(t) };
        Ok(self.inner.call(r, |mut c, r| async move { c.find(r).await })?.handles)
    }

    fn attributes(&self, h: u64) -> Result<Attributes> {
        if self.logged_in().is_none() {
            return Err(Error::ObjectHandleInvalid);
        }
        let r = pb::ObjectRequest { handle: h };
        let resp = self.inner.call(r, |mut c, r| async move { c.get_attributes(r).await })?;
        let mut attrs = Attributes::new();
        for x in &resp.attributes {
            let (kind, value) = attr_from_pb(x)?;
            attrs.set(kind, value)?;
        }
        Ok(attrs)
    }

    fn attribute(&self, h: u64, t: AttrType) -> Result<AttrValue> {
        if self.logged_in().is_none() {
            return Err(Error::ObjectHandleInvalid);
        }
        let r = pb::GetAttributeRequest { handle: h, r#type: t.to_raw() };
        let resp = self.inner.call(r, |mut c, r| async move { c.get_attribute(r).await })?;
        let first = resp.attributes.first().ok_or(Error::Internal("empty attribute reply"))?;
        Ok(attr_from_pb(first)?.1)
    }

    fn create_object(&self, t: &Template, session: SessionId) -> Result<u64> {
        let r = pb::CreateObjectRequest { session, template: template_to_pb(t) };
        self.objects_call(r, |mut c, r| async move { c.create_object(r).await })
    }

    fn copy_object(&self, h: u64, t: &Template, session: SessionId) -> Result<u64> {
        let r = pb::CopyObjectRequest { session, handle: h, template: template_to_pb(t) };
        self.objects_call(r, |mut c, r| async move { c.copy_object(r).await })
    }

    fn destroy_object(&self, h: u64) -> Result<()> {
        let r = pb::ObjectRequest { handle: h };
        self.inner.call(r, |mut c, r| async move { c.destroy_object(r).await })?;
        Ok(())
    }

    fn set_attributes(&self, h: u64, t: &Template) -> Result<()> {
        let r = pb::SetAttributesRequest { handle: h, template: template_to_pb(t) };
        self.inner.call(r, |mut c, r| async move { c.set_attributes(r).await })?;
        Ok(())
    }

    fn close_session(&self, session: SessionId) {
        if self.logged_in().is_some() {
            let r = pb::SessionRequest { session };
            let _ = self.inner.call(r, |mut c, r| async move { c.close_session(r).await });
        }
    }

    fn prepare(&self, h: u64, usage: Usage, mech: &Mechanism) -> Result<Arc<dyn PreparedKey>> {
        let r = pb::KeyRequest {
            handle: h,
            usage: usage_to_pb(usage).into(),
            mechanism: Some(mechanism_to_pb(mech)),
        };
        let resp = self.inner.call(r, |mut c, r| async move { c.prepare(r).await })?;
        let len = |v: u64| usize::try_from(v).unwrap_or(0);
        Ok(Arc::new(RemoteKey {
            inner: self.inner.clone(),
            handle: h,
            mech: mech.clone(),
            signature_len: len(resp.signature_len),
            encrypt_len_fixed: len(resp.encrypt_len_fixed),
            decrypt_len_fixed: len(resp.decrypt_len_fixed),
            always_authenticate: resp.always_authenticate,
        }))
    }

    fn generate_key(&self, mech: KeyGenMechanism, t: &Template, session: SessionId) -> Result<u64> {
        let r =
            pb::GenerateKeyRequest { session, ckm: mech.ck_type(), template: template_to_pb(t) };
        self.objects_call(r, |mut c, r| async move { c.generate_key(r).await })
    }

    fn generate_key_pair(
        &self,
        mech: KeyGenMechanism,
        pub_t: &Template,
        priv_t: &Template,
        session: SessionId,
    ) -> Result<(u64, u64)> {
        let r = pb::GenerateKeyPairRequest {
            session,
            ckm: mech.ck_type(),
            public_template: template_to_pb(pub_t),
            private_template: template_to_pb(priv_t),
        };
        let resp = self.inner.call(r, |mut c, r| async move { c.generate_key_pair(r).await })?;
        Ok((resp.public_handle, resp.private_handle))
    }

    fn wrap_key(&self, wrapping: u64, mech: &Mechanism, target: u64) -> Result<Vec<u8>> {
        let r = pb::WrapKeyRequest { wrapping, mechanism: Some(mechanism_to_pb(mech)), target };
        Ok(self.inner.call(r, |mut c, r| async move { c.wrap_key(r).await })?.data)
    }

    fn unwrap_key(
        &self,
        unwrapping: u64,
        mech: &Mechanism,
        wrapped: &[u8],
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        let r = pb::UnwrapKeyRequest {
            session,
            unwrapping,
            mechanism: Some(mechanism_to_pb(mech)),
            wrapped: wrapped.to_vec(),
            template: template_to_pb(t),
        };
        self.objects_call(r, |mut c, r| async move { c.unwrap_key(r).await })
    }

    fn derive_key(
        &self,
        base: u64,
        mech: &Mechanism,
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        let r = pb::DeriveKeyRequest {
            session,
            base,
            mechanism: Some(mechanism_to_pb(mech)),
            template: template_to_pb(t),
        };
        self.objects_call(r, |mut c, r| async move { c.derive_key(r).await })
    }

    fn random(&self, out: &mut [u8]) -> Result<()> {
        for chunk in out.chunks_mut(RANDOM_CHUNK) {
            let r = pb::RandomRequest {
                length: u32::try_from(chunk.len()).map_err(|_| Error::DataLenRange)?,
            };
            let data = self.inner.call(r, |mut c, r| async move { c.random(r).await })?.data;
            if data.len() != chunk.len() {
                return Err(Error::Internal("short random reply"));
            }
            chunk.copy_from_slice(&data);
        }
        Ok(())
    }

    fn digest(&self, alg: DigestAlg, data: &[u8]) -> Result<Vec<u8>> {
        // Digests need no key: computed locally, like SoftHSM and embedded mode.
        self.inner.provider.digest(alg, data)
    }
}

impl Drop for RemoteHsm {
    fn drop(&mut self) {
        // Best effort: end the login so its session objects go at once, not at expiry.
        let _ = self.logout();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_split_into_user_password_and_code() {
        let p = |s: &str| parse_pin(&Pin::new(s.as_bytes().to_vec()));
        let (u, pw, otp) = p("alice:s3cret").unwrap();
        assert_eq!((u.as_str(), pw.as_str(), otp.as_str()), ("alice", "s3cret", ""));
        let (u, pw, otp) = p("alice:pa:ss:123456").unwrap();
        assert_eq!((u.as_str(), pw.as_str(), otp.as_str()), ("alice", "pa:ss", "123456"));
        let (_, pw, otp) = p("bob:pw:12345").unwrap();
        assert_eq!((pw.as_str(), otp.as_str()), ("pw:12345", ""));
        for bad in ["nocolon", ":pw", "user:"] {
            assert!(matches!(p(bad), Err(Error::PinIncorrect)), "{bad}");
        }
    }

    #[test]
    fn statuses_without_an_error_map_to_the_closest_one() {
        let e = core_error(&bulwark_proto::sealed());
        assert!(matches!(e, Error::Store(_)));
        assert!(matches!(
            core_error(&tonic::Status::permission_denied("x")),
            Error::ActionProhibited(_)
        ));
        assert!(matches!(core_error(&tonic::Status::unauthenticated("x")), Error::UserNotLoggedIn));
        let carried = bulwark_proto::p11::status_with_error(&Error::SignatureInvalid);
        assert!(matches!(core_error(&carried), Error::SignatureInvalid));
    }

    #[test]
    fn remote_hsm_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<RemoteHsm>();
        send_sync::<RemoteKey>();
    }
}
