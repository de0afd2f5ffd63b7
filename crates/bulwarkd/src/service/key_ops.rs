//! Key operations by label: generate, list, show, destroy, public key, sign, verify, encrypt,
//! decrypt, random, batches, access lists, the trusted mark and export under wrap. Every access
//! decision is the token's; labels resolve in `crate::keys`.

use bulwark_core::audit::current_actor;
use bulwark_core::kernel::{Grantee, Ops, Role};
use bulwark_proto::v1::{self as pb, SignatureFormat};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::{core, HsmService, ANY, MANAGE, MAX_BATCH, MAX_RANDOM, USE};
use crate::keys::{self, Purpose, SignKey};
use crate::state::INLINE_MAX;

pub(super) async fn generate_key(
    svc: &HsmService,
    req: Request<pb::GenerateKeyRequest>,
) -> Result<Response<pb::KeyInfo>, Status> {
    let (s, actor) = svc.auth(&req, MANAGE, "generate-key").await?;
    let r = req.into_inner();
    tracing::info!(user = %s.user, label = %keys::shown(&r.label), key_type = %keys::shown(&r.key_type), "generate key");
    let info = svc
        .state
        .run("generate-key", actor, move |st| {
            let date = |v: u64| (v != 0).then_some(v);
            let dates = bulwark_core::token::LifecycleDates {
                activation: date(r.activation_date),
                protect_stop: date(r.protect_stop_date),
                deactivation: date(r.deactivation_date),
            };
            let info = keys::generate(&st.token, &r.key_type, &r.label, r.extractable, dates)
                .and_then(|()| keys::show(&st.token, &r.label))
                .map_err(|e| core(&e));
            st.labels.clear();
            // Crypto users get the key only through grants (the token's access lists).
            info
        })
        .await?;
    Ok(Response::new(info))
}

pub(super) async fn list_keys(
    svc: &HsmService,
    req: Request<pb::ListKeysRequest>,
) -> Result<Response<pb::ListKeysResponse>, Status> {
    let (_, actor) = svc.auth(&req, USE, "list-keys").await?;
    // The token lists only what this caller may see.
    let keys = svc
        .state
        .run("list-keys", actor, move |st| keys::list(&st.token).map_err(|e| core(&e)))
        .await?;
    Ok(Response::new(pb::ListKeysResponse { keys }))
}

pub(super) async fn show_key(
    svc: &HsmService,
    req: Request<pb::KeyName>,
) -> Result<Response<pb::KeyInfo>, Status> {
    let (_, actor) = svc.auth(&req, USE, "show-key").await?;
    let label = req.into_inner().label;
    let k = svc
        .state
        .run("show-key", actor, move |st| keys::show(&st.token, &label).map_err(|e| core(&e)))
        .await?;
    Ok(Response::new(k))
}

