//! Key versions and rotation (docs/lifecycle.md, "Versions and rotation"): `RotateKey`,
//! `KeyVersions`, `SetKeyRotation`. The token decides who may rotate (a crypto officer, like
//! every key-management RPC), copies the access list, fences concurrent rotations and records
//! every change; the daemon only resolves the label and drops its label cache.

use bulwark_core::attr::ObjectClass;
use bulwark_core::token::KeyVersionInfo;
use bulwark_core::{Error, Result};

use crate::store::NodeToken as Token;
use bulwark_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{core, HsmService, MANAGE, USE};
use crate::keys;

/// The secret or private key (else the public key) of the current version of `label`: the
/// handle a rotation or a period change takes.
fn main_handle(t: &Token, label: &str) -> Result<u64> {
    if label.is_empty() || label.len() > bulwark_core::limits::MAX_LABEL {
        return Err(Error::ArgumentsBad("key label must be 1 to 256 bytes"));
    }
    let objs = t.resolve_key(label, None)?;
    let pick = |c: ObjectClass| objs.iter().filter(|o| o.attrs.class() == Some(c)).collect();
    for class in [ObjectClass::PrivateKey, ObjectClass::SecretKey, ObjectClass::PublicKey] {
        let v: Vec<_> = pick(class);
        match v.as_slice() {
            [o] => return Ok(o.handle),
            [] => {}
            _ => return Err(Error::Ambiguous(label.to_owned())),
        }
    }
    Err(Error::NotFound(label.to_owned()))
}

fn version_pb(v: &KeyVersionInfo) -> pb::KeyVersion {
    pb::KeyVersion {
        version: v.version,
        family: v.family.clone(),
        state: v.state.name().to_owned(),
        current: v.current,
        handles: v.handles.clone(),
        activation_date: v.lifecycle.activation.unwrap_or(0),
        deactivation_date: v.lifecycle.stop().unwrap_or(0),
        rotated_at: v.rotated_at.unwrap_or(0),
        rotation_period: v.rotation_period.unwrap_or(0),
        next_rotation: v.next_rotation.unwrap_or(0),
        min_decrypt_version: v.min_decrypt_version,
    }
}

/// Every version of `label`, and the public-key history bundle of a key pair.
fn versions(t: &Token, label: &str) -> Result<pb::KeyVersionsResponse> {
    let vs = t.key_versions(label)?;
    let history_json = match t.public_key_history(label) {
        Ok(h) => h.to_json(),
        Err(_) => String::new(), // a secret key has no public-key history
    };
    Ok(pb::KeyVersionsResponse {
        label: label.to_owned(),
        versions: vs.iter().map(version_pb).collect(),
        history_json,
    })
}

pub(super) async fn rotate_key(
    svc: &HsmService,
    req: Request<pb::KeyName>,
) -> Result<Response<pb::KeyVersionsResponse>, Status> {
    let (s, actor) = svc.auth(&req, MANAGE, "rotate-key").await?;
    let label = req.into_inner().label;
    tracing::info!(user = %s.user, label = %keys::shown(&label), "rotate key");
    let out = svc
        .state
        .run("rotate-key", actor, move |st| {
            let r = main_handle(&st.token, &label)
                .and_then(|h| st.token.rotate_key(h))
                .and_then(|_| versions(&st.token, &label))
                .map_err(|e| core(&e));
            st.labels.clear();
            r
        })
        .await?;
    Ok(Response::new(out))
}

pub(super) async fn key_versions(
    svc: &HsmService,
    req: Request<pb::KeyName>,
) -> Result<Response<pb::KeyVersionsResponse>, Status> {
    let (_, actor) = svc.auth(&req, USE, "key-versions").await?;
    let label = req.into_inner().label;
    let out = svc
        .state
        .run("key-versions", actor, move |st| {
            if label.is_empty() || label.len() > bulwark_core::limits::MAX_LABEL {
                return Err(core(&Error::ArgumentsBad("key label must be 1 to 256 bytes")));
            }
            versions(&st.token, &label).map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(out))
}

pub(super) async fn set_key_rotation(
    svc: &HsmService,
    req: Request<pb::SetKeyRotationRequest>,
) -> Result<Response<pb::KeyVersionsResponse>, Status> {
    let (s, actor) = svc.auth(&req, MANAGE, "set-key-rotation").await?;
    let r = req.into_inner();
    let period = r.rotation_period != 0 || r.rotation_off;
    if !period && r.min_decrypt_version == 0 {
        return Err(Status::invalid_argument(
            "give a rotation period, rotation_off or a minimum decryption version",
        ));
    }
    if r.rotation_period != 0 && r.rotation_off {
        return Err(Status::invalid_argument("a rotation period and rotation_off in one request"));
    }
    tracing::info!(user = %s.user, label = %keys::shown(&r.label), period = r.rotation_period, off = r.rotation_off, min = r.min_decrypt_version, "set key rotation");
    let out = svc
        .state
        .run("set-key-rotation", actor, move |st| {
            let t = &st.token;
            let res = main_handle(t, &r.label)
                .and_then(|h| {
                    if period {
                        let p = (!r.rotation_off).then_some(r.rotation_period);
                        t.set_rotation_period(h, p)?;
                    }
                    if r.min_decrypt_version != 0 {
                        t.set_min_decrypt_version(h, r.min_decrypt_version)?;
                    }
                    versions(t, &r.label)
                })
                .map_err(|e| core(&e));
            st.labels.clear();
            res
        })
        .await?;
    Ok(Response::new(out))
}
