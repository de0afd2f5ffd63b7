//! The gRPC service: authenticates each request (a bearer token bound to the connection's TLS
//! identity), refuses service while sealed, and runs the operation on the worker pool as the
//! session's principal. Every access decision — which keys a user sees and uses, who manages
//! users, grants and approvals — is the token's (bulwark-core's kernel); this layer translates
//! labels and names. Core errors become statuses in `bulwark_proto::status_from_core` (one
//! place); unseal refusals in [`unseal_status`].
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
use bulwark_core::audit::{current_actor, Actor};
use bulwark_core::kernel::{Caller, Grantee, Ops, Role};
use bulwark_core::token::Credentials;

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
    ) -> Result<(Session, Caller), Status> {
        authorize(&self.state, req, allowed, op).await
    }
}

/// The session of a request (a bearer token, valid only over the TLS identity that made it),
/// after the seal check, and the caller the token acts for. Refusals are audited. Every service
/// of the daemon authenticates through this one function.
pub(crate) async fn authorize<T>(
    state: &Arc<HsmState>,
    req: &Request<T>,
    allowed: &[Role],
    op: &'static str,
) -> Result<(Session, Caller), Status> {
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
            let identity = connection_identity(req);
            match token.and_then(|t| state.session(t, &identity)) {
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
                    let caller = s.caller(client);
                    return Ok((s, caller));
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

/// The identity a session is bound to: the SHA-256 of the connection's client certificate, or
/// the unix peer's uid on the local socket.
pub(crate) fn connection_identity<T>(req: &Request<T>) -> String {
    if let Some(u) = req.extensions().get::<tonic::transport::server::UdsConnectInfo>() {
        return format!(
            "unix:{}",
            u.peer_cred.map_or_else(|| "-".to_owned(), |c| c.uid().to_string())
        );
    }
    peer_cert_sha256(req).map_or_else(|| "-".to_owned(), |c| format!("cert:{c}"))
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
                st.audit(&a.actor(), "seal", "ok", String::new());
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
        let identity = connection_identity(&req);
        let peer_cert = peer_cert_sha256(&req);
        let pb::LoginRequest { user, password, otp } = req.into_inner();
        // A name that is not a valid user name is never echoed into logs or records.
        let shown = if bulwark_core::kernel::check_user_name(&user).is_ok() {
            user.clone()
        } else {
            "(invalid name)".to_owned()
        };
        let mut a = Actor { name: shown.clone(), role: "-".into(), client };
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
        let principal = self
            .state
            .run("login", a.clone(), move |s| {
                let creds = Credentials {
                    name: &user,
                    password: password.as_bytes(),
                    totp: (!otp.is_empty()).then_some(otp.as_str()),
                    cert_sha256: peer_cert.as_deref(),
                };
                match s.token.authenticate(&creds) {
                    Ok(p) => {
                        p.role.name().clone_into(&mut a.role);
                        s.audit(&a, "login", "ok", String::new());
                        Ok(p)
                    }
                    Err(Error::PinIncorrect) => {
                        tracing::warn!(user = %shown, "login failed");
                        s.audit(&a, "login", "bad-credentials", String::new());
                        Err(Status::unauthenticated("authentication failed"))
                    }
                    Err(Error::PinLocked) => {
                        tracing::warn!(user = %shown, "login refused: locked");
                        s.audit(&a, "login", "locked", String::new());
                        Err(Status::permission_denied(
                            "user is locked after too many failed logins",
                        ))
                    }
                    Err(e) => {
                        s.audit(&a, "login", bulwark_core::audit::error_code(&e), String::new());
                        Err(core(&e))
                    }
                }
            })
            .await?;
        let session = self.state.open_session(&principal, &identity)?;
        tracing::info!(user = %principal.name, role = principal.role.name(), "login");
        Ok(Response::new(pb::LoginResponse {
            session,
            role: principal.role.name().into(),
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
        tracing::info!(user = %s.user, label = %keys::shown(&r.label), key_type = %keys::shown(&r.key_type), "generate key");
        let info = self
            .state
            .run("generate-key", actor, move |st| {
                let info = keys::generate(&st.token, &r.key_type, &r.label, r.extractable)
                    .and_then(|()| keys::show(&st.token, &r.label))
                    .map_err(|e| core(&e));
                st.labels.clear();
                // Crypto users get the key only through grants (the token's access lists).
                info
            })
            .await?;
        Ok(Response::new(info))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let (_, actor) = self.auth(&req, USE, "list-keys").await?;
        // The token lists only what this caller may see.
        let keys = self
            .state
            .run("list-keys", actor, move |st| keys::list(&st.token).map_err(|e| core(&e)))
            .await?;
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    async fn show_key(&self, req: Request<pb::KeyName>) -> Result<Response<pb::KeyInfo>, Status> {
        let (_, actor) = self.auth(&req, USE, "show-key").await?;
        let label = req.into_inner().label;
        let k = self
            .state
            .run("show-key", actor, move |st| keys::show(&st.token, &label).map_err(|e| core(&e)))
            .await?;
        Ok(Response::new(k))
    }

    async fn destroy_key(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::DestroyKeyResponse>, Status> {
        let (s, actor) = self.auth(&req, MANAGE, "destroy-key").await?;
        let label = req.into_inner().label;
        tracing::info!(user = %s.user, label = %keys::shown(&label), "destroy key");
        let destroyed = self
            .state
            .run("destroy-key", actor, move |st| {
                // The token drops the key's grants with it.
                let r = keys::destroy(&st.token, &label).map_err(|e| core(&e));
                st.labels.clear();
                r
            })
            .await?;
        Ok(Response::new(pb::DestroyKeyResponse { destroyed }))
    }

    async fn public_key(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::PublicKeyResponse>, Status> {
        let (_, actor) = self.auth(&req, USE, "public-key").await?;
        let label = req.into_inner().label;
        let pem = self
            .state
            .run("public-key", actor, move |st| {
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
                st.labels
                    .with(&st.token, sess.user_id, &r.key, Purpose::Sign, |h, spec| {
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
                st.labels
                    .with(&st.token, sess.user_id, &r.key, Purpose::Verify, |h, spec| {
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
                st.labels
                    .with(&st.token, sess.user_id, &r.key, Purpose::Aes, |h, _| {
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
                st.labels
                    .with(&st.token, sess.user_id, &r.key, Purpose::Aes, |h, _| {
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
                st.labels
                    .with(&st.token, sess.user_id, &r.key, Purpose::Sign, |h, spec| {
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
                st.labels
                    .with(&st.token, sess.user_id, &r.key, Purpose::Aes, |h, _| {
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
        bulwark_core::kernel::check_user_name(&r.name).map_err(|e| core(&e))?;
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
                let totp_flag = if with_totp { "totp" } else { "" };
                let fields = [name.as_str(), role.name(), totp_flag, cert.as_str()];
                let approved_by =
                    st.check_approvals("create-user", &fields, &approvals, not_after)?;
                let mut resp = pb::CreateUserResponse::default();
                let mut secret = Zeroizing::new(vec![0u8; 20]);
                if with_totp {
                    st.token.random(&mut secret).map_err(|e| core(&e))?;
                    // totp-rs only formats the enrolment URI; codes are checked by the token.
                    let totp = totp_rs::Builder::new()
                        .with_secret(secret.to_vec())
                        .with_account_name(name.clone())
                        .with_issuer(Some("Bulwark"))
                        .build()
                        .map_err(|_| Status::internal("internal error"))?;
                    resp.otpauth_uri =
                        totp.to_url().map_err(|_| Status::internal("internal error"))?;
                    resp.totp_secret_base32 = totp.secret().to_base32();
                }
                let totp = with_totp.then_some(&secret[..]);
                st.token.create_user(&name, role, password.as_bytes(), totp).map_err(
                    |e| match e {
                        Error::Exists(_) => Status::already_exists(format!("user {name:?} exists")),
                        e => core(&e),
                    },
                )?;
                if !cert.is_empty() {
                    st.token.bind_user_certificate(&name, &cert).map_err(|e| core(&e))?;
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
                // The token removes the user's login state and every grant with it.
                let removed = st.token.delete_user(&name).map_err(|e| core(&e))?;
                let ended = removed.map_or(0, |id| st.close_sessions_of(id));
                let result = if removed.is_some() { "ok" } else { "not-found" };
                let detail = format!("user {}", keys::shown(&name));
                st.audit(&current_actor().unwrap_or_default(), "delete-user", result, detail);
                Ok((removed.is_some(), name, ended))
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
        let (_, actor) = self.auth(&req, &[Role::SecurityOfficer], "list-users").await?;
        let users = self
            .state
            .run("list-users", actor, |st| st.token.list_users().map_err(|e| core(&e)))
            .await?
            .into_iter()
            .map(|u| pb::UserInfo {
                name: u.name,
                role: u.role.name().into(),
                totp: u.totp,
                locked: u.locked,
                cert_bound: u.cert_bound,
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
            let who = Grantee::parse(&g.principal).map_err(|e| core(&e))?;
            let ops = Ops::parse(g.operations.iter().map(String::as_str)).map_err(|e| core(&e))?;
            grants.push((who, ops));
        }
        tracing::info!(user = %s.user, label = %keys::shown(&r.label), grants = grants.len(), "set key access");
        self.state
            .run("set-key-access", actor, move |st| {
                keys::set_access(&st.token, &r.label, &grants).map_err(|e| core(&e))?;
                st.labels.clear();
                let detail = format!("{} grants {}", keys::shown(&r.label), grants.len());
                st.audit(&current_actor().unwrap_or_default(), "set-key-access", "ok", detail);
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::SetKeyAccessResponse {}))
    }

    async fn set_key_trusted(
        &self,
        req: Request<pb::SetKeyTrustedRequest>,
    ) -> Result<Response<pb::SetKeyTrustedResponse>, Status> {
        let (so, actor) = self.auth(&req, &[Role::SecurityOfficer], "set-key-trusted").await?;
        let r = req.into_inner();
        tracing::warn!(user = %so.user, label = %keys::shown(&r.label), trusted = r.trusted, "set key trusted");
        let objects = self
            .state
            .run("set-key-trusted", actor, move |st| {
                let n = st.token.set_trusted_by_label(&r.label, r.trusted).map_err(|e| core(&e))?;
                st.labels.clear();
                Ok(n)
            })
            .await?;
        Ok(Response::new(pb::SetKeyTrustedResponse { objects }))
    }

    async fn unlock_user(
        &self,
        req: Request<pb::UnlockUserRequest>,
    ) -> Result<Response<pb::UnlockUserResponse>, Status> {
        let (so, actor) = self.auth(&req, &[Role::SecurityOfficer], "unlock-user").await?;
        let name = req.into_inner().name;
        tracing::warn!(user = %so.user, unlocked = %keys::shown(&name), "unlock user");
        self.state
            .run("unlock-user", actor, move |st| {
                if !st.token.unlock_user(&name).map_err(|e| core(&e))? {
                    return Err(Status::not_found(format!("no user {name:?}")));
                }
                st.audit(
                    &current_actor().unwrap_or_default(),
                    "unlock-user",
                    "ok",
                    format!("user {}", keys::shown(&name)),
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
                let changed = st.token.set_user_role(&name, role).map_err(|e| core(&e))?;
                // The token applies the new role at once; the sessions end too, so that the
                // user logs in again under the role it now has.
                let ended = changed.map_or(0, |id| st.close_sessions_of(id));
                let changed = changed.is_some();
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
