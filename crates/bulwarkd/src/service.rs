//! The gRPC service: authenticates each request, refuses service while sealed, and runs the
//! operation on the worker pool. Core errors become statuses in `bulwark_proto::status_from_core`
//! (one place); unseal refusals in [`unseal_status`].
//!
//! Logs name the operation, the user and the key label, never data, keys or passwords.

use std::sync::Arc;
use std::time::Duration;

use bulwark_core::seal::{ShareFile, UnsealError};
use bulwark_core::Error;
use bulwark_proto::status_from_core;
use bulwark_proto::v1::hsm_server::Hsm;
use bulwark_proto::v1::{self as pb, SignatureFormat};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::keys::{self, Purpose, SignKey};
use crate::state::{HsmState, Session};
use crate::users::{LoginError, Role};
use bulwark_core::audit::{current_actor, Actor};

/// Largest batch accepted in one request.
const MAX_BATCH: usize = bulwark_core::limits::MAX_BATCH;
/// Largest random request.
const MAX_RANDOM: u32 = bulwark_core::limits::MAX_RANDOM as u32;

/// The service over one HSM state.
#[derive(Clone, Debug)]
pub struct HsmService {
    state: Arc<HsmState>,
}

impl HsmService {
    /// The service.
    pub fn new(state: Arc<HsmState>) -> Self {
        Self { state }
    }

    async fn auth<T>(
        &self,
        req: &Request<T>,
        allowed: &[Role],
        op: &'static str,
    ) -> Result<(Session, Actor), Status> {
        authorize(&self.state, req, allowed, op).await
    }
}

/// The session of a request (bearer token), after the seal check, and the audit actor for it.
/// Refusals are audited. Every service of the daemon authenticates through this one function.
pub(crate) async fn authorize<T>(
    state: &Arc<HsmState>,
    req: &Request<T>,
    allowed: &[Role],
    op: &'static str,
) -> Result<(Session, Actor), Status> {
    {
        let client = client_id(req);
        let refuse = |name: String, role: &str, st: Status| {
            let actor = Actor { name, role: role.into(), client: client.clone() };
            let code = match st.code() {
                tonic::Code::FailedPrecondition => "sealed",
                tonic::Code::PermissionDenied => "permission-denied",
                _ => "unauthenticated",
            };
            (actor, code, st)
        };
        let refused = if let Err(st) = state.require_unsealed() {
            Some(refuse("-".into(), "-", st))
        } else {
            let token = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match token.and_then(|t| state.session(t)) {
                None => Some(refuse(
                    "-".into(),
                    "-",
                    Status::unauthenticated(if token.is_some() {
                        "session expired or unknown"
                    } else {
                        "login required"
                    }),
                )),
                Some(s) if !allowed.contains(&s.role) => {
                    tracing::warn!(user = %s.user, role = s.role.name(), op, "operation not permitted for role");
                    let msg = format!("operation not permitted for role {}", s.role.name());
                    Some(refuse(s.user.clone(), s.role.name(), Status::permission_denied(msg)))
                }
                Some(s) => {
                    let actor = Actor { name: s.user.clone(), role: s.role.name().into(), client };
                    return Ok((s, actor));
                }
            }
        };
        let (actor, code, st) = refused
            .unwrap_or_else(|| (Actor::default(), "internal", Status::internal("internal error")));
        let a = actor.clone();
        let _ = state
            .run_unmetered(actor, move |s| {
                s.audit(&a, op, code, String::new());
                Ok(())
            })
            .await;
        state.metrics.observe(op, crate::metrics::code_name(st.code()), Duration::ZERO);
        Err(st)
    }
}

/// SHA-256 (hex) of the peer's client certificate, if the connection has one.
pub(crate) fn peer_cert_sha256<T>(req: &Request<T>) -> Option<String> {
    req.peer_certs().and_then(|c| {
        c.first().map(|c| {
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c.as_ref()).as_ref())
        })
    })
}

/// Who is on the other end: peer address and a fingerprint of its client certificate.
pub(crate) fn client_id<T>(req: &Request<T>) -> String {
    if let Some(u) = req.extensions().get::<tonic::transport::server::UdsConnectInfo>() {
        let uid = u.peer_cred.map_or_else(|| "-".to_owned(), |c| c.uid().to_string());
        return format!("unix uid:{uid}");
    }
    let addr = req.remote_addr().map_or_else(|| "-".to_owned(), |a| a.to_string());
    let cert = req.peer_certs().and_then(|c| {
        c.first().map(|c| {
            hex::encode(
                &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c.as_ref()).as_ref()[..8],
            )
        })
    });
    format!("{addr} cert:{}", cert.as_deref().unwrap_or("-"))
}

