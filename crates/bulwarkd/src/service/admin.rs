//! Administration: users and roles (the kernel's records), quorum approvals, zeroization, the
//! tamper alarm and the audit log for auditors.

use bulwark_core::audit::current_actor;
use bulwark_core::kernel::Role;
use bulwark_core::Error;
use bulwark_proto::v1::{self as pb};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::{core, HsmService, AUDIT};
use crate::keys::{self};
use crate::state::HsmState;

pub(super) async fn create_user(
    svc: &HsmService,
    req: Request<pb::CreateUserRequest>,
) -> Result<Response<pb::CreateUserResponse>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "create-user").await?;
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
    let resp = svc
        .state
        .run("create-user", actor, move |st| {
            let _admin = st.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let totp_flag = if with_totp { "totp" } else { "" };
            let fields = [name.as_str(), role.name(), totp_flag, cert.as_str()];
            let approved_by = st.check_approvals("create-user", &fields, &approvals, not_after)?;
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
                resp.otpauth_uri = totp.to_url().map_err(|_| Status::internal("internal error"))?;
                resp.totp_secret_base32 = totp.secret().to_base32();
            }
            let totp = with_totp.then_some(&secret[..]);
            st.token.create_user(&name, role, password.as_bytes(), totp).map_err(|e| match e {
                Error::Exists(_) => Status::already_exists(format!("user {name:?} exists")),
                e => core(&e),
            })?;
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

pub(super) async fn delete_user(
    svc: &HsmService,
    req: Request<pb::DeleteUserRequest>,
) -> Result<Response<pb::DeleteUserResponse>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "delete-user").await?;
    let r = req.into_inner();
    let (name, approvals, not_after) = (r.name, r.approvals, r.approval_not_after);
    let removed = svc
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

pub(super) async fn list_users(
    svc: &HsmService,
    req: Request<pb::ListUsersRequest>,
) -> Result<Response<pb::ListUsersResponse>, Status> {
    let (_, actor) = svc.auth(&req, &[Role::SecurityOfficer], "list-users").await?;
    let users = svc
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

pub(super) async fn unlock_user(
    svc: &HsmService,
    req: Request<pb::UnlockUserRequest>,
) -> Result<Response<pb::UnlockUserResponse>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "unlock-user").await?;
    let name = req.into_inner().name;
    tracing::warn!(user = %so.user, unlocked = %keys::shown(&name), "unlock user");
    svc.state
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

pub(super) async fn set_user_role(
    svc: &HsmService,
    req: Request<pb::SetUserRoleRequest>,
) -> Result<Response<pb::SetUserRoleResponse>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "set-user-role").await?;
    let r = req.into_inner();
    let role = Role::parse(&r.role).ok_or_else(|| Status::invalid_argument("unknown role"))?;
    let (name, approvals, not_after) = (r.name, r.approvals, r.approval_not_after);
    let changed = svc
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
            let detail =
                format!("user {name} role {} approved by [{}]", role.name(), approved_by.join(","));
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

pub(super) async fn zeroize(
    svc: &HsmService,
    req: Request<pb::ZeroizeRequest>,
) -> Result<Response<pb::ZeroizeResponse>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "zeroize").await?;
    let r = req.into_inner();
    let (approvals, not_after) = (r.approvals, r.approval_not_after);
    tracing::warn!(user = %so.user, "zeroize requested");
    svc.state
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

/// Records an audit export from `since` and signs the checkpoint the export ends with (it
/// covers every exported record); the log to export.
fn begin_export(st: &HsmState, since: u64) -> Result<&bulwark_core::audit::AuditLog, Status> {
    let log = st
        .token
        .audit_log()
        .ok_or_else(|| Status::failed_precondition("this HSM has no audit log"))?;
    st.audit(&current_actor().unwrap_or_default(), "audit-export", "ok", format!("since {since}"));
    log.checkpoint().map_err(|e| core(&e))?;
    Ok(log)
}

pub(super) async fn audit_export(
    svc: &HsmService,
    req: Request<pb::AuditExportRequest>,
) -> Result<Response<pb::AuditExportResponse>, Status> {
    let (_, actor) = svc.auth(&req, AUDIT, "audit-export").await?;
    let since = req.into_inner().since;
    let lines = svc
        .state
        .run("audit-export", actor, move |st| {
            let log = begin_export(st, since)?;
            let lines = log.export_lines(since).map_err(|e| core(&e))?;
            bulwark_core::audit::lines_to_json(&lines).map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(pb::AuditExportResponse { lines }))
}

/// [`audit_export`] as a stream of chunks: the export runs on a blocking thread and hands each
/// chunk over a bounded channel, so neither side holds the whole log.
pub(super) async fn audit_export_stream(
    svc: &HsmService,
    req: Request<pb::AuditExportRequest>,
) -> Result<Response<super::AuditStream>, Status> {
    const CHUNK_BYTES: usize = 1 << 20;
    let (_, actor) = svc.auth(&req, AUDIT, "audit-export").await?;
    let since = req.into_inner().since;
    let lines = svc
        .state
        .run("audit-export", actor, move |st| {
            let log = begin_export(st, since)?;
            log.export_iter(since).map_err(|e| core(&e))
        })
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for line in lines {
            let json = line.and_then(|l| {
                serde_json::to_string(&l).map_err(|_| bulwark_core::Error::Internal("export json"))
            });
            match json {
                Ok(s) => {
                    bytes += s.len();
                    chunk.push(s);
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(core(&e)));
                    return;
                }
            }
            if bytes >= CHUNK_BYTES {
                bytes = 0;
                let lines = std::mem::take(&mut chunk);
                if tx.blocking_send(Ok(pb::AuditExportChunk { lines })).is_err() {
                    return; // the client went away
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(Ok(pb::AuditExportChunk { lines: chunk }));
        }
    });
    Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

pub(super) async fn audit_public_key(
    svc: &HsmService,
    req: Request<pb::AuditPublicKeyRequest>,
) -> Result<Response<pb::AuditPublicKeyResponse>, Status> {
    let (_, actor) = svc.auth(&req, AUDIT, "audit-public-key").await?;
    let public_key = svc
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

pub(super) async fn clear_tamper(
    svc: &HsmService,
    req: Request<pb::ClearTamperRequest>,
) -> Result<Response<pb::ClearTamperResponse>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "tamper-clear").await?;
    svc.state
        .run("tamper-clear", actor, |st| st.token.clear_tamper_unsealed().map_err(|e| core(&e)))
        .await?;
    tracing::warn!(user = %so.user, "tamper alarm cleared");
    Ok(Response::new(pb::ClearTamperResponse {}))
}
