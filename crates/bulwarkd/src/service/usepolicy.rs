//! Usage policy per key over the network (docs/lifecycle.md, "Usage policy"): `KeyPolicy`,
//! `SetKeyPolicy`, `UseApprovers`, `SetUseApprovers`, and the per-use quorum approvals any key
//! operation may carry in its metadata (`bulwark-use-approvals-bin`). The token decides who may
//! change a policy, counts uses and checks approvals; this layer translates names and labels.

use bulwark_core::kernel::Role;
use bulwark_core::token::{Rate, UsagePolicy, UseApproval, UseApprovals, UseApprover};
use bulwark_core::Error;

use crate::store::NodeToken as Token;
use bulwark_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{core, HsmService, ANY, USE};
use crate::state::HsmState;

/// The session id of keys the daemon makes (token objects: the id names no live session).
const IMPORT_SESSION: u64 = 1;

/// The per-use approvals a request carries, if any.
pub(crate) fn approvals_of<T>(req: &Request<T>) -> Result<Option<UseApprovals>, Status> {
    let Some(v) = req.metadata().get_bin(bulwark_proto::USE_APPROVALS_METADATA) else {
        return Ok(None);
    };
    let bytes = v.to_bytes().map_err(|_| Status::invalid_argument("malformed use approvals"))?;
    if bytes.len() > 64 * 1024 {
        return Err(Status::invalid_argument("use approvals too large"));
    }
    let m = bulwark_proto::decode_use_approvals(bytes.as_ref())
        .ok_or_else(|| Status::invalid_argument("malformed use approvals"))?;
    Ok(Some(UseApprovals {
        request_id: m.request_id,
        not_after: m.not_after,
        approvals: m
            .approvals
            .into_iter()
            .map(|a| UseApproval { approver: a.approver, signature: a.signature })
            .collect(),
    }))
}

/// `f` run with the request's per-use approvals (see [`approvals_of`]) set for the token.
pub(crate) fn carrying<T>(
    approvals: Option<UseApprovals>,
    f: impl FnOnce(&HsmState) -> Result<T, Status> + Send + 'static,
) -> impl FnOnce(&HsmState) -> Result<T, Status> + Send + 'static {
    move |st| match approvals {
        Some(a) => bulwark_core::token::with_use_approvals(a, || f(st)),
        None => f(st),
    }
}

/// The secret or private key objects labelled `label` (what a policy applies to).
fn policy_handles(t: &Token, label: &str) -> bulwark_core::Result<Vec<u64>> {
    if label.is_empty() || label.len() > bulwark_core::limits::MAX_LABEL {
        return Err(Error::ArgumentsBad("key label must be 1 to 256 bytes"));
    }
    let hs: Vec<u64> = t
        .find_by_label(label)?
        .into_iter()
        .filter(|o| o.handle < bulwark_core::token::SESSION_HANDLE_BASE)
        .filter(|o| {
            matches!(
                o.attrs.class(),
                Some(
                    bulwark_core::attr::ObjectClass::SecretKey
                        | bulwark_core::attr::ObjectClass::PrivateKey
                )
            )
        })
        .map(|o| o.handle)
        .collect();
    if hs.is_empty() {
        return Err(Error::NotFound(label.to_owned()));
    }
    Ok(hs)
}

fn response(t: &Token, label: &str) -> bulwark_core::Result<pb::KeyPolicyResponse> {
    let h = policy_handles(t, label)?[0];
    let (p, c) = t.usage_policy(h)?;
    let key_uid = match t.attribute(h, bulwark_core::attr::AttrType::UniqueId)? {
        bulwark_core::attr::AttrValue::Bytes(uid) => String::from_utf8_lossy(&uid).into_owned(),
        _ => String::new(),
    };
    Ok(pb::KeyPolicyResponse {
        label: label.to_owned(),
        policy: Some(pb::KeyPolicy {
            principals: p.principals.iter().map(|id| t.principal_name(*id)).collect(),
            max_uses: p.max_uses.unwrap_or(0),
            has_max_uses: p.max_uses.is_some(),
            rate_uses: p.rate.map_or(0, |r| r.uses),
            rate_period: p.rate.map_or(0, |r| r.period),
            quorum: p.quorum,
        }),
        uses: c.uses,
        rate_available: p.rate.map_or(0, |r| c.rate_available(r, t.now())),
        key_uid,
        store_id: t.status()?.store_id,
    })
}

/// The core policy a request describes (principal names resolved to ids).
fn policy_of(t: &Token, p: &pb::KeyPolicy) -> bulwark_core::Result<UsagePolicy> {
    let mut principals = Vec::new();
    for n in &p.principals {
        let id = t.principal_id(n)?;
        if !principals.contains(&id) {
            principals.push(id);
        }
    }
    let rate = match (p.rate_uses, p.rate_period) {
        (0, 0) => None,
        (uses, period) => Some(Rate { uses, period }),
    };
    let u = UsagePolicy {
        principals,
        max_uses: p.has_max_uses.then_some(p.max_uses),
        rate,
        quorum: p.quorum,
    };
    u.check()?;
    Ok(u)
}

pub(super) async fn key_policy(
    svc: &HsmService,
    req: Request<pb::KeyName>,
) -> Result<Response<pb::KeyPolicyResponse>, Status> {
    let (_, actor) = svc.auth(&req, USE, "key-policy").await?;
    let label = req.into_inner().label;
    let r = svc
        .state
        .run("key-policy", actor, move |st| response(&st.token, &label).map_err(|e| core(&e)))
        .await?;
    Ok(Response::new(r))
}

