//! The gRPC service: authenticates each request (a bearer token bound to the connection's TLS
//! identity), refuses service while sealed, and runs the operation on the worker pool as the
//! session's principal. Every access decision — which keys a user sees and uses, who manages
//! users, grants and approvals — is the token's (bulwark-core's kernel); this layer translates
//! labels and names. Core errors become statuses in `bulwark_proto::status_from_core` (one
//! place); unseal refusals in [`unseal_status`].
//!
//! Logs name the operation, the user and the key label, never data, keys or passwords.
//!
//! The RPCs live by concern in `session.rs` (seal state, login), `key_ops.rs` (keys by label)
//! and `admin.rs` (users, approvals, zeroize, tamper, audit); this file holds the
//! authentication every one of them goes through and the trait's dispatch.

mod admin;
mod backup;
mod cluster;
mod cluster_audit;
mod destruction;
mod key_ops;
mod session;
mod usepolicy;
mod versions;
use std::sync::Arc;
use std::time::Duration;

use bulwark_core::seal::UnsealError;
use bulwark_core::Error;
use bulwark_proto::status_from_core;
use bulwark_proto::v1 as pb;
use bulwark_proto::v1::hsm_server::Hsm;
use tonic::{Request, Response, Status};

use crate::state::{HsmState, Session};
use bulwark_core::audit::Actor;
use bulwark_core::kernel::{Caller, Role};

pub use destruction::SWEEP_EVERY as DESTROY_SWEEP_EVERY;

/// Largest batch accepted in one request.
pub(crate) const MAX_BATCH: usize = bulwark_core::limits::MAX_BATCH;
/// Largest random request.
pub(crate) const MAX_RANDOM: u32 = bulwark_core::limits::MAX_RANDOM as u32;

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
pub(crate) const AUDIT: &[Role] = &[Role::SecurityOfficer, Role::Auditor];
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

