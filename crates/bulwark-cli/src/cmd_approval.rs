//! Quorum approvals: `bulwark approval keygen | sign`, and the `--approval` options of the
//! quorum-gated remote commands (user add / delete / set-role, zeroize).
//!
//! The flow: the security officer runs the command with `--approval-request-out FILE`; when the
//! HSM requires approvals, the CLI writes the request there (store id, operation, fields,
//! not-after time) and stops. Each approver runs `bulwark approval sign --key KEY --request FILE`
//! on their own machine: the CLI shows what is being approved, recomputes the digest from the
//! request itself (it never signs a digest it was handed) and writes an approval file. The
//! officer re-runs the command with `--approval FILE` for each of them. Approver private keys
//! are Ed25519, in files only the approver can read; the HSM knows their public keys.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use bulwark_client::{v1 as pb, ClientError, Reason};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{CliError, CliResult};

/// `bulwark approval ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum ApprovalCommand {
    /// Create an approver key (Ed25519) in FILE (mode 0600) and print the line for the
    /// daemon's `[approvals]` configuration.
    Keygen {
        /// The approver's name, as the HSM's configuration lists it.
        #[arg(long)]
        name: String,
        /// Private key file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Approve a request written by `--approval-request-out`: shows it, signs it, writes the
    /// approval file to hand back to the security officer.
    Sign {
        /// The approver's private key file (from `approval keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The request file.
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Approval file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// The approval options of a quorum-gated command.
#[derive(Args, Debug, Default)]
pub(crate) struct ApprovalArgs {
    /// An approval file from `bulwark approval sign` (repeat for each approver).
    #[arg(long = "approval", value_name = "FILE")]
    approvals: Vec<PathBuf>,
    /// When the HSM requires approvals, write the request for the approvers to this file.
    #[arg(long, value_name = "FILE")]
    approval_request_out: Option<PathBuf>,
}

impl ApprovalArgs {
    /// Whether any approval option was given.
    pub(crate) fn is_set(&self) -> bool {
        !self.approvals.is_empty() || self.approval_request_out.is_some()
    }
}

/// What the approvers sign: the HSM computes the same digest from the request it receives.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct ApprovalRequest {
    store_id: String,
    op: String,
    fields: Vec<String>,
    not_after: u64,
}

impl ApprovalRequest {
    fn digest(&self) -> CliResult<[u8; 32]> {
        let fields: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        Ok(bulwark_proto::approval_digest(&self.store_id, &self.op, &fields, self.not_after)?)
    }
}

#[derive(Serialize, Deserialize, Debug)]
struct ApprovalFile {
    approver: String,
    /// Ed25519 signature over the request digest, hex.
    signature: String,
    request: ApprovalRequest,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    approver: String,
    /// PKCS#8 v2 Ed25519 private key, base64.
    private_key: String,
}

fn usage(s: impl Into<String>) -> CliError {
    CliError::Usage(s.into())
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path, what: &str) -> CliResult<T> {
    let text = std::fs::read(p)
        .map_err(|e| usage(format!("cannot read {what} {}: {}", p.display(), e.kind())))?;
    serde_json::from_slice(&text).map_err(|_| usage(format!("{} is not {what}", p.display())))
}

/// Writes a new file readable by its owner only; refuses to overwrite.
fn write_private(p: &Path, data: &[u8]) -> CliResult<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| usage(format!("cannot create {}: {}", p.display(), e.kind())))?;
    f.write_all(data).map_err(|e| usage(format!("cannot write {}: {}", p.display(), e.kind())))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn run(cmd: ApprovalCommand) -> CliResult<ExitCode> {
    match cmd {
        ApprovalCommand::Keygen { name, out } => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| usage("cannot generate an Ed25519 key"))?;
            let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                .map_err(|_| usage("cannot generate an Ed25519 key"))?;
            let file = Zeroizing::new(
                serde_json::to_vec_pretty(&KeyFile {
                    approver: name.clone(),
                    private_key: base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref()),
                })
                .map_err(|_| usage("cannot encode the key file"))?,
            );
            write_private(&out, &file)?;
            println!("approver key for {name:?} written to {} (keep it private)", out.display());
            println!("add to the daemon's [approvals] approvers:");
            println!(
                "  {{ name = \"{name}\", public_key = \"{}\" }}",
                hex::encode(kp.public_key().as_ref())
            );
            Ok(ExitCode::SUCCESS)
        }
        ApprovalCommand::Sign { key, request, out } => {
            let k: KeyFile = read_json(&key, "an approver key file")?;
            let der = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(&k.private_key)
                    .map_err(|_| usage(format!("{} is not an approver key file", key.display())))?,
            );
            let kp = Ed25519KeyPair::from_pkcs8(&der)
                .map_err(|_| usage(format!("{} is not an approver key file", key.display())))?;
            let req: ApprovalRequest = read_json(&request, "an approval request")?;
            if req.not_after <= unix_now() {
                return Err(usage("the request has expired; ask for a new one"));
            }
            let digest = req.digest()?;
            println!("approving on store {}: {} {:?}", req.store_id, req.op, req.fields);
            println!("valid until {} (Unix time); digest {}", req.not_after, hex::encode(digest));
            let sig = kp.sign(&digest);
            let file = ApprovalFile {
                approver: k.approver.clone(),
                signature: hex::encode(sig.as_ref()),
                request: req,
            };
            let text = serde_json::to_vec_pretty(&file)
                .map_err(|_| usage("cannot encode the approval"))?;
            write_private(&out, &text)?;
            println!("approval of {:?} written to {}", k.approver, out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.private_key);
    }
}

