//! Scheduled destruction over the network API (docs/lifecycle.md): destroy by label (which
//! schedules when the store's wait is not 0), cancel, the list of scheduled keys, and the
//! store's destruction settings. Every rule (who may, the minimum wait, purge protection) is
//! the token's; this layer resolves labels and checks quorum approvals, which only the daemon
//! can: a wait below the store minimum is passed to the token as approved only when the
//! request carried enough valid approvals.

use bulwark_core::kernel::Role;
use bulwark_core::token::{DestroyOutcome, SESSION_HANDLE_BASE};
use bulwark_core::{Error, Result};

use crate::store::NodeToken as Token;
use bulwark_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{core, HsmService, ANY, MANAGE};
use crate::keys;

/// Destroys (or schedules the destruction of) every object labelled `label`: how many, and
/// when the material is shredded (0: at once).
pub(crate) fn destroy(t: &Token, label: &str) -> Result<(u32, u64)> {
    if label.is_empty() || label.len() > bulwark_core::limits::MAX_LABEL {
        return Err(Error::ArgumentsBad("key label must be 1 to 256 bytes"));
    }
    let mut objs = t.find_by_label(label)?;
    // Token objects if there is any (as every lookup by label of the daemon).
    if objs.iter().any(|o| o.handle < SESSION_HANDLE_BASE) {
        objs.retain(|o| o.handle < SESSION_HANDLE_BASE);
    }
    if objs.is_empty() {
        return Err(Error::NotFound(label.to_owned()));
    }
    let mut due = 0;
    for o in &objs {
        if let DestroyOutcome::Scheduled { due: d } = t.destroy_key_object(o.handle)? {
            due = due.max(d);
        }
    }
    Ok((u32::try_from(objs.len()).unwrap_or(u32::MAX), due))
}

fn cancel(t: &Token, label: &str) -> Result<(u32, String)> {
    let pending: Vec<_> =
        t.scheduled_keys(Some(label))?.into_iter().filter(|k| !k.shredded).collect();
    if pending.is_empty() {
        return Err(Error::NotFound(label.to_owned()));
    }
    let mut state = "";
    for k in &pending {
        state = t.cancel_destroy(k.handle)?.name();
    }
    Ok((u32::try_from(pending.len()).unwrap_or(u32::MAX), state.to_owned()))
}

fn settings(s: bulwark_core::destruction::DestroySettings) -> pb::DestroySettings {
    pb::DestroySettings {
        wait_secs: s.wait_secs,
        min_wait_secs: s.min_wait_secs,
        purge_protection: s.purge_protection,
    }
}

pub(super) async fn destroy_key(
    svc: &HsmService,
    req: Request<pb::KeyName>,
) -> std::result::Result<Response<pb::DestroyKeyResponse>, Status> {
    let (s, actor) = svc.auth(&req, MANAGE, "destroy-key").await?;
    let label = req.into_inner().label;
    tracing::info!(user = %s.user, label = %keys::shown(&label), "destroy key");
    let (destroyed, scheduled_for) = svc
        .state
        .run("destroy-key", actor, move |st| {
            let r = destroy(&st.token, &label).map_err(|e| core(&e));
            st.labels.clear();
            r
        })
        .await?;
    Ok(Response::new(pb::DestroyKeyResponse { destroyed, scheduled_for }))
}

pub(super) async fn cancel_destroy_key(
    svc: &HsmService,
    req: Request<pb::KeyName>,
) -> std::result::Result<Response<pb::CancelDestroyKeyResponse>, Status> {
    let (s, actor) = svc.auth(&req, MANAGE, "cancel-destroy").await?;
    let label = req.into_inner().label;
    tracing::info!(user = %s.user, label = %keys::shown(&label), "cancel destroy");
    let (cancelled, state) = svc
        .state
        .run("cancel-destroy", actor, move |st| {
            let r = cancel(&st.token, &label).map_err(|e| core(&e));
            st.labels.clear();
            r
        })
        .await?;
    Ok(Response::new(pb::CancelDestroyKeyResponse { cancelled, state }))
}

pub(super) async fn list_scheduled_keys(
    svc: &HsmService,
    req: Request<pb::ListScheduledKeysRequest>,
) -> std::result::Result<Response<pb::ListScheduledKeysResponse>, Status> {
    let (_, actor) = svc.auth(&req, MANAGE, "list-scheduled").await?;
    let label = req.into_inner().label;
    let keys = svc
        .state
        .run("list-scheduled", actor, move |st| {
            let l = (!label.is_empty()).then_some(label.as_str());
            let v = st.token.scheduled_keys(l).map_err(|e| core(&e))?;
            Ok(v.into_iter()
                .map(|k| pb::ScheduledKey {
                    handle: k.handle,
                    label: k.attrs.label(),
                    class: k.attrs.class().map_or_else(|| "?".into(), |c| format!("{c:?}")),
                    key_type: k.key_type,
                    due: k.due,
                    shredded: k.shredded,
                    state: k.state.name().to_owned(),
                })
                .collect())
        })
        .await?;
    Ok(Response::new(pb::ListScheduledKeysResponse { keys }))
}

pub(super) async fn get_destroy_settings(
    svc: &HsmService,
    req: Request<pb::GetDestroySettingsRequest>,
) -> std::result::Result<Response<pb::DestroySettings>, Status> {
    let (_, actor) = svc.auth(&req, ANY, "destroy-settings").await?;
    let s = svc
        .state
        .run("destroy-settings", actor, move |st| st.token.destroy_settings().map_err(|e| core(&e)))
        .await?;
    Ok(Response::new(settings(s)))
}

pub(super) async fn set_destroy_settings(
    svc: &HsmService,
    req: Request<pb::SetDestroySettingsRequest>,
) -> std::result::Result<Response<pb::DestroySettings>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "destroy-settings").await?;
    let r = req.into_inner();
    tracing::info!(user = %so.user, set_wait = r.set_wait, wait = r.wait_secs, purge = r.purge_protection_on, "destroy settings");
    let s = svc
        .state
        .run("destroy-settings", actor, move |st| {
            let wait = r.set_wait.then_some(r.wait_secs);
            let purge = r.purge_protection_on.then_some(true);
            let cur = st.token.destroy_settings().map_err(|e| core(&e))?;
            // Quorum approvals only matter (and are only consumed) below the minimum.
            let approved = match wait {
                Some(w) if w < cur.min_wait_secs => {
                    let field = w.to_string();
                    let by = st.check_approvals(
                        "destroy-wait",
                        &[field.as_str()],
                        &r.approvals,
                        r.approval_not_after,
                    )?;
                    !by.is_empty()
                }
                _ => false,
            };
            st.token.set_destroy_settings(wait, purge, approved).map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(settings(s)))
}

/// How often the daemon looks for destructions that fell due.
pub const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

impl crate::state::HsmState {
    /// Carries out the scheduled destructions whose wait has ended (the daemon's timer, every
    /// [`SWEEP_EVERY`]; the token also does it at unseal and on every destruction request).
    /// Does nothing while sealed; a failure is logged.
    pub fn apply_due_destructions(&self) {
        match self.token.apply_due_destructions() {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "scheduled destructions carried out"),
            Err(e) => tracing::error!(error = %e, "carrying out scheduled destructions"),
        }
    }
}
