//! `bulwark audit ...`: export, public-key, verify, prove.
//!
//! Export, public-key and prove read the store's log and need the SO PIN (embedded mode: the
//! SO is the auditor). `verify` needs neither the store nor a PIN: it checks an exported log
//! (and optionally an inclusion proof) with the audit public key alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_core::audit::{self, Proof};
use bulwark_core::UserType;
use clap::Subcommand;

use crate::{pin, CliError, CliResult, Ctx};

/// Audit log commands.
#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Export the log as JSON lines (records and signed checkpoints), ending with a fresh
    /// checkpoint over every exported record. SO PIN.
    Export {
        /// First sequence number to export (default 0: the whole log).
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write the audit public key (Ed25519, PEM). SO PIN.
    PublicKey {
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify an exported log offline (no store, no PIN): prints OK with the record count and
    /// the last signed checkpoint, or the first bad sequence number (exit 1).
    Verify {
        /// The exported log.
        #[arg(long, value_name = "FILE", required_unless_present = "proof")]
        log: Option<PathBuf>,
        /// The audit public key (PEM from `audit public-key`).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Also (or only) check an inclusion proof from `audit prove`.
        #[arg(long, value_name = "FILE")]
        proof: Option<PathBuf>,
    },
    /// Print an inclusion proof of record SEQ in a fresh signed checkpoint (JSON). SO PIN.
    Prove {
        /// Sequence number of the record.
        seq: u64,
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn read_text(p: &Path, what: &str) -> CliResult<String> {
    std::fs::read_to_string(p)
        .map_err(|e| CliError::Usage(format!("cannot read {what} {}: {}", p.display(), e.kind())))
}

fn write_out(out: Option<&Path>, data: &str) -> CliResult<()> {
    if let Some(p) = out {
        return std::fs::write(p, data)
            .map_err(|e| CliError::Usage(format!("cannot write {}: {}", p.display(), e.kind())));
    }
    print!("{data}");
    Ok(())
}

/// Opens the token as the SO, except on a zeroized store (no SO any more; the log stays
/// readable, its last checkpoint was signed at zeroization).
fn auditor_token(ctx: &Ctx) -> CliResult<bulwark_core::Token> {
    let t = ctx.open_token()?;
    if !t.status()?.zeroized {
        let p = pin::so_pin(ctx.pin_file.as_deref(), false)?;
        t.login(UserType::So, &p)?;
    }
    Ok(t)
}

pub(crate) fn run(ctx: &Ctx, cmd: AuditCommand) -> CliResult<ExitCode> {
    match cmd {
        AuditCommand::Export { since, out } => {
            let t = auditor_token(ctx)?;
            let lines = t.audit_export(since.unwrap_or(0))?;
            let mut text = lines.join("\n");
            text.push('\n');
            write_out(Some(&out), &text)?;
            let records = lines.iter().filter(|l| l.contains("\"type\":\"record\"")).count();
            println!("exported {records} records to {}", out.display());
        }
        AuditCommand::PublicKey { out } => {
            let t = auditor_token(ctx)?;
            let pem = audit::public_key_pem(&t.audit_public_key()?);
            write_out(out.as_deref(), &pem)?;
        }
        AuditCommand::Prove { seq, out } => {
            let t = auditor_token(ctx)?;
            let p = t.audit_prove(seq)?;
            let mut s = serde_json::to_string_pretty(&p)
                .map_err(|_| CliError::Usage("cannot encode the proof".into()))?;
            s.push('\n');
            write_out(out.as_deref(), &s)?;
        }
        AuditCommand::Verify { log, public_key, proof } => {
            return verify(log.as_deref(), &public_key, proof.as_deref());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify(
    log: Option<&Path>,
    public_key: &Path,
    proof: Option<&Path>,
) -> CliResult<ExitCode> {
    let pk = audit::public_key_from_pem(&read_text(public_key, "public key")?)?;
    let lines: Option<Vec<String>> = match log {
        Some(p) => Some(read_text(p, "log")?.lines().map(str::to_owned).collect()),
        None => None,
    };
    if let Some(lines) = &lines {
        let rep = audit::verify_export(lines, &pk);
        if let Some((seq, why)) = &rep.bad {
            eprintln!(
                "bulwark: audit log verification FAILED: first bad sequence number {seq}: {why}"
            );
            return Ok(ExitCode::from(1));
        }
        let cp = rep.last_checkpoint.as_ref();
        println!(
            "OK: {} records (seq {}..{}); last signed checkpoint: size {}, time {} ms, root {}",
            rep.records,
            rep.since,
            rep.since + rep.records,
            cp.map_or(0, |c| c.size),
            cp.map_or(0, |c| c.time_ms),
            cp.map_or("-", |c| c.root.as_str()),
        );
    }
    if let Some(pf) = proof {
        let p: Proof = serde_json::from_str(&read_text(pf, "proof")?)
            .map_err(|_| CliError::Usage(format!("{} is not an audit proof", pf.display())))?;
        if let Err(why) = audit::verify_proof(&p, &pk, lines.as_deref()) {
            eprintln!("bulwark: inclusion proof FAILED for record {}: {why}", p.seq);
            return Ok(ExitCode::from(1));
        }
        println!(
            "OK: record {} is included in the signed checkpoint of size {} (root {})",
            p.seq, p.checkpoint.size, p.checkpoint.root
        );
    }
    Ok(ExitCode::SUCCESS)
}