pub(crate) const USE: &[Role] = &[Role::CryptoOfficer, Role::CryptoUser];
pub(crate) const MANAGE: &[Role] = &[Role::CryptoOfficer];
/// Who may read the audit log.
const AUDIT: &[Role] = &[Role::SecurityOfficer, Role::Auditor];
pub(crate) const ANY: &[Role] =
    &[Role::SecurityOfficer, Role::CryptoOfficer, Role::CryptoUser, Role::Auditor];

/// A core error from a key operation. A token that is locked under us was sealed meanwhile.
pub(crate) fn core(e: &Error) -> Status {
    match e {
        Error::UserNotLoggedIn => bulwark_proto::sealed(),
        Error::Integrity(_) | Error::Rollback { .. } | Error::Internal(_) | Error::Store(_) => {
            tracing::error!(error = %e, "key operation failed");
            status_from_core(e)
        }
        e => status_from_core(e),
    }
}

fn unseal_status(e: &UnsealError) -> Status {
    match e {
        UnsealError::Malformed => Status::invalid_argument("malformed share"),
        UnsealError::WrongStore | UnsealError::Invalid => {
            Status::invalid_argument("share is not valid for this store")
        }
        UnsealError::Repeated(i) => {
            Status::already_exists(format!("share {i} was already presented"))
        }
        UnsealError::NotSealed => Status::failed_precondition("not sealed"),
        UnsealError::Core(c) => core(c),
    }
}

/// Key-level access control: crypto officers use every key; anyone else needs to own the key or
/// hold a grant for `op` in its access list. Keys without an access list (made outside the
/// daemon) are for crypto officers only.
pub(crate) fn key_access(st: &HsmState, s: &Session, label: &str, op: &str) -> Result<(), Status> {
    if s.role == Role::CryptoOfficer {
        return Ok(());
    }
    match st.users.key_acl(label) {
        Some(acl) if acl.allows(&s.user, s.role, op) => Ok(()),
        _ => {
            tracing::warn!(user = %s.user, label, op, "key not in the user's access list");
            let actor = current_actor().unwrap_or_default();
            st.audit(&actor, "key-access", "permission-denied", format!("{op} {label}"));
            Err(Status::permission_denied(format!(
                "{op} with key {label:?} is not in your access list"
            )))
        }
    }
}

/// The TOTP step `otp` matches, if any, for a user whose TOTP secret is `ct_hex` (encrypted
/// under the HSM's TOTP key).
fn check_otp(s: &HsmState, ct_hex: &str, otp: &str) -> Option<u64> {
    if otp.len() != 6 || !otp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ct = hex::decode(ct_hex).ok()?;
    let h = keys::totp_key(&s.token, false).ok()?;
    let secret = keys::decrypt(&s.token, h, &ct).ok()?;
    let totp = totp_rs::Builder::new().with_secret(secret.expose_secret().to_vec()).build().ok()?;
    totp.check_current(otp)
}

