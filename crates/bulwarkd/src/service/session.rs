//! Seal state and sessions: status, unseal shares, seal, login (the kernel authenticates;
//! the session is bound to the connection's TLS identity) and logout.

use std::time::Duration;

use bulwark_core::audit::Actor;
use bulwark_core::kernel::Role;
use bulwark_core::seal::ShareFile;
use bulwark_core::token::Credentials;
use bulwark_core::Error;
use bulwark_proto::v1::{self as pb};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::{client_id, connection_identity, core, peer_cert_sha256, unseal_status, HsmService};

pub(super) async fn status(
    svc: &HsmService,
    req: Request<pb::StatusRequest>,
) -> Result<Response<pb::StatusResponse>, Status> {
    let (progress, threshold, shares) = svc.state.unseal_progress();
    let sealed = svc.state.is_sealed();
    // Store reads: on the pool, not the reactor.
    let actor = Actor { name: "-".into(), role: "-".into(), client: client_id(&req) };
    let st = svc.state.run("status", actor, |s| s.token.status().map_err(|e| core(&e))).await?;
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
        dev_mode: svc.state.dev_mode,
        zeroized: st.zeroized,
        tamper_alarm: svc.state.token.tamper_alarm().unwrap_or_default(),
    }))
}

pub(super) async fn unseal(
    svc: &HsmService,
    req: Request<pb::UnsealRequest>,
) -> Result<Response<pb::UnsealResponse>, Status> {
    let actor =
        Actor { name: "custodian".into(), role: "custodian".into(), client: client_id(&req) };
    let a = actor.clone();
    let text = Zeroizing::new(req.into_inner().share);
    let r = svc
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

pub(super) async fn seal(
    svc: &HsmService,
    req: Request<pb::SealRequest>,
) -> Result<Response<pb::SealResponse>, Status> {
    let (s, actor) = svc.auth(&req, &[Role::SecurityOfficer], "seal").await?;
    tracing::warn!(user = %s.user, "seal requested");
    let a = actor.clone();
    svc.state
        .run("seal", actor, move |st| {
            st.audit(&a.actor(), "seal", "ok", String::new());
            st.seal();
            Ok(())
        })
        .await?;
    Ok(Response::new(pb::SealResponse {}))
}

pub(super) async fn login(
    svc: &HsmService,
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
    if let Err(st) = svc.state.require_unsealed() {
        let _ = svc
            .state
            .run_unmetered(a.clone(), move |s| {
                s.audit(&a, "login", "sealed", String::new());
                Ok(())
            })
            .await;
        svc.state.metrics.observe("login", "failed_precondition", Duration::ZERO);
        return Err(st);
    }
    let password = Zeroizing::new(password);
    let otp = Zeroizing::new(otp);
    let principal = svc
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
                    Err(Status::permission_denied("user is locked after too many failed logins"))
                }
                Err(e) => {
                    s.audit(&a, "login", bulwark_core::audit::error_code(&e), String::new());
                    Err(core(&e))
                }
            }
        })
        .await?;
    let session = svc.state.open_session(&principal, &identity)?;
    tracing::info!(user = %principal.name, role = principal.role.name(), "login");
    Ok(Response::new(pb::LoginResponse {
        session,
        role: principal.role.name().into(),
        expires_in_seconds: svc.state.session_ttl.as_secs(),
    }))
}

/// Ends the session the request's bearer token names (if any).
pub(super) fn logout(svc: &HsmService, req: &Request<pb::LogoutRequest>) {
    if let Some(t) = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        svc.state.close_session(t);
    }
}
