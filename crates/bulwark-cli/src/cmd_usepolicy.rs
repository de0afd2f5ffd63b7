//! `bulwark key policy | use-request | use-approvers`: per-key usage policy (docs/lifecycle.md,
//! "Usage policy"), and the `--use-approval` files that carry per-use quorum approvals into any
//! key-using command. The CLI only parses and names things; the core decides who may change a
//! policy, counts uses and checks approvals.
//!
//! Principals are stored as user ids. On the command line they are given as user names (the
//! daemon resolves them), as 32-hex-digit ids, or on an embedded store as `user` / `so` (the
//! PIN logins).

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_client::v1 as pb;
use bulwark_core::attr::ObjectClass;
use bulwark_core::kernel::{UserId, EMBEDDED_SO, EMBEDDED_USER};
use bulwark_core::token::{Rate, UsagePolicy, UseApprovals, UseApprover, UseCount};
use bulwark_core::Token;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::{CliError, CliResult, Ctx};

/// The policy options of `key policy` and `key generate`.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct PolicyArgs {
    /// Maximum number of uses for the key's whole life (each use counted durably).
    #[arg(long, value_name = "N")]
    pub(crate) max_uses: Option<u64>,
    /// Rate limit, N uses per period: 10/s, 100/m, 1000/h, 5000/d, 5/30s.
    #[arg(long, value_name = "N/PERIOD")]
    pub(crate) rate: Option<String>,
    /// The only principals allowed to use the key: user names or 32-hex-digit user ids
    /// (embedded store: `user`, `so`), comma-separated.
    #[arg(long, value_name = "A,B")]
    pub(crate) principals: Option<String>,
    /// Fresh approvals of the store's use approvers each use needs (per-use quorum).
    #[arg(long, value_name = "M")]
    pub(crate) quorum: Option<u64>,
    /// Remove parts of the policy: max-uses, rate, principals, quorum, all (comma-separated or
    /// repeated).
    #[arg(long, value_name = "WHAT", value_delimiter = ',')]
    pub(crate) clear: Vec<String>,
}

impl PolicyArgs {
    /// Whether any option is given.
    pub(crate) fn is_set(&self) -> bool {
        self.max_uses.is_some()
            || self.rate.is_some()
            || self.principals.is_some()
            || self.quorum.is_some()
            || !self.clear.is_empty()
    }

    /// `current` with the clears, then the settings applied; principals resolved by `who`.
    pub(crate) fn apply(
        &self,
        current: &UsagePolicy,
        who: &dyn Fn(&str) -> CliResult<UserId>,
    ) -> CliResult<UsagePolicy> {
        let mut p = current.clone();
        for c in &self.clear {
            match c.trim() {
                "all" => p = UsagePolicy::default(),
                "max-uses" => p.max_uses = None,
                "rate" => p.rate = None,
                "principals" => p.principals.clear(),
                "quorum" => p.quorum = 0,
                other => {
                    return Err(CliError::Usage(format!(
                        "--clear: {:?} is not one of max-uses, rate, principals, quorum, all",
                        bulwark_core::display::escape(other)
                    )))
                }
            }
        }
        if let Some(m) = self.max_uses {
            p.max_uses = Some(m);
        }
        if let Some(r) = &self.rate {
            p.rate = Some(Rate::parse(r)?);
        }
        if let Some(list) = &self.principals {
            let mut ids = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let id = who(name)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            if ids.is_empty() {
                return Err(CliError::Usage(
                    "--principals: name at least one (or --clear principals)".into(),
                ));
            }
            p.principals = ids;
        }
        if let Some(q) = self.quorum {
            p.quorum = q;
        }
        p.check()?;
        Ok(p)
    }
}

