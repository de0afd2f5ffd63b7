//! Quorum recovery of a user (`bulwarkd user recover`): the custodians' shares unseal the store
//! in this process, and the quorum — which outranks any officer — unlocks a user locked out by
//! failed logins, sets its password, or creates it. This is the documented way back in when
//! the only security officer is locked out or its password is lost; it needs the same M shares
//! that unseal the HSM, and it is recorded in the audit log.

use bulwark_core::audit::{Actor, AuditEvent};
use bulwark_core::kernel::Role;
use bulwark_core::seal::{Progress, Share, Unsealer};

use crate::store::NodeToken as Token;
use zeroize::Zeroizing;

use crate::config::Config;

/// Unseals the configured store with `shares` and recovers user `name`; returns what was done.
pub fn recover_user(
    cfg: &Config,
    name: &str,
    role: Role,
    password: Option<&Zeroizing<String>>,
    shares: Vec<Share>,
) -> Result<String, String> {
    bulwark_core::kernel::check_user_name(name).map_err(|e| e.to_string())?;
    let (token, policy, _node, _) =
        crate::server::open_token(cfg).map_err(|e| format!("store: {e}"))?;
    let mut u = Unsealer::new(policy);
    let mut keys = None;
    for s in shares {
        match u.submit(s).map_err(|e| format!("share refused: {e}"))? {
            Progress::Pending { .. } => {}
            Progress::Complete(k) => keys = Some(k),
        }
    }
    let (vault, ik) = *keys.ok_or("not enough valid shares to unseal the store")?;
    token.unseal(vault, ik).map_err(|e| e.to_string())?;
    let r = recover(&token, name, role, password);
    let actor = Actor {
        name: "quorum".into(),
        role: "custodians".into(),
        client: "bulwarkd user recover".into(),
    };
    if let Some(log) = token.audit_log() {
        let ev = AuditEvent {
            actor,
            op: "recover-user",
            result: if r.is_ok() { "ok" } else { "failed" },
            detail: format!("user {name}"),
            ..AuditEvent::default()
        };
        if let Err(e) = log.append(&ev) {
            return Err(format!("cannot record the recovery in the audit log: {e}"));
        }
    }
    token.lock();
    r
}

fn recover(
    token: &Token,
    name: &str,
    role: Role,
    password: Option<&Zeroizing<String>>,
) -> Result<String, String> {
    let e = |e: bulwark_core::Error| e.to_string();
    let exists = token.unlock_user_by_quorum(name).map_err(e)?;
    if !exists {
        let pw = password.ok_or("no such user: give --new-password to create it")?;
        token.create_user_by_quorum(name, role, pw.as_bytes()).map_err(e)?;
        return Ok(format!("user {name} created as {}", role.name()));
    }
    if let Some(pw) = password {
        token.reset_password_by_quorum(name, pw.as_bytes()).map_err(e)?;
        return Ok(format!("user {name} unlocked, password set"));
    }
    Ok(format!("user {name} unlocked"))
}