pub(super) async fn set_key_policy(
    svc: &HsmService,
    req: Request<pb::SetKeyPolicyRequest>,
) -> Result<Response<pb::KeyPolicyResponse>, Status> {
    let (s, actor) = svc.auth(&req, USE, "set-key-policy").await?;
    let r = req.into_inner();
    tracing::info!(user = %s.user, label = %crate::keys::shown(&r.label), "set key policy");
    let out = svc
        .state
        .run("set-key-policy", actor, move |st| {
            let p = policy_of(&st.token, &r.policy.unwrap_or_default()).map_err(|e| core(&e))?;
            let hs = policy_handles(&st.token, &r.label).map_err(|e| core(&e))?;
            // The token checks who may change the policy and records the change.
            st.token.set_usage_policy(&hs, &p).map_err(|e| core(&e))?;
            response(&st.token, &r.label).map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(out))
}

pub(super) async fn use_approvers(
    svc: &HsmService,
    req: Request<pb::UseApproversRequest>,
) -> Result<Response<pb::UseApproversResponse>, Status> {
    let (_, actor) = svc.auth(&req, ANY, "use-approvers").await?;
    let approvers = svc
        .state
        .run("use-approvers", actor, move |st| st.token.use_approvers().map_err(|e| core(&e)))
        .await?;
    Ok(Response::new(pb::UseApproversResponse {
        approvers: approvers
            .into_iter()
            .map(|a| pb::UseApprover { name: a.name, public_key: a.public_key })
            .collect(),
    }))
}

pub(super) async fn set_use_approvers(
    svc: &HsmService,
    req: Request<pb::SetUseApproversRequest>,
) -> Result<Response<pb::UseApproversResponse>, Status> {
    let (s, actor) = svc.auth(&req, &[Role::SecurityOfficer], "set-use-approvers").await?;
    let r = req.into_inner();
    tracing::warn!(user = %s.user, approvers = r.approvers.len(), "set use approvers");
    let approvers: Vec<UseApprover> = r
        .approvers
        .iter()
        .map(|a| UseApprover { name: a.name.clone(), public_key: a.public_key.clone() })
        .collect();
    let out = approvers.clone();
    svc.state
        .run("set-use-approvers", actor, move |st| {
            // Changing who approves key uses is a policy change: the daemon's quorum, when
            // configured, approves it like user changes.
            let lines: Vec<String> =
                approvers.iter().map(|a| format!("{}={}", a.name, a.public_key)).collect();
            let fields: Vec<&str> = lines.iter().map(String::as_str).collect();
            st.check_approvals("set-use-approvers", &fields, &r.approvals, r.approval_not_after)?;
            st.token.set_use_approvers(&approvers).map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(pb::UseApproversResponse {
        approvers: out
            .into_iter()
            .map(|a| pb::UseApprover { name: a.name, public_key: a.public_key })
            .collect(),
    }))
}

pub(super) async fn import_wrapped_key(
    svc: &HsmService,
    req: Request<pb::ImportWrappedKeyRequest>,
) -> Result<Response<pb::KeyInfo>, Status> {
    let (sess, actor) = svc.auth(&req, super::MANAGE, "import-wrapped-key").await?;
    let r = req.into_inner();
    tracing::info!(user = %sess.user, label = %crate::keys::shown(&r.label), unwrap_with = %crate::keys::shown(&r.unwrap_with), "import wrapped key");
    let out = svc
        .state
        .run("import-wrapped-key", actor, move |st| {
            let t = &st.token;
            let policy = r.policy.as_ref().map(|kp| policy_of(t, kp)).transpose();
            let policy = policy.map_err(|e| core(&e))?;
            let uh = unwrapping_handle(t, &r.unwrap_with).map_err(|e| core(&e))?;
            let w = bulwark_core::token::WrappedImport {
                wrapped: &r.wrapped,
                unwrap_with: uh,
                mechanism: &r.mechanism,
                key_type: &r.key_type,
                label: &r.label,
                extractable: r.extractable,
                sensitive: !r.not_sensitive,
            };
            let h = t.import_wrapped(&w, IMPORT_SESSION).map_err(|e| core(&e))?;
            if let Some(pol) = policy {
                if let Err(e) = t.set_usage_policy(&[h], &pol) {
                    // No key without the policy asked for.
                    let _ = t.destroy_object(h);
                    return Err(core(&e));
                }
            }
            crate::keys::show(t, &r.label).map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(out))
}

/// The unwrapping key labelled `label`: an RSA private key or an AES secret key.
fn unwrapping_handle(t: &Token, label: &str) -> bulwark_core::Result<u64> {
    use bulwark_core::attr::ObjectClass;
    let objs = t.find_by_label(label)?;
    let pick = |c: ObjectClass| -> Vec<u64> {
        objs.iter().filter(|o| o.attrs.class() == Some(c)).map(|o| o.handle).collect()
    };
    match (pick(ObjectClass::PrivateKey).as_slice(), pick(ObjectClass::SecretKey).as_slice()) {
        ([h], _) | ([], [h]) => Ok(*h),
        ([], []) => Err(Error::NotFound(label.to_owned())),
        _ => Err(Error::Ambiguous(label.to_owned())),
    }
}