/// Usage-policy commands (flattened into `bulwark key`).
#[derive(Subcommand, Debug)]
pub(crate) enum UsageCommand {
    /// Show or change a key's usage policy (no option: show it). A crypto officer changes it;
    /// a user of the key may only tighten it.
    Policy {
        /// Key label.
        label: String,
        #[command(flatten)]
        policy: PolicyArgs,
        /// JSON output (when showing).
        #[arg(long)]
        json: bool,
    },
    /// Write an approval request for one use of a key with a per-use quorum: each approver
    /// signs it with `bulwark approval sign`, then the use runs with `--use-approval FILE`
    /// (one per approver).
    UseRequest {
        /// Key label.
        label: String,
        /// The operation: sign, verify, encrypt, decrypt, wrap, unwrap, derive.
        #[arg(long)]
        op: String,
        /// Request file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// How long the approvals stay valid, in seconds (at most 86400).
        #[arg(long, default_value_t = 3600)]
        valid_for: u64,
    },
    /// Show or set the store's use approvers (the keys per-use quorums are checked against;
    /// security officer). NAME=HEX with the raw Ed25519 public key from `approval keygen`.
    UseApprovers {
        /// An approver, NAME=HEXKEY (repeat; none: show the current set).
        #[arg(long = "approver", value_name = "NAME=HEX")]
        approvers: Vec<String>,
        #[command(flatten)]
        approval: crate::cmd_approval::ApprovalArgs,
    },
}

/// The embedded store's principals by name.
fn embedded_principal(name: &str) -> CliResult<UserId> {
    match name {
        "user" => Ok(EMBEDDED_USER),
        "so" => Ok(EMBEDDED_SO),
        s => UserId::from_hex(s).ok_or_else(|| {
            CliError::Usage(format!(
                "principal {:?}: on an embedded store, `user`, `so` or a 32-hex-digit user id",
                bulwark_core::display::escape(s)
            ))
        }),
    }
}

/// A principal's name for a person.
pub(crate) fn principal_name(id: UserId) -> String {
    if id == EMBEDDED_USER {
        "user".into()
    } else if id == EMBEDDED_SO {
        "so".into()
    } else {
        id.to_hex()
    }
}

/// The usage policy and counters as JSON.
pub(crate) fn policy_json(p: &UsagePolicy, c: &UseCount, now: u64) -> Value {
    json!({
        "principals": p.principals.iter().map(|u| principal_name(*u)).collect::<Vec<_>>(),
        "max_uses": p.max_uses,
        "uses": c.uses,
        "rate": p.rate.map(|r| r.to_string()),
        "rate_available": p.rate.map(|r| c.rate_available(r, now)),
        "quorum": p.quorum,
    })
}

/// The usage policy and counters for a person, one line each (nothing for an empty policy).
pub(crate) fn policy_lines(p: &UsagePolicy, c: &UseCount, now: u64) -> Vec<String> {
    let mut v = Vec::new();
    if p.is_empty() {
        return v;
    }
    if !p.principals.is_empty() {
        let names: Vec<String> = p.principals.iter().map(|u| principal_name(*u)).collect();
        v.push(format!("principals   {}", names.join(",")));
    }
    match p.max_uses {
        Some(m) => v.push(format!("uses         {} of {m}", c.uses)),
        None if p.is_metered() => v.push(format!("uses         {}", c.uses)),
        None => {}
    }
    if let Some(r) = p.rate {
        v.push(format!("rate         {r} ({} available now)", c.rate_available(r, now)));
    }
    if p.quorum > 0 {
        v.push(format!("quorum       {} approvals per use", p.quorum));
    }
    v
}

/// The key objects a policy applies to: the secret key, or a pair's private half.
fn policy_handles(t: &Token, label: &str) -> CliResult<Vec<u64>> {
    let objs = crate::cmd_keys::by_label(t, label)?;
    let hs: Vec<u64> = objs
        .iter()
        .filter(|o| {
            matches!(o.attrs.class(), Some(ObjectClass::SecretKey | ObjectClass::PrivateKey))
        })
        .map(|o| o.handle)
        .collect();
    if hs.is_empty() {
        return Err(bulwark_core::Error::NotFound(label.to_owned()).into());
    }
    Ok(hs)
}