pub(crate) fn unseal_status(e: &UnsealError) -> Status {
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

/// The chunks of a streamed audit export.
pub(crate) type AuditStream =
    tokio_stream::wrappers::ReceiverStream<Result<pb::AuditExportChunk, Status>>;

#[tonic::async_trait]
impl Hsm for HsmService {
    type AuditExportStreamStream = AuditStream;

    async fn audit_export_stream(
        &self,
        req: Request<pb::AuditExportRequest>,
    ) -> Result<Response<AuditStream>, Status> {
        admin::audit_export_stream(self, req).await
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        session::status(self, req).await
    }

    type AuditExportClusterStream = AuditStream;

    async fn audit_export_cluster(
        &self,
        req: Request<pb::AuditExportClusterRequest>,
    ) -> Result<Response<AuditStream>, Status> {
        cluster_audit::export(self, req).await
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        cluster::status(self, req).await
    }

    async fn unseal(
        &self,
        req: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::UnsealResponse>, Status> {
        session::unseal(self, req).await
    }

    async fn seal(
        &self,
        req: Request<pb::SealRequest>,
    ) -> Result<Response<pb::SealResponse>, Status> {
        session::seal(self, req).await
    }

    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        session::login(self, req).await
    }

    async fn logout(
        &self,
        req: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        session::logout(self, &req);
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn generate_key(
        &self,
        req: Request<pb::GenerateKeyRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        key_ops::generate_key(self, req).await
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        key_ops::list_keys(self, req).await
    }

    async fn show_key(&self, req: Request<pb::KeyName>) -> Result<Response<pb::KeyInfo>, Status> {
        key_ops::show_key(self, req).await
    }

    async fn destroy_key(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::DestroyKeyResponse>, Status> {
        destruction::destroy_key(self, req).await
    }

    async fn key_state(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::KeyStateResponse>, Status> {
        key_ops::key_state(self, req).await
    }

    async fn change_key_state(
        &self,
        req: Request<pb::ChangeKeyStateRequest>,
    ) -> Result<Response<pb::KeyStateResponse>, Status> {
        key_ops::change_key_state(self, req).await
    }

    async fn key_policy(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::KeyPolicyResponse>, Status> {
        usepolicy::key_policy(self, req).await
    }

    async fn set_key_policy(
        &self,
        req: Request<pb::SetKeyPolicyRequest>,
    ) -> Result<Response<pb::KeyPolicyResponse>, Status> {
        usepolicy::set_key_policy(self, req).await
    }

    async fn use_approvers(
        &self,
        req: Request<pb::UseApproversRequest>,
    ) -> Result<Response<pb::UseApproversResponse>, Status> {
        usepolicy::use_approvers(self, req).await
    }

    async fn set_use_approvers(
        &self,
        req: Request<pb::SetUseApproversRequest>,
    ) -> Result<Response<pb::UseApproversResponse>, Status> {
        usepolicy::set_use_approvers(self, req).await
    }

    async fn import_wrapped_key(
        &self,
        req: Request<pb::ImportWrappedKeyRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        usepolicy::import_wrapped_key(self, req).await
    }

    async fn rotate_key(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::KeyVersionsResponse>, Status> {
        versions::rotate_key(self, req).await
    }

    async fn key_versions(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::KeyVersionsResponse>, Status> {
        versions::key_versions(self, req).await
    }

    async fn set_key_rotation(
        &self,
        req: Request<pb::SetKeyRotationRequest>,
    ) -> Result<Response<pb::KeyVersionsResponse>, Status> {
        versions::set_key_rotation(self, req).await
    }

    async fn public_key(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::PublicKeyResponse>, Status> {
        key_ops::public_key(self, req).await
    }

    async fn sign(
        &self,
        req: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        key_ops::sign(self, req).await
    }

    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        key_ops::verify(self, req).await
    }

    async fn encrypt(
        &self,
        req: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        key_ops::encrypt(self, req).await
    }

    async fn decrypt(
        &self,
        req: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        key_ops::decrypt(self, req).await
    }

    async fn random(
        &self,
        req: Request<pb::RandomRequest>,
    ) -> Result<Response<pb::RandomResponse>, Status> {
        key_ops::random(self, req).await
    }

    async fn batch_sign(
        &self,
        req: Request<pb::BatchSignRequest>,
    ) -> Result<Response<pb::BatchSignResponse>, Status> {
        key_ops::batch_sign(self, req).await
    }

    async fn batch_encrypt(
        &self,
        req: Request<pb::BatchEncryptRequest>,
    ) -> Result<Response<pb::BatchEncryptResponse>, Status> {
        key_ops::batch_encrypt(self, req).await
    }

    async fn set_key_access(
        &self,
        req: Request<pb::SetKeyAccessRequest>,
    ) -> Result<Response<pb::SetKeyAccessResponse>, Status> {
        key_ops::set_key_access(self, req).await
    }

    async fn set_key_trusted(
        &self,
        req: Request<pb::SetKeyTrustedRequest>,
    ) -> Result<Response<pb::SetKeyTrustedResponse>, Status> {
        key_ops::set_key_trusted(self, req).await
    }

    async fn export_key(
        &self,
        req: Request<pb::ExportKeyRequest>,
    ) -> Result<Response<pb::ExportKeyResponse>, Status> {
        key_ops::export_key(self, req).await
    }

    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        admin::create_user(self, req).await
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        admin::delete_user(self, req).await
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        admin::list_users(self, req).await
    }

    async fn unlock_user(
        &self,
        req: Request<pb::UnlockUserRequest>,
    ) -> Result<Response<pb::UnlockUserResponse>, Status> {
        admin::unlock_user(self, req).await
    }

    async fn set_user_role(
        &self,
        req: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::SetUserRoleResponse>, Status> {
        admin::set_user_role(self, req).await
    }

    async fn zeroize(
        &self,
        req: Request<pb::ZeroizeRequest>,
    ) -> Result<Response<pb::ZeroizeResponse>, Status> {
        admin::zeroize(self, req).await
    }

    type BackupStream = backup::BackupStream;

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<backup::BackupStream>, Status> {
        backup::backup(self, req).await
    }

    async fn restore(
        &self,
        req: Request<tonic::Streaming<pb::RestoreChunk>>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        backup::restore(self, req).await
    }

    async fn audit_export(
        &self,
        req: Request<pb::AuditExportRequest>,
    ) -> Result<Response<pb::AuditExportResponse>, Status> {
        admin::audit_export(self, req).await
    }

    async fn audit_public_key(
        &self,
        req: Request<pb::AuditPublicKeyRequest>,
    ) -> Result<Response<pb::AuditPublicKeyResponse>, Status> {
        admin::audit_public_key(self, req).await
    }

    async fn cancel_destroy_key(
        &self,
        req: Request<pb::KeyName>,
    ) -> Result<Response<pb::CancelDestroyKeyResponse>, Status> {
        destruction::cancel_destroy_key(self, req).await
    }

    async fn list_scheduled_keys(
        &self,
        req: Request<pb::ListScheduledKeysRequest>,
    ) -> Result<Response<pb::ListScheduledKeysResponse>, Status> {
        destruction::list_scheduled_keys(self, req).await
    }

    async fn get_destroy_settings(
        &self,
        req: Request<pb::GetDestroySettingsRequest>,
    ) -> Result<Response<pb::DestroySettings>, Status> {
        destruction::get_destroy_settings(self, req).await
    }

    async fn set_destroy_settings(
        &self,
        req: Request<pb::SetDestroySettingsRequest>,
    ) -> Result<Response<pb::DestroySettings>, Status> {
        destruction::set_destroy_settings(self, req).await
    }

    async fn clear_tamper(
        &self,
        req: Request<pb::ClearTamperRequest>,
    ) -> Result<Response<pb::ClearTamperResponse>, Status> {
        admin::clear_tamper(self, req).await
    }
}