pub(super) async fn public_key(
    svc: &HsmService,
    req: Request<pb::KeyName>,
) -> Result<Response<pb::PublicKeyResponse>, Status> {
    let (_, actor) = svc.auth(&req, USE, "public-key").await?;
    let pb::KeyName { label, key_version } = req.into_inner();
    let pem = svc
        .state
        .run("public-key", actor, move |st| {
            keys::public_pem(&st.token, &label, key_version).map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(pb::PublicKeyResponse { pem }))
}

pub(super) async fn sign(
    svc: &HsmService,
    req: Request<pb::SignRequest>,
) -> Result<Response<pb::SignResponse>, Status> {
    let (sess, actor) = svc.auth(&req, USE, "sign").await?;
    let ap = super::usepolicy::approvals_of(&req)?;
    let r = req.into_inner();
    let small = r.data.len() <= INLINE_MAX;
    let format = SignatureFormat::try_from(r.format).unwrap_or(SignatureFormat::Raw);
    let (signature, mechanism, key_version) = svc
        .state
        .run_small(
            "sign",
            actor,
            small,
            super::usepolicy::carrying(ap, move |st| {
                st.labels
                    .with_version(
                        &st.token,
                        sess.user_id,
                        &r.key,
                        r.key_version,
                        Purpose::Sign,
                        |h, spec| {
                            let k = SignKey::new(h, spec, &r.mechanism, format)?;
                            let sig = k.sign(&st.token, &r.data)?;
                            Ok((sig, k.mechanism_name(), keys::version_of(&st.token, h)?))
                        },
                    )
                    .map_err(|e| core(&e))
            }),
        )
        .await?;
    Ok(Response::new(pb::SignResponse { signature, mechanism, key_version }))
}

pub(super) async fn verify(
    svc: &HsmService,
    req: Request<pb::VerifyRequest>,
) -> Result<Response<pb::VerifyResponse>, Status> {
    let (sess, actor) = svc.auth(&req, USE, "verify").await?;
    let ap = super::usepolicy::approvals_of(&req)?;
    let r = req.into_inner();
    let small = r.data.len() <= INLINE_MAX;
    let format = SignatureFormat::try_from(r.format).unwrap_or(SignatureFormat::Raw);
    let (valid, key_state, key_version) = svc
        .state
        .run_small(
            "verify",
            actor,
            small,
            super::usepolicy::carrying(ap, move |st| {
                st.labels
                    .with_version(
                        &st.token,
                        sess.user_id,
                        &r.key,
                        r.key_version,
                        Purpose::Verify,
                        |h, spec| {
                            let valid = SignKey::new(h, spec, &r.mechanism, format)?.verify(
                                &st.token,
                                &r.data,
                                &r.signature,
                            )?;
                            Ok((
                                valid,
                                keys::state_note(&st.token, h),
                                keys::version_of(&st.token, h)?,
                            ))
                        },
                    )
                    .map_err(|e| core(&e))
            }),
        )
        .await?;
    Ok(Response::new(pb::VerifyResponse { valid, key_state, key_version }))
}

pub(super) async fn encrypt(
    svc: &HsmService,
    req: Request<pb::EncryptRequest>,
) -> Result<Response<pb::EncryptResponse>, Status> {
    let (sess, actor) = svc.auth(&req, USE, "encrypt").await?;
    let ap = super::usepolicy::approvals_of(&req)?;
    let r = req.into_inner();
    let small = r.plaintext.len() <= INLINE_MAX;
    let plaintext = Zeroizing::new(r.plaintext);
    let (ciphertext, key_version) = svc
        .state
        .run_small(
            "encrypt",
            actor,
            small,
            super::usepolicy::carrying(ap, move |st| {
                st.labels
                    .with_version(
                        &st.token,
                        sess.user_id,
                        &r.key,
                        r.key_version,
                        Purpose::Aes,
                        |h, _| {
                            Ok((
                                keys::encrypt(&st.token, h, &plaintext)?,
                                keys::version_of(&st.token, h)?,
                            ))
                        },
                    )
                    .map_err(|e| core(&e))
            }),
        )
        .await?;
    Ok(Response::new(pb::EncryptResponse { ciphertext, key_version }))
}

pub(super) async fn decrypt(
    svc: &HsmService,
    req: Request<pb::DecryptRequest>,
) -> Result<Response<pb::DecryptResponse>, Status> {
    let (sess, actor) = svc.auth(&req, USE, "decrypt").await?;
    let ap = super::usepolicy::approvals_of(&req)?;
    let r = req.into_inner();
    let small = r.ciphertext.len() <= INLINE_MAX;
    let (plaintext, key_state, key_version) = svc
        .state
        .run_small(
            "decrypt",
            actor,
            small,
            super::usepolicy::carrying(ap, move |st| {
                // The envelope names the version that made it (docs/cli.md).
                let version =
                    keys::envelope_version(&r.ciphertext, r.key_version).map_err(|e| core(&e))?;
                st.labels
                    .with_version(&st.token, sess.user_id, &r.key, version, Purpose::Aes, |h, _| {
                        let pt = keys::decrypt(&st.token, h, &r.ciphertext)?;
                        Ok((pt.expose_secret().to_vec(), keys::state_note(&st.token, h), version))
                    })
                    .map_err(|e| core(&e))
            }),
        )
        .await?;
    Ok(Response::new(pb::DecryptResponse { plaintext, key_state, key_version }))
}

pub(super) async fn random(
    svc: &HsmService,
    req: Request<pb::RandomRequest>,
) -> Result<Response<pb::RandomResponse>, Status> {
    let (_, actor) = svc.auth(&req, ANY, "random").await?;
    let n = req.into_inner().length;
    if n == 0 || n > MAX_RANDOM {
        return Err(Status::invalid_argument("length must be 1 to 1048576"));
    }
    let data = svc
        .state
        .run("random", actor, move |st| {
            let mut buf = vec![0u8; n as usize];
            st.token.random(&mut buf).map_err(|e| core(&e))?;
            Ok(buf)
        })
        .await?;
    Ok(Response::new(pb::RandomResponse { data }))
}

pub(super) async fn batch_sign(
    svc: &HsmService,
    req: Request<pb::BatchSignRequest>,
) -> Result<Response<pb::BatchSignResponse>, Status> {
    let (sess, actor) = svc.auth(&req, USE, "batch-sign").await?;
    let r = req.into_inner();
    if r.data.len() > MAX_BATCH {
        return Err(Status::invalid_argument("batch too large (at most 1024 items)"));
    }
    let format = SignatureFormat::try_from(r.format).unwrap_or(SignatureFormat::Raw);
    let (signatures, key_version) = svc
        .state
        .run("batch-sign", actor, move |st| {
            st.labels
                .with_version(
                    &st.token,
                    sess.user_id,
                    &r.key,
                    r.key_version,
                    Purpose::Sign,
                    |h, spec| {
                        let k = SignKey::new(h, spec, &r.mechanism, format)?;
                        Ok((k.sign_batch(&st.token, &r.data)?, keys::version_of(&st.token, h)?))
                    },
                )
                .map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(pb::BatchSignResponse { signatures, key_version }))
}

pub(super) async fn batch_encrypt(
    svc: &HsmService,
    req: Request<pb::BatchEncryptRequest>,
) -> Result<Response<pb::BatchEncryptResponse>, Status> {
    let (sess, actor) = svc.auth(&req, USE, "batch-encrypt").await?;
    let r = req.into_inner();
    if r.plaintexts.len() > MAX_BATCH {
        return Err(Status::invalid_argument("batch too large (at most 1024 items)"));
    }
    let (ciphertexts, key_version) = svc
        .state
        .run("batch-encrypt", actor, move |st| {
            st.labels
                .with_version(
                    &st.token,
                    sess.user_id,
                    &r.key,
                    r.key_version,
                    Purpose::Aes,
                    |h, _| {
                        Ok((
                            keys::encrypt_batch(&st.token, h, &r.plaintexts)?,
                            keys::version_of(&st.token, h)?,
                        ))
                    },
                )
                .map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(pb::BatchEncryptResponse { ciphertexts, key_version }))
}

pub(super) async fn set_key_access(
    svc: &HsmService,
    req: Request<pb::SetKeyAccessRequest>,
) -> Result<Response<pb::SetKeyAccessResponse>, Status> {
    let (s, actor) = svc.auth(&req, MANAGE, "set-key-access").await?;
    let r = req.into_inner();
    let mut grants = Vec::new();
    for g in r.grants {
        let who = Grantee::parse(&g.principal).map_err(|e| core(&e))?;
        let ops = Ops::parse(g.operations.iter().map(String::as_str)).map_err(|e| core(&e))?;
        grants.push((who, ops));
    }
    tracing::info!(user = %s.user, label = %keys::shown(&r.label), grants = grants.len(), "set key access");
    svc.state
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

pub(super) async fn set_key_trusted(
    svc: &HsmService,
    req: Request<pb::SetKeyTrustedRequest>,
) -> Result<Response<pb::SetKeyTrustedResponse>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "set-key-trusted").await?;
    let r = req.into_inner();
    tracing::warn!(user = %so.user, label = %keys::shown(&r.label), trusted = r.trusted, "set key trusted");
    let objects = svc
        .state
        .run("set-key-trusted", actor, move |st| {
            let n = st.token.set_trusted_by_label(&r.label, r.trusted).map_err(|e| core(&e))?;
            st.labels.clear();
            Ok(n)
        })
        .await?;
    Ok(Response::new(pb::SetKeyTrustedResponse { objects }))
}

pub(super) async fn key_state(
    svc: &HsmService,
    req: Request<pb::KeyName>,
) -> Result<Response<pb::KeyStateResponse>, Status> {
    let (_, actor) = svc.auth(&req, USE, "key-state").await?;
    let label = req.into_inner().label;
    let r = svc
        .state
        .run("key-state", actor, move |st| keys::key_state(&st.token, &label).map_err(|e| core(&e)))
        .await?;
    Ok(Response::new(r))
}

pub(super) async fn change_key_state(
    svc: &HsmService,
    req: Request<pb::ChangeKeyStateRequest>,
) -> Result<Response<pb::KeyStateResponse>, Status> {
    let (s, actor) = svc.auth(&req, MANAGE, "change-key-state").await?;
    let r = req.into_inner();
    tracing::info!(user = %s.user, label = %keys::shown(&r.label), transition = %keys::shown(&r.transition), "change key state");
    let out = svc
        .state
        .run("change-key-state", actor, move |st| {
            // The token checks the table and who may manage the key, and records the change.
            keys::change_key_state(&st.token, &r)
                .and_then(|()| keys::key_state(&st.token, &r.label))
                .map_err(|e| core(&e))
        })
        .await?;
    Ok(Response::new(out))
}

pub(super) async fn export_key(
    svc: &HsmService,
    req: Request<pb::ExportKeyRequest>,
) -> Result<Response<pb::ExportKeyResponse>, Status> {
    let (s, actor) = svc.auth(&req, MANAGE, "export-key").await?;
    let ap = super::usepolicy::approvals_of(&req)?;
    let r = req.into_inner();
    tracing::warn!(user = %s.user, key = %r.key, wrapping_key = %r.wrapping_key, "key export under wrap");
    let (wrapped, mechanism) = svc
        .state
        .run(
            "export-key",
            actor,
            super::usepolicy::carrying(ap, move |st| {
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
            }),
        )
        .await?;
    Ok(Response::new(pb::ExportKeyResponse { wrapped, mechanism }))
}