/// The approvals to send with a request for `op` with `fields` on store `store_id`, and the
/// not-after time they were made for (a fresh one hour ahead when there are none yet).
pub(crate) fn collect(
    a: &ApprovalArgs,
    store_id: &str,
    op: &str,
    fields: &[&str],
) -> CliResult<(Vec<pb::Approval>, u64)> {
    let want: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    let mut not_after = None;
    let mut out = Vec::new();
    for p in &a.approvals {
        let f: ApprovalFile = read_json(p, "an approval file")?;
        if f.request.store_id != store_id || f.request.op != op || f.request.fields != want {
            return Err(usage(format!("{} approves a different request", p.display())));
        }
        if not_after.is_some_and(|t| t != f.request.not_after) {
            return Err(usage("the approval files were made for different requests"));
        }
        not_after = Some(f.request.not_after);
        let signature = hex::decode(&f.signature)
            .map_err(|_| usage(format!("{} is not an approval file", p.display())))?;
        out.push(pb::Approval { approver: f.approver, signature });
    }
    Ok((out, not_after.unwrap_or_else(|| unix_now() + 3600)))
}

/// Turns "approvals required" into instructions (and the request file when asked for).
pub(crate) fn explain(
    e: ClientError,
    a: &ApprovalArgs,
    store_id: &str,
    op: &str,
    fields: &[&str],
    not_after: u64,
) -> CliError {
    let needs_quorum =
        matches!(&e, ClientError::Status { reason: Some(Reason::QuorumRequired), .. });
    if !needs_quorum {
        return e.into();
    }
    let req = ApprovalRequest {
        store_id: store_id.to_owned(),
        op: op.to_owned(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        not_after,
    };
    let Some(path) = &a.approval_request_out else {
        return usage(format!(
            "{}; re-run with --approval-request-out FILE to write the request for the approvers",
            CliError::from(e)
        ));
    };
    let Ok(text) = serde_json::to_vec_pretty(&req) else {
        return usage("cannot encode the approval request");
    };
    if let Err(w) = std::fs::write(path, text) {
        return usage(format!("cannot write {}: {}", path.display(), w.kind()));
    }
    usage(format!(
        "{}; the request is in {}: each approver runs `bulwark approval sign --key KEY --request {} \
         --out FILE`, then re-run this command with --approval FILE for each",
        CliError::from(e),
        path.display(),
        path.display()
    ))
}

/// Writes the approval request for one use of a key with a per-use quorum (see
/// `bulwark_core::token::use_approval_digest`: the same framing as every approval, with the
/// operation `key-use` and the fields key uid, usage, request id).
pub(crate) fn write_use_request(
    path: &Path,
    store_id: &str,
    key_uid: &str,
    usage_op: &str,
    request_id: &str,
    not_after: u64,
) -> CliResult<()> {
    let req = ApprovalRequest {
        store_id: store_id.to_owned(),
        op: bulwark_core::token::USE_APPROVAL_OP.to_owned(),
        fields: vec![key_uid.to_owned(), usage_op.to_owned(), request_id.to_owned()],
        not_after,
    };
    let text = serde_json::to_vec_pretty(&req).map_err(|_| usage("cannot encode the request"))?;
    std::fs::write(path, text)
        .map_err(|e| usage(format!("cannot write {}: {}", path.display(), e.kind())))
}

/// Reads `--use-approval` files: all must approve the same key-use request.
pub(crate) fn read_use_approvals(
    paths: &[PathBuf],
) -> CliResult<bulwark_core::token::UseApprovals> {
    let mut first: Option<ApprovalRequest> = None;
    let mut out = Vec::new();
    for p in paths {
        let f: ApprovalFile = read_json(p, "an approval file")?;
        if f.request.op != bulwark_core::token::USE_APPROVAL_OP || f.request.fields.len() != 3 {
            return Err(usage(format!("{} does not approve a key use", p.display())));
        }
        if first.as_ref().is_some_and(|r| *r != f.request) {
            return Err(usage("the approval files were made for different requests"));
        }
        let signature = hex::decode(&f.signature)
            .map_err(|_| usage(format!("{} is not an approval file", p.display())))?;
        out.push(bulwark_core::token::UseApproval { approver: f.approver, signature });
        first.get_or_insert(f.request);
    }
    let r = first.ok_or_else(|| usage("no approval file given"))?;
    Ok(bulwark_core::token::UseApprovals {
        request_id: r.fields[2].clone(),
        not_after: r.not_after,
        approvals: out,
    })
}
