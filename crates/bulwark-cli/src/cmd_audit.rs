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
        /// Cluster mode (remote node): every node's records and the signed global checkpoint
        /// chain, for `audit verify` of the whole cluster.
        #[arg(long, conflicts_with = "since")]
        cluster: bool,
    },
    /// Write the audit public key (Ed25519, PEM). SO PIN.
    PublicKey {
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify an exported log offline (no store, no PIN): prints OK with the record count, the
    /// last signed checkpoint and every unclean shutdown the log records, or the first bad
    /// sequence number (exit 1).
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
        /// Fail (exit 1) when the log records an unclean shutdown (a process that died with
        /// records in its durability window), not only report it.
        #[arg(long)]
        strict: bool,
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

/// Creates `p` for an export: mode 0600 (labels and client identities are not for everyone).
fn create_private(p: &Path) -> CliResult<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(p).map_err(|e| CliError::Usage(format!("cannot write {}: {}", p.display(), e.kind())))
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
        AuditCommand::Export { since, out, cluster } => {
            use std::io::Write as _;
            if cluster {
                return Err(CliError::Usage(
                    "audit export --cluster needs a cluster node: set BULWARK_ENDPOINT".into(),
                ));
            }
            let t = auditor_token(ctx)?;
            // Streamed: constant memory whatever the size of the log.
            let lines = t.audit_export_iter(since.unwrap_or(0))?;
            let io = |e: std::io::Error| {
                CliError::Usage(format!("cannot write {}: {}", out.display(), e.kind()))
            };
            let mut w = std::io::BufWriter::new(create_private(&out)?);
            let mut records = 0u64;
            for line in lines {
                let line = line?;
                records += u64::from(matches!(line, audit::ExportLine::Record { .. }));
                w.write_all(audit::line_json(&line)?.as_bytes()).map_err(io)?;
                w.write_all(b"\n").map_err(io)?;
            }
            w.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
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
        AuditCommand::Verify { log, public_key, proof, strict } => {
            return verify(log.as_deref(), &public_key, proof.as_deref(), strict);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify(
    log: Option<&Path>,
    public_key: &Path,
    proof: Option<&Path>,
    strict: bool,
) -> CliResult<ExitCode> {
    use std::io::BufRead as _;
    let pk = audit::public_key_from_pem(&read_text(public_key, "public key")?)?;
    let proof: Option<Proof> = match proof {
        Some(pf) => Some(
            serde_json::from_str(&read_text(pf, "proof")?)
                .map_err(|_| CliError::Usage(format!("{} is not an audit proof", pf.display())))?,
        ),
        None => None,
    };
    let mut proven: Option<audit::AuditRecord> = None;
    if let (Some(p), None) = (log, &proof) {
        if first_line(p)?.is_some_and(|l| audit::is_cluster_export(&l)) {
            return verify_cluster(p, &pk);
        }
    }
    if let Some(p) = log {
        let f = std::fs::File::open(p).map_err(|e| {
            CliError::Usage(format!("cannot read log {}: {}", p.display(), e.kind()))
        })?;
        // Streamed: constant memory whatever the size of the export.
        let mut v = audit::Verifier::new(&pk);
        for line in std::io::BufReader::new(f).lines() {
            let line = line.map_err(|e| {
                CliError::Usage(format!("cannot read log {}: {}", p.display(), e.kind()))
            })?;
            let ok = v.push_line_with(&line, |l| {
                if let (audit::ExportLine::Record { record, .. }, Some(pr)) = (l, &proof) {
                    if record.seq == pr.seq {
                        proven = Some(record.clone());
                    }
                }
            });
            if !ok {
                break;
            }
        }
        let rep = v.finish();
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
        println!("key uses recorded: {}", rep.key_uses);
        println!("unclean shutdowns: {}", rep.unclean_shutdowns.len());
        for u in &rep.unclean_shutdowns {
            let last = u.last_durable_seq.map_or_else(|| "-".to_owned(), |s| s.to_string());
            println!(
                "  UNCLEAN SHUTDOWN (record {}): opener {} (pid {} on {}) ended without closing \
                 the log; records it sequenced after seq {last} may be lost",
                u.seq, u.opener, u.pid, u.host
            );
        }
        if strict && !rep.unclean_shutdowns.is_empty() {
            eprintln!(
                "bulwark: audit log verification FAILED (--strict): {} unclean shutdown(s)",
                rep.unclean_shutdowns.len()
            );
            return Ok(ExitCode::from(1));
        }
    }
    if let Some(p) = proof {
        if log.is_some() && proven.is_none() {
            eprintln!("bulwark: inclusion proof FAILED for record {}: not in the log", p.seq);
            return Ok(ExitCode::from(1));
        }
        if let Err(why) = audit::verify_proof_record(&p, &pk, proven.as_ref()) {
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

fn first_line(p: &Path) -> CliResult<Option<String>> {
    use std::io::BufRead as _;
    let f = std::fs::File::open(p)
        .map_err(|e| CliError::Usage(format!("cannot read log {}: {}", p.display(), e.kind())))?;
    let mut l = String::new();
    let n = std::io::BufReader::new(f)
        .read_line(&mut l)
        .map_err(|e| CliError::Usage(format!("cannot read log {}: {}", p.display(), e.kind())))?;
    Ok((n > 0).then_some(l))
}

/// `audit verify` of a cluster export (`audit export --cluster`): every node chain, the global
/// chain's signatures and links, every head against the node chains. Streamed.
fn verify_cluster(p: &Path, pk: &[u8]) -> CliResult<ExitCode> {
    use std::io::BufRead as _;
    let f = std::fs::File::open(p)
        .map_err(|e| CliError::Usage(format!("cannot read log {}: {}", p.display(), e.kind())))?;
    let mut v = audit::ClusterVerifier::new(pk);
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| {
            CliError::Usage(format!("cannot read log {}: {}", p.display(), e.kind()))
        })?;
        v.push_line(&line);
    }
    let rep = v.finish();
    if !rep.ok() {
        eprintln!(
            "bulwark: cluster audit verification FAILED ({} problem(s)):",
            rep.problems.len()
        );
        for pr in &rep.problems {
            eprintln!("  {pr}");
        }
        return Ok(ExitCode::from(1));
    }
    let records: u64 = rep.nodes.values().map(|n| n.records).sum();
    println!(
        "OK: cluster export: {} nodes, {records} records, {} signed global checkpoints",
        rep.nodes.len(),
        rep.global_entries
    );
    for (id, n) in &rep.nodes {
        println!("  node {id}: {} records, all covered by the last global checkpoint", n.records);
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit export --cluster` against a remote cluster node: streamed to a private file.
pub(crate) fn export_cluster(c: &bulwark_client::Client, out: &Path) -> CliResult<ExitCode> {
    use std::io::Write as _;
    let f = bulwark_core::fsutil::create_private(out)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", out.display())))?;
    let mut w = std::io::BufWriter::new(f);
    let (mut records, mut globals, mut nodes) = (0u64, 0u64, 0u64);
    c.audit_export_cluster_each(|l| {
        if l.starts_with("{\"type\":\"record\"") {
            records += 1;
        } else if l.starts_with("{\"type\":\"global\"") {
            globals += 1;
        } else if l.starts_with("{\"type\":\"node\"") {
            nodes += 1;
        }
        w.write_all(l.as_bytes())?;
        w.write_all(b"\n")
    })?;
    w.into_inner()
        .map_err(std::io::IntoInnerError::into_error)
        .and_then(|f| f.sync_all())
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", out.display())))?;
    println!(
        "exported {records} records of {nodes} nodes and {globals} global checkpoints to {}",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