/// Applies `--max-uses` & co. of `key generate` to the new key's secret or private half.
pub(crate) fn apply_on_generate(t: &Token, handles: &[u64], a: &PolicyArgs) -> CliResult<()> {
    if !a.is_set() {
        return Ok(());
    }
    let p = a.apply(&UsagePolicy::default(), &embedded_principal)?;
    let hs: Vec<u64> = handles
        .iter()
        .copied()
        .filter(|h| {
            t.attribute(*h, bulwark_core::attr::AttrType::Class).ok()
                != Some(bulwark_core::attr::AttrValue::Ulong(ObjectClass::PublicKey.to_raw()))
        })
        .collect();
    t.set_usage_policy(&hs, &p)?;
    Ok(())
}

/// Parses `NAME=HEX` approvers.
pub(crate) fn parse_approvers(v: &[String]) -> CliResult<Vec<UseApprover>> {
    v.iter()
        .map(|s| {
            let (name, key) = s.split_once('=').ok_or_else(|| {
                CliError::Usage("--approver: NAME=HEXKEY (raw Ed25519 public key)".into())
            })?;
            Ok(UseApprover { name: name.trim().to_owned(), public_key: key.trim().to_owned() })
        })
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A fresh random request id (hex).
pub(crate) fn new_request_id() -> CliResult<String> {
    let mut b = [0u8; 12];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| CliError::Usage("no randomness".into()))?;
    Ok(format!("use-{}", hex::encode(b)))
}

/// Checks `--op` and `--valid-for` of `use-request`.
pub(crate) fn request_op(op: &str, valid_for: u64) -> CliResult<u64> {
    const OPS: &[&str] = &["sign", "verify", "encrypt", "decrypt", "wrap", "unwrap", "derive"];
    if !OPS.contains(&op) {
        return Err(CliError::Usage(format!("--op: one of {}", OPS.join(", "))));
    }
    if valid_for == 0 || valid_for > 86_400 {
        return Err(CliError::Usage("--valid-for: 1 to 86400 seconds".into()));
    }
    Ok(unix_now() + valid_for)
}