#[tonic::async_trait]
impl Hsm for HsmService {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let (progress, threshold, shares) = self.state.unseal_progress();
        let sealed = self.state.is_sealed();
        // Store reads: on the pool, not the reactor.
        let actor = Actor { name: "-".into(), role: "-".into(), client: client_id(&req) };
        let st =
            self.state.run("status", actor, |s| s.token.status().map_err(|e| core(&e))).await?;
        let self_tests = bulwark_core::crypto::Provider::get().is_ok_and(|p| p.check().is_ok());
        Ok(Response::new(pb::StatusResponse {
            sealed,
            unseal_progress: progress.into(),
            unseal_threshold: threshold.into(),
            unseal_shares: shares.into(),
            policy: st.policy,
            label: st.label,
            store_id: st.store_id,
            generation: if sealed { 0 } else { st.generation },
            objects: if sealed { 0 } else { st.objects },
            self_tests_passed: self_tests,
            version: env!("CARGO_PKG_VERSION").into(),
            dev_mode: self.state.dev_mode,
            zeroized: st.zeroized,
            tamper_alarm: self.state.token.tamper_alarm().unwrap_or_default(),
        }))
    }

    async fn unseal(
        &self,
        req: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::UnsealResponse>, Status> {
        let actor =
            Actor { name: "custodian".into(), role: "custodian".into(), client: client_id(&req) };
        let a = actor.clone();
        let text = Zeroizing::new(req.into_inner().share);
        let r = self
            .state
            .run("unseal", actor, move |s| {
                let parsed = ShareFile::parse(&text).and_then(|f| Ok((f.index, f.share(None)?)));
                let (index, share) = match parsed {
                    Ok(v) => v,
                    Err(e) => {
                        s.audit(&a, "unseal-share", "share-invalid", e.to_string());
                        return Err(unseal_status(&e));
                    }
                };
                match s.unseal(share) {
                    Ok(v) => {
                        tracing::info!(share = index, progress = v.1, "unseal share accepted");
                        let detail = format!("share {index}: {}/{}", v.1, v.2);
                        s.audit(&a, "unseal-share", "ok", detail);
                        Ok(v)
                    }
                    Err(e) => {
                        tracing::warn!(share = index, reason = %e, "unseal share refused");
                        s.audit(&a, "unseal-share", "share-refused", format!("share {index}: {e}"));
                        Err(unseal_status(&e))
                    }
                }
            })
            .await?;
        Ok(Response::new(pb::UnsealResponse {
            sealed: r.0,
            progress: r.1.into(),
            threshold: r.2.into(),
        }))
    }

    async fn seal(
        &self,
        req: Request<pb::SealRequest>,
    ) -> Result<Response<pb::SealResponse>, Status> {
        let (s, actor) = self.auth(&req, &[Role::SecurityOfficer], "seal").await?;
        tracing::warn!(user = %s.user, "seal requested");
        let a = actor.clone();
        self.state
            .run("seal", actor, move |st| {
                st.audit(&a, "seal", "ok", String::new());
                st.seal();
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::SealResponse {}))
    }

    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = client_id(&req);
        let peer_cert = peer_cert_sha256(&req);
        let pb::LoginRequest { user, password, otp } = req.into_inner();
        let mut a = Actor { name: user.clone(), role: "-".into(), client };
        if let Err(st) = self.state.require_unsealed() {
            let _ = self
                .state
                .run_unmetered(a.clone(), move |s| {
                    s.audit(&a, "login", "sealed", String::new());
                    Ok(())
                })
                .await;
            self.state.metrics.observe("login", "failed_precondition", Duration::ZERO);
            return Err(st);
        }
        let password = Zeroizing::new(password);
        let otp = Zeroizing::new(otp);
        let (user, role) = self
            .state
            .run("login", a.clone(), move |s| {
                let factors = match s.users.verify_password(&user, &password) {
                    Ok(v) => v,
                    Err(LoginError::BadCredentials) => {
                        tracing::warn!(user = %user, "login failed: bad credentials");
                        s.audit(&a, "login", "bad-credentials", String::new());
                        return Err(Status::unauthenticated("authentication failed"));
                    }
                    Err(LoginError::Integrity) => {
                        tracing::error!("login refused: the user database does not authenticate");
                        s.audit(&a, "login", "integrity", String::new());
                        return Err(Status::data_loss("integrity check failed: user database"));
                    }
                    Err(LoginError::Locked) => {
                        tracing::warn!(user = %user, "login refused: locked");
                        s.audit(&a, "login", "locked", String::new());
                        return Err(Status::permission_denied(
                            "user is locked after too many failed logins",
                        ));
                    }
                };
                let role = factors.role;
                role.name().clone_into(&mut a.role);
                if let Some(bound) = &factors.cert_sha256 {
                    let presented = peer_cert.as_deref().unwrap_or("");
                    if !bool::from(subtle::ConstantTimeEq::ct_eq(
                        presented.as_bytes(),
                        bound.as_bytes(),
                    )) {
                        s.users.failed(&user);
                        tracing::warn!(user = %user, "login failed: not the user's certificate");
                        s.audit(&a, "login", "bad-certificate", String::new());
                        return Err(Status::unauthenticated("authentication failed"));
                    }
                }
                if let Some(ct) = factors.totp {
                    match check_otp(s, &ct, &otp) {
                        Some(step) if s.users.accept_step(&user, step) => {}
                        _ => {
                            s.users.failed(&user);
                            tracing::warn!(user = %user, "login failed: second factor");
                            s.audit(&a, "login", "bad-otp", String::new());
                            return Err(Status::unauthenticated("authentication failed"));
                        }
                    }
                }
                s.users.succeeded(&user);
                s.audit(&a, "login", "ok", String::new());
                Ok((user, role))
            })
            .await?;
        let session = self.state.open_session(&user, role)?;
        tracing::info!(user = %user, role = role.name(), "login");
        Ok(Response::new(pb::LoginResponse {
            session,
            role: role.name().into(),
            expires_in_seconds: self.state.session_ttl.as_secs(),
        }))
    }

    async fn logout(
        &self,
        req: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        if let Some(t) = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            self.state.close_session(t);
        }
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn generate_key(
        &self,
        req: Request<pb::GenerateKeyRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        let (s, actor) = self.auth(&req, MANAGE, "generate-key").await?;
        let r = req.into_inner();
        tracing::info!(user = %s.user, label = %r.label, key_type = %r.key_type, "generate key");
        let user = s.user.clone();
        let info = self
            .state
            .run("generate-key", actor, move |st| {
                let info = keys::generate(&st.token, &r.key_type, &r.label, r.extractable)
                    .and_then(|()| keys::show(&st.token, &r.label))
                    .map_err(|e| core(&e));
                st.labels.clear();
                let info = info?;
                // The creator owns the key; crypto users get it only through grants.
                let acl = crate::users::KeyAcl { owner: user, grants: Vec::new() };
                let mac = |d: &[u8]| st.users_mac(d);
                st.users.set_key_acl(&r.label, Some(acl), &mac).map_err(|e| {
                    tracing::error!(error = %e, "user database");
                    Status::unavailable("cannot write the user database")
                })?;
                Ok(info)
            })
            .await?;
        Ok(Response::new(info))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let (sess, actor) = self.auth(&req, USE, "list-keys").await?;
        let keys = self
            .state
            .run("list-keys", actor, move |st| {
                let mut keys = keys::list(&st.token).map_err(|e| core(&e))?;
                if sess.role != Role::CryptoOfficer {
                    keys.retain(|k| {
                        st.users.key_acl(&k.label).is_some_and(|a| {
                            ["sign", "verify", "encrypt", "decrypt", "public"]
                                .iter()
                                .any(|op| a.allows(&sess.user, sess.role, op))
                        })
                    });
                }
                Ok(keys)
            })
            .await?;
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    async fn show_key(&self, req: Request<pb::KeyName>) -> Result<Response<pb::KeyInfo>, Status> {
        let (sess, actor) = self.auth(&req, USE, "show-key").await?;
        let label = req.into_inner().label;
        let k = self
            .state
            .run("show-key", actor, move |st| {
                key_access(st, &sess, &label, "public")?;
                keys::show(&st.token, &label).map_err(|e| core(&e))
            })
            .await?;
        Ok(Response::new(k))
    }

    async fn destroy_key(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::DestroyKeyResponse>, Status> {
        let (s, actor) = self.auth(&req, MANAGE, "destroy-key").await?;
        let label = req.into_inner().label;
        tracing::info!(user = %s.user, label = %label, "destroy key");
        let destroyed = self
            .state
            .run("destroy-key", actor, move |st| {
                let r = keys::destroy(&st.token, &label).map_err(|e| core(&e));
                st.labels.clear();
                if r.is_ok() && st.users.key_acl(&label).is_some() {
                    let mac = |d: &[u8]| st.users_mac(d);
                    if let Err(e) = st.users.set_key_acl(&label, None, &mac) {
                        tracing::error!(error = %e, "user database");
                    }
                }
                r
            })
            .await?;
        Ok(Response::new(pb::DestroyKeyResponse { destroyed }))
    }

    async fn public_key(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::PublicKeyResponse>, Status> {
        let (sess, actor) = self.auth(&req, USE, "public-key").await?;
        let label = req.into_inner().label;
        let pem = self
            .state
            .run("public-key", actor, move |st| {
                key_access(st, &sess, &label, "public")?;
                keys::public_pem(&st.token, &label).map_err(|e| core(&e))
            })
            .await?;
        Ok(Response::new(pb::PublicKeyResponse { pem }))
    }

    async fn sign(
        &self,
        req: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let (sess, actor) = self.auth(&req, USE, "sign").await?;
        let r = req.into_inner();
        let format = SignatureFormat::try_from(r.format).unwrap_or(SignatureFormat::Raw);
        let (signature, mechanism) = self
            .state
            .run("sign", actor, move |st| {
                key_access(st, &sess, &r.key, "sign")?;
                st.labels
                    .with(&st.token, &r.key, Purpose::Sign, |h, spec| {
                        let k = SignKey::new(h, spec, &r.mechanism, format)?;
                        Ok((k.sign(&st.token, &r.data)?, k.mechanism_name()))
                    })
                    .map_err(|e| core(&e))
            })
            .await?;
        Ok(Response::new(pb::SignResponse { signature, mechanism }))
    }

    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let (sess, actor) = self.auth(&req, USE, "verify").await?;
        let r = req.into_inner();
        let format = SignatureFormat::try_from(r.format).unwrap_or(SignatureFormat::Raw);
        let valid = self
            .state
            .run("verify", actor, move |st| {
                key_access(st, &sess, &r.key, "verify")?;
                st.labels
                    .with(&st.token, &r.key, Purpose::Verify, |h, spec| {
                        SignKey::new(h, spec, &r.mechanism, format)?.verify(
                            &st.token,
                            &r.data,
                            &r.signature,
                        )
                    })
                    .map_err(|e| core(&e))
            })
            .await?;
        Ok(Response::new(pb::VerifyResponse { valid }))
    }

    async fn encrypt(
        &self,
        req: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let (sess, actor) = self.auth(&req, USE, "encrypt").await?;
        let r = req.into_inner();
        let plaintext = Zeroizing::new(r.plaintext);
        let ciphertext = self
            .state
            .run("encrypt", actor, move |st| {
                key_access(st, &sess, &r.key, "encrypt")?;
                st.labels
                    .with(&st.token, &r.key, Purpose::Aes, |h, _| {
                        keys::encrypt(&st.token, h, &plaintext)
                    })
                    .map_err(|e| core(&e))
            })
            .await?;
        Ok(Response::new(pb::EncryptResponse { ciphertext }))
    }

    async fn decrypt(
        &self,
        req: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let (sess, actor) = self.auth(&req, USE, "decrypt").await?;
        let r = req.into_inner();
        let plaintext = self
            .state
            .run("decrypt", actor, move |st| {
                key_access(st, &sess, &r.key, "decrypt")?;
                st.labels
                    .with(&st.token, &r.key, Purpose::Aes, |h, _| {
                        keys::decrypt(&st.token, h, &r.ciphertext)
                            .map(|pt| pt.expose_secret().to_vec())
                    })
                    .map_err(|e| core(&e))
            })
            .await?;
        Ok(Response::new(pb::DecryptResponse { plaintext }))
    }

    async fn random(
        &self,
        req: Request<pb::RandomRequest>,
    ) -> Result<Response<pb::RandomResponse>, Status> {
        let (_, actor) = self.auth(&req, ANY, "random").await?;
        let n = req.into_inner().length;
        if n == 0 || n > MAX_RANDOM {
            return Err(Status::invalid_argument("length must be 1 to 1048576"));
        }
        let data = self
            .state
            .run("random", actor, move |st| {
                let mut buf = vec![0u8; n as usize];
                st.token.random(&mut buf).map_err(|e| core(&e))?;
                Ok(buf)
            })
            .await?;
        Ok(Response::new(pb::RandomResponse { data }))
    }

    async fn batch_sign(
        &self,
        req: Request<pb::BatchSignRequest>,
    ) -> Result<Response<pb::BatchSignResponse>, Status> {
        let (sess, actor) = self.auth(&req, USE, "batch-sign").await?;
        let r = req.into_inner();
        if r.data.len() > MAX_BATCH {
            return Err(Status::invalid_argument("batch too large (at most 1024 items)"));
        }
        let format = SignatureFormat::try_from(r.format).unwrap_or(SignatureFormat::Raw);
        let signatures = self
            .state
            .run("batch-sign", actor, move |st| {
                key_access(st, &sess, &r.key, "sign")?;
                st.labels
                    .with(&st.token, &r.key, Purpose::Sign, |h, spec| {
                        let k = SignKey::new(h, spec, &r.mechanism, format)?;
                        k.sign_batch(&st.token, &r.data)
                    })
                    .map_err(|e| core(&e))
            })
            .await?;
        Ok(Response::new(pb::BatchSignResponse { signatures }))
    }

    async fn batch_encrypt(
        &self,
        req: Request<pb::BatchEncryptRequest>,
    ) -> Result<Response<pb::BatchEncryptResponse>, Status> {
        let (sess, actor) = self.auth(&req, USE, "batch-encrypt").await?;
        let r = req.into_inner();
        if r.plaintexts.len() > MAX_BATCH {
            return Err(Status::invalid_argument("batch too large (at most 1024 items)"));
        }
        let ciphertexts = self
            .state
            .run("batch-encrypt", actor, move |st| {
                key_access(st, &sess, &r.key, "encrypt")?;
                st.labels
                    .with(&st.token, &r.key, Purpose::Aes, |h, _| {
                        keys::encrypt_batch(&st.token, h, &r.plaintexts)
                    })
                    .map_err(|e| core(&e))
            })
            .await?;
        Ok(Response::new(pb::BatchEncryptResponse { ciphertexts }))
    }

    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        let (so, actor) = self.auth(&req, &[Role::SecurityOfficer], "create-user").await?;
        let r = req.into_inner();
        let role = Role::parse(&r.role).ok_or_else(|| Status::invalid_argument("unknown role"))?;
        crate::users::check_name(&r.name).map_err(Status::invalid_argument)?;
        if r.password.len() < 8 {
            return Err(Status::invalid_argument("passwords must be at least 8 bytes"));
        }
        let password = Zeroizing::new(r.password);
        let (name, with_totp) = (r.name, r.totp);
        let (approvals, not_after) = (r.approvals, r.approval_not_after);
        let cert = r.client_cert_sha256.to_ascii_lowercase();
        if !cert.is_empty() && (cert.len() != 64 || !cert.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(Status::invalid_argument("client_cert_sha256 must be 64 hex digits"));
        }
        tracing::info!(user = %so.user, new_user = %name, role = role.name(), totp = with_totp, "create user");
        let resp = self
            .state
            .run("create-user", actor, move |st| {
                let _admin = st.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if st.users.list().iter().any(|u| u.0 == name) {
                    return Err(Status::already_exists(format!("user {name:?} exists")));
                }
                let totp_flag = if with_totp { "totp" } else { "" };
                let fields = [name.as_str(), role.name(), totp_flag, cert.as_str()];
                let approved_by =
                    st.check_approvals("create-user", &fields, &approvals, not_after)?;
                let mut resp = pb::CreateUserResponse::default();
                let mut totp_ct = None;
                if with_totp {
                    let h = keys::totp_key(&st.token, true).map_err(|e| core(&e))?;
                    let mut secret = Zeroizing::new(vec![0u8; 20]);
                    st.token.random(&mut secret).map_err(|e| core(&e))?;
                    let ct = keys::encrypt(&st.token, h, &secret).map_err(|e| core(&e))?;
                    let totp = totp_rs::Builder::new()
                        .with_secret(secret.to_vec())
                        .with_account_name(name.clone())
                        .with_issuer(Some("Bulwark"))
                        .build()
                        .map_err(|_| Status::internal("internal error"))?;
                    resp.otpauth_uri =
                        totp.to_url().map_err(|_| Status::internal("internal error"))?;
                    resp.totp_secret_base32 = totp.secret().to_base32();
                    totp_ct = Some(hex::encode(ct));
                }
                let mac = |d: &[u8]| st.users_mac(d);
                st.users.put(&name, role, password.as_bytes(), totp_ct, Some(&mac)).map_err(
                    |e| {
                        tracing::error!(error = %e, "user file");
                        Status::unavailable("cannot write the user database")
                    },
                )?;
                if !cert.is_empty() {
                    st.users.bind_certificate(&name, &cert, &mac).map_err(|e| {
                        tracing::error!(error = %e, "user file");
                        Status::unavailable("cannot write the user database")
                    })?;
                }
                let detail = format!(
                    "user {name} role {} totp {with_totp} certificate {} approved by [{}]",
                    role.name(),
                    !cert.is_empty(),
                    approved_by.join(",")
                );
                st.audit(&current_actor().unwrap_or_default(), "create-user", "ok", detail);
                Ok(resp)
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let (so, actor) = self.auth(&req, &[Role::SecurityOfficer], "delete-user").await?;
        let r = req.into_inner();
        let (name, approvals, not_after) = (r.name, r.approvals, r.approval_not_after);
        let removed = self
            .state
            .run("delete-user", actor, move |st| {
                let _admin = st.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                st.check_approvals("delete-user", &[name.as_str()], &approvals, not_after)?;
                let mac = |d: &[u8]| st.users_mac(d);
                let removed = st.users.remove(&name, &mac).map_err(|e| {
                    tracing::error!(error = %e, "user file");
                    Status::unavailable("cannot write the user database")
                })?;
                let ended = st.close_sessions_of(&name);
                let result = if removed { "ok" } else { "not-found" };
                let detail = format!("user {name}");
                st.audit(&current_actor().unwrap_or_default(), "delete-user", result, detail);
                Ok((removed, name, ended))
            })
            .await?;
        if !removed.0 {
            return Err(Status::not_found(format!("no user {:?}", removed.1)));
        }
        tracing::warn!(user = %so.user, revoked = %removed.1, sessions = removed.2, "user deleted");
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.auth(&req, &[Role::SecurityOfficer], "list-users").await?;
        let users = self
            .state
            .users
            .list()
            .into_iter()
            .map(|(name, role, totp, locked, cert_bound)| pb::UserInfo {
                name,
                role: role.name().into(),
                totp,
                locked,
                cert_bound,
            })
            .collect();
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn set_key_access(
        &self,
        req: Request<pb::SetKeyAccessRequest>,
    ) -> Result<Response<pb::SetKeyAccessResponse>, Status> {
        let (s, actor) = self.auth(&req, MANAGE, "set-key-access").await?;
        let r = req.into_inner();
        let mut grants = Vec::new();
        for g in r.grants {
            let ok_principal = match g.principal.split_once(':') {
                Some(("user", n)) => crate::users::check_name(n).is_ok(),
                Some(("role", n)) => Role::parse(n).is_some_and(|r| r.name() == n),
                _ => false,
            };
            let ok_ops = !g.operations.is_empty()
                && g.operations.iter().all(|o| {
                    ["sign", "verify", "encrypt", "decrypt", "public", "*"].contains(&o.as_str())
                });
            if !ok_principal || !ok_ops {
                return Err(Status::invalid_argument(
                    "a grant is user:NAME or role:ROLE with operations among sign, verify, \
                     encrypt, decrypt, public, *",
                ));
            }
            grants.push(crate::users::Grant { principal: g.principal, ops: g.operations });
        }
        tracing::info!(user = %s.user, label = %r.label, grants = grants.len(), "set key access");
        self.state
            .run("set-key-access", actor, move |st| {
                keys::show(&st.token, &r.label).map_err(|e| core(&e))?;
                let owner = st.users.key_acl(&r.label).map_or_else(|| s.user.clone(), |a| a.owner);
                let detail = format!("{} grants {}", r.label, grants.len());
                let mac = |d: &[u8]| st.users_mac(d);
                st.users
                    .set_key_acl(&r.label, Some(crate::users::KeyAcl { owner, grants }), &mac)
                    .map_err(|e| {
                        tracing::error!(error = %e, "user database");
                        Status::unavailable("cannot write the user database")
                    })?;
                st.audit(&current_actor().unwrap_or_default(), "set-key-access", "ok", detail);
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::SetKeyAccessResponse {}))
    }

    async fn unlock_user(
        &self,
        req: Request<pb::UnlockUserRequest>,
    ) -> Result<Response<pb::UnlockUserResponse>, Status> {
        let (so, actor) = self.auth(&req, &[Role::SecurityOfficer], "unlock-user").await?;
        let name = req.into_inner().name;
        if !self.state.users.list().iter().any(|u| u.0 == name) {
            return Err(Status::not_found(format!("no user {name:?}")));
        }
        tracing::warn!(user = %so.user, unlocked = %name, "unlock user");
        self.state
            .run("unlock-user", actor, move |st| {
                st.users.succeeded(&name);
                st.audit(
                    &current_actor().unwrap_or_default(),
                    "unlock-user",
                    "ok",
                    format!("user {name}"),
                );
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::UnlockUserResponse {}))
    }

    async fn set_user_role(
        &self,
        req: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        let (so, actor) = self.auth(&req, &[Role::SecurityOfficer], "set-user-role").await?;
        let r = req.into_inner();
        let role = Role::parse(&r.role).ok_or_else(|| Status::invalid_argument("unknown role"))?;
        let (name, approvals, not_after) = (r.name, r.approvals, r.approval_not_after);
        let changed = self
            .state
            .run("set-user-role", actor, move |st| {
                let _admin = st.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let fields = [name.as_str(), role.name()];
                let approved_by =
                    st.check_approvals("set-user-role", &fields, &approvals, not_after)?;
                let mac = |d: &[u8]| st.users_mac(d);
                let changed = st.users.set_role(&name, role, &mac).map_err(|e| {
                    tracing::error!(error = %e, "user file");
                    Status::unavailable("cannot write the user database")
                })?;
                let ended = if changed { st.close_sessions_of(&name) } else { 0 };
                let result = if changed { "ok" } else { "not-found" };
                let detail = format!(
                    "user {name} role {} approved by [{}]",
                    role.name(),
                    approved_by.join(",")
                );
                st.audit(&current_actor().unwrap_or_default(), "set-user-role", result, detail);
                Ok((changed, name, ended))
            })
            .await?;
        if !changed.0 {
            return Err(Status::not_found(format!("no user {:?}", changed.1)));
        }
        tracing::warn!(user = %so.user, target = %changed.1, role = role.name(), sessions = changed.2, "user role changed");
        Ok(Response::new(pb::SetUserRoleResponse {}))
    }

    async fn zeroize(
        &self,
        req: Request<pb::ZeroizeRequest>,
    ) -> Result<Response<pb::ZeroizeResponse>, Status> {
        let (so, actor) = self.auth(&req, &[Role::SecurityOfficer], "zeroize").await?;
        let r = req.into_inner();
        let (approvals, not_after) = (r.approvals, r.approval_not_after);
        tracing::warn!(user = %so.user, "zeroize requested");
        self.state
            .run("zeroize", actor, move |st| {
                let approved_by = st.check_approvals("zeroize", &[], &approvals, not_after)?;
                let detail = format!("approved by [{}]", approved_by.join(","));
                st.token.zeroize_unsealed(detail).map_err(|e| core(&e))?;
                st.seal();
                Ok(())
            })
            .await?;
        tracing::error!(user = %so.user, "HSM zeroized: every key is destroyed");
        Ok(Response::new(pb::ZeroizeResponse {}))
    }

    async fn audit_export(
        &self,
        req: Request<pb::AuditExportRequest>,
    ) -> Result<Response<pb::AuditExportResponse>, Status> {
        let (_, actor) = self.auth(&req, AUDIT, "audit-export").await?;
        let since = req.into_inner().since;
        let lines = self
            .state
            .run("audit-export", actor, move |st| {
                let log = st
                    .token
                    .audit_log()
                    .ok_or_else(|| Status::failed_precondition("this HSM has no audit log"))?;
                st.audit(
                    &current_actor().unwrap_or_default(),
                    "audit-export",
                    "ok",
                    format!("since {since}"),
                );
                // The export ends with a checkpoint covering every exported record.
                log.checkpoint().map_err(|e| core(&e))?;
                let lines = log.export_lines(since).map_err(|e| core(&e))?;
                bulwark_core::audit::lines_to_json(&lines).map_err(|e| core(&e))
            })
            .await?;
        Ok(Response::new(pb::AuditExportResponse { lines }))
    }

    async fn audit_public_key(
        &self,
        req: Request<pb::AuditPublicKeyRequest>,
    ) -> Result<Response<pb::AuditPublicKeyResponse>, Status> {
        let (_, actor) = self.auth(&req, AUDIT, "audit-public-key").await?;
        let public_key = self
            .state
            .run("audit-public-key", actor, |st| {
                let log = st
                    .token
                    .audit_log()
                    .ok_or_else(|| Status::failed_precondition("this HSM has no audit log"))?;
                log.signer().map(|s| s.public_key()).ok_or_else(bulwark_proto::sealed)
            })
            .await?;
        Ok(Response::new(pb::AuditPublicKeyResponse { public_key }))
    }

    async fn clear_tamper(
        &self,
        req: Request<pb::ClearTamperRequest>,
    ) -> Result<Response<pb::ClearTamperResponse>, Status> {
        let (so, actor) = self.auth(&req, &[Role::SecurityOfficer], "tamper-clear").await?;
        self.state
            .run("tamper-clear", actor, |st| st.token.clear_tamper_unsealed().map_err(|e| core(&e)))
            .await?;
        tracing::warn!(user = %so.user, "tamper alarm cleared");
        Ok(Response::new(pb::ClearTamperResponse {}))
    }

    async fn export_key(
        &self,
        req: Request<pb::ExportKeyRequest>,
    ) -> Result<Response<pb::ExportKeyResponse>, Status> {
        let (s, actor) = self.auth(&req, MANAGE, "export-key").await?;
        let r = req.into_inner();
        tracing::warn!(user = %s.user, key = %r.key, wrapping_key = %r.wrapping_key, "key export under wrap");
        let (wrapped, mechanism) = self
            .state
            .run("export-key", actor, move |st| {
                let fields = [r.key.as_str(), r.wrapping_key.as_str(), r.mechanism.as_str()];
                let approved_by =
                    st.check_approvals("export-key", &fields, &r.approvals, r.approval_not_after)?;
                let out = keys::export(&st.token, &r.key, &r.wrapping_key, &r.mechanism)
                    .map_err(|e| core(&e))?;
                if !approved_by.is_empty() {
                    let detail = format!(
                        "key {} under {} approved by [{}]",
                        r.key,
                        r.wrapping_key,
                        approved_by.join(",")
                    );
                    st.audit(&current_actor().unwrap_or_default(), "export-key", "ok", detail);
                }
                Ok(out)
            })
            .await?;
        Ok(Response::new(pb::ExportKeyResponse { wrapped, mechanism }))
    }
}