/// Runs a usage-policy command on the embedded store.
pub(crate) fn run(ctx: &Ctx, cmd: UsageCommand) -> CliResult<ExitCode> {
    match cmd {
        UsageCommand::UseApprovers { approvers, approval } => {
            if approval.is_set() {
                return Err(CliError::Usage(
                    "--approval and --approval-request-out apply to a remote HSM (--endpoint)"
                        .into(),
                ));
            }
            let t = ctx.so_token()?;
            if approvers.is_empty() {
                for a in t.use_approvers()? {
                    println!("{} {}", a.name, a.public_key);
                }
            } else {
                let list = parse_approvers(&approvers)?;
                t.set_use_approvers(&list)?;
                println!("{} use approver(s) set", list.len());
            }
        }
        UsageCommand::Policy { label, policy, json } => {
            let t = ctx.user_token()?;
            let hs = policy_handles(&t, &label)?;
            if policy.is_set() {
                let (cur, _) = t.usage_policy(hs[0])?;
                let p = policy.apply(&cur, &embedded_principal)?;
                t.set_usage_policy(&hs, &p)?;
                println!("usage policy of {label:?} set");
                for l in policy_lines(&p, &t.usage_policy(hs[0])?.1, t.now()) {
                    println!("  {l}");
                }
            } else {
                let (p, c) = t.usage_policy(hs[0])?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&policy_json(&p, &c, t.now()))
                            .unwrap_or_default()
                    );
                } else if p.is_empty() {
                    println!("{label:?}: no usage policy");
                } else {
                    println!("{label:?}:");
                    for l in policy_lines(&p, &c, t.now()) {
                        println!("  {l}");
                    }
                }
            }
        }
        UsageCommand::UseRequest { label, op, out, valid_for } => {
            let not_after = request_op(&op, valid_for)?;
            let t = ctx.user_token()?;
            let h = policy_handles(&t, &label)?[0];
            let uid = match t.attribute(h, bulwark_core::attr::AttrType::UniqueId)? {
                bulwark_core::attr::AttrValue::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                _ => return Err(CliError::Usage("key has no unique id".into())),
            };
            let store_id = t.status()?.store_id;
            let id = new_request_id()?;
            crate::cmd_approval::write_use_request(&out, &store_id, &uid, &op, &id, not_after)?;
            println!("use request {id} for {op} with {label:?} written to {}", out.display());
            println!(
                "each approver runs `bulwark approval sign --key KEY --request {} --out FILE`; then \
                 run the {op} with --use-approval FILE for each",
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `current` (a remote key's policy) with the options applied; principals stay names.
fn apply_remote(a: &PolicyArgs, current: &pb::KeyPolicy) -> CliResult<pb::KeyPolicy> {
    let mut p = current.clone();
    for c in &a.clear {
        match c.trim() {
            "all" => p = pb::KeyPolicy::default(),
            "max-uses" => (p.max_uses, p.has_max_uses) = (0, false),
            "rate" => (p.rate_uses, p.rate_period) = (0, 0),
            "principals" => p.principals.clear(),
            "quorum" => p.quorum = 0,
            other => {
                return Err(CliError::Usage(format!(
                    "--clear: {:?} is not one of max-uses, rate, principals, quorum, all",
                    bulwark_core::display::escape(other)
                )))
            }
        }
    }
    if let Some(m) = a.max_uses {
        (p.max_uses, p.has_max_uses) = (m, true);
    }
    if let Some(r) = &a.rate {
        let r = Rate::parse(r)?;
        (p.rate_uses, p.rate_period) = (r.uses, r.period);
    }
    if let Some(list) = &a.principals {
        p.principals =
            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if p.principals.is_empty() {
            return Err(CliError::Usage(
                "--principals: name at least one (or --clear principals)".into(),
            ));
        }
    }
    if let Some(q) = a.quorum {
        p.quorum = q;
    }
    Ok(p)
}

/// A remote key's policy as the core type (principals by name are not ids: left out).
fn remote_policy(r: &pb::KeyPolicyResponse) -> (UsagePolicy, UseCount, Vec<String>) {
    let p = r.policy.clone().unwrap_or_default();
    let u = UsagePolicy {
        principals: Vec::new(),
        max_uses: p.has_max_uses.then_some(p.max_uses),
        rate: (p.rate_uses != 0).then_some(Rate { uses: p.rate_uses, period: p.rate_period }),
        quorum: p.quorum,
    };
    (u, UseCount::with_uses(r.uses), p.principals)
}

fn print_remote(r: &pb::KeyPolicyResponse, json: bool) {
    let (u, c, names) = remote_policy(r);
    if json {
        let mut v = policy_json(&u, &c, 0);
        v["principals"] = json!(names);
        v["rate_available"] = if u.rate.is_some() { json!(r.rate_available) } else { Value::Null };
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    if u.is_empty() && names.is_empty() {
        println!("{:?}: no usage policy", r.label);
        return;
    }
    println!("{:?}:", r.label);
    if !names.is_empty() {
        println!("  principals   {}", names.join(","));
    }
    for l in policy_lines(&u, &c, 0) {
        if let (Some(rate), true) = (u.rate, l.starts_with("rate")) {
            println!("  rate         {rate} ({} available now)", r.rate_available);
        } else {
            println!("  {l}");
        }
    }
}

/// The policy `--max-uses` & co. describe, for a new remote key.
pub(crate) fn remote_policy_of(a: &PolicyArgs) -> CliResult<pb::KeyPolicy> {
    apply_remote(a, &pb::KeyPolicy::default())
}

/// Applies `--max-uses` & co. of `key generate --endpoint` to the new key.
pub(crate) fn apply_remote_on_generate(
    c: &bulwark_client::Client,
    label: &str,
    a: &PolicyArgs,
) -> CliResult<()> {
    if !a.is_set() {
        return Ok(());
    }
    let p = apply_remote(a, &pb::KeyPolicy::default())?;
    c.set_key_policy(label, p)?;
    Ok(())
}

/// Runs a usage-policy command against `bulwarkd`.
pub(crate) fn run_remote(c: &bulwark_client::Client, cmd: UsageCommand) -> CliResult<ExitCode> {
    match cmd {
        UsageCommand::Policy { label, policy, json } => {
            let cur = c.key_policy(&label)?;
            if policy.is_set() {
                let p = apply_remote(&policy, &cur.policy.clone().unwrap_or_default())?;
                let r = c.set_key_policy(&label, p)?;
                println!("usage policy of {label:?} set");
                print_remote(&r, false);
            } else {
                print_remote(&cur, json);
            }
        }
        UsageCommand::UseRequest { label, op, out, valid_for } => {
            let not_after = request_op(&op, valid_for)?;
            let r = c.key_policy(&label)?;
            let id = new_request_id()?;
            crate::cmd_approval::write_use_request(
                &out,
                &r.store_id,
                &r.key_uid,
                &op,
                &id,
                not_after,
            )?;
            println!("use request {id} for {op} with {label:?} written to {}", out.display());
        }
        UsageCommand::UseApprovers { approvers, approval } => {
            if approvers.is_empty() {
                for a in c.use_approvers()? {
                    println!("{} {}", a.name, a.public_key);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let list = parse_approvers(&approvers)?;
            let lines: Vec<String> =
                list.iter().map(|a| format!("{}={}", a.name, a.public_key)).collect();
            let fields: Vec<&str> = lines.iter().map(String::as_str).collect();
            let sid = c.status()?.store_id;
            let op = "set-use-approvers";
            let (approvals, not_after) =
                crate::cmd_approval::collect(&approval, &sid, op, &fields)?;
            c.set_use_approvers(pb::SetUseApproversRequest {
                approvers: list
                    .iter()
                    .map(|a| pb::UseApprover {
                        name: a.name.clone(),
                        public_key: a.public_key.clone(),
                    })
                    .collect(),
                approvals,
                approval_not_after: not_after,
            })
            .map_err(|e| {
                crate::cmd_approval::explain(e, &approval, &sid, op, &fields, not_after)
            })?;
            println!("{} use approver(s) set", list.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The approvals of `--use-approval FILE...`, for the core (embedded) or the client (remote).
pub(crate) fn use_approvals(files: &[PathBuf]) -> CliResult<Option<UseApprovals>> {
    if files.is_empty() {
        return Ok(None);
    }
    crate::cmd_approval::read_use_approvals(files).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_options_apply_in_order() {
        let a = PolicyArgs {
            max_uses: Some(5),
            rate: Some("10/m".into()),
            principals: Some("user, so,user".into()),
            quorum: Some(2),
            clear: vec![],
        };
        let p = a.apply(&UsagePolicy::default(), &embedded_principal).unwrap();
        assert_eq!(p.max_uses, Some(5));
        assert_eq!(p.rate, Some(Rate { uses: 10, period: 60 }));
        assert_eq!(p.principals, vec![EMBEDDED_USER, EMBEDDED_SO]);
        assert_eq!(p.quorum, 2);
        let clear =
            PolicyArgs { clear: vec!["rate".into(), "quorum".into()], ..Default::default() };
        let q = clear.apply(&p, &embedded_principal).unwrap();
        assert_eq!((q.rate, q.quorum, q.max_uses), (None, 0, Some(5)));
        let all = PolicyArgs { clear: vec!["all".into()], max_uses: Some(1), ..Default::default() };
        assert_eq!(
            all.apply(&p, &embedded_principal).unwrap(),
            UsagePolicy { max_uses: Some(1), ..UsagePolicy::default() }
        );
        for bad in [
            PolicyArgs { clear: vec!["everything".into()], ..Default::default() },
            PolicyArgs { rate: Some("fast".into()), ..Default::default() },
            PolicyArgs { principals: Some("alice".into()), ..Default::default() },
            PolicyArgs { principals: Some(",".into()), ..Default::default() },
            PolicyArgs { quorum: Some(99), ..Default::default() },
        ] {
            assert!(bad.apply(&p, &embedded_principal).is_err(), "{bad:?}");
        }
        assert!(parse_approvers(&["a=00".into()]).is_ok());
        assert!(parse_approvers(&["a".into()]).is_err());
        assert!(request_op("sign", 60).is_ok());
        assert!(request_op("destroy", 60).is_err());
        assert!(request_op("sign", 100_000).is_err());
    }
}
