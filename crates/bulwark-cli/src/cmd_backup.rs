//! `bulwark backup` and `bulwark restore` (docs/backup.md): an encrypted, authenticated file
//! of the whole store under a backup passphrase, and its restore into a freshly initialized
//! store; embedded, or with `--endpoint` through a remote HSM's API (security officer). The passphrase comes from `--passphrase-file`, `BULWARK_BACKUP_PASSPHRASE` or a
//! prompt, never from an argument.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_core::secret::SecretBytes;
use bulwark_core::token::{read_backup_header, CustodianShare, Unlock, BACKUP_KDF};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use zeroize::Zeroizing;

use crate::{CliError, CliResult, Ctx};

/// The environment variable a backup passphrase may come from.
const PASSPHRASE_VAR: &str = "BULWARK_BACKUP_PASSPHRASE";

/// `bulwark backup`.
#[derive(Args, Debug)]
pub(crate) struct BackupArgs {
    /// The backup file to write (mode 0600; refused if it exists).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Read the backup passphrase from this file (else BULWARK_BACKUP_PASSPHRASE, else a
    /// prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Split the backup key among this many custodians instead of using a passphrase
    /// (embedded stores; with --threshold and --share-dir).
    #[arg(long, value_name = "N", requires_all = ["threshold", "share_dir"], conflicts_with = "passphrase_file")]
    shares: Option<u8>,
    /// How many custodian shares open the backup (2..=N).
    #[arg(long, value_name = "M", requires = "shares")]
    threshold: Option<u8>,
    /// Where to write the share files (0600), one per custodian.
    #[arg(long, value_name = "DIR", requires = "shares")]
    share_dir: Option<PathBuf>,
    /// Back up only this key (every object labelled LABEL: both halves of a pair, every
    /// version, with attributes, states, policies and access lists); repeat for more keys.
    /// Without it, the whole store.
    #[arg(long = "key", value_name = "LABEL")]
    keys: Vec<String>,
    /// Quorum approvals of operation "backup" (remote HSMs that require them).
    #[command(flatten)]
    approval: crate::cmd_approval::ApprovalArgs,
}

/// `bulwark restore`.
#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    /// The backup file to restore from.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Read the backup passphrase from this file (else BULWARK_BACKUP_PASSPHRASE, else a
    /// prompt).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// A custodian share file of a backup whose key is split (repeat for each custodian; at
    /// least the threshold). Replaces the passphrase.
    #[arg(long = "share", value_name = "FILE", conflicts_with = "passphrase_file")]
    shares: Vec<PathBuf>,
    /// Replace the contents of this store (not empty, same security domain) with the
    /// whole-store backup, taking it back to the backup's state, and reset its anti-rollback
    /// baseline (audited; quorum approvals of operation "restore-rebase" on a remote HSM).
    #[arg(long)]
    rebase: bool,
    /// Quorum approvals of operation "restore" (remote HSMs that require them).
    #[command(flatten)]
    approval: crate::cmd_approval::ApprovalArgs,
}

pub(crate) fn passphrase(file: Option<&Path>, confirm: bool) -> CliResult<SecretBytes> {
    if let Some(f) = file {
        let raw = bulwark_core::fsutil::read_private(f).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => CliError::Usage(e.to_string()),
            k => CliError::Usage(format!("cannot read passphrase file {}: {k}", f.display())),
        })?;
        let mut end = raw.len();
        while end > 0 && matches!(raw[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        return Ok(SecretBytes::from_slice(&raw[..end]));
    }
    if let Ok(v) = std::env::var(PASSPHRASE_VAR) {
        let v = Zeroizing::new(v);
        if !v.is_empty() {
            return Ok(SecretBytes::from_slice(v.as_bytes()));
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "no backup passphrase given: set {PASSPHRASE_VAR} or use --passphrase-file \
             (no terminal to prompt on)"
        )));
    }
    let read = |what: &str| {
        rpassword::prompt_password(format!("{what}: "))
            .map(Zeroizing::new)
            .map_err(|e| CliError::Usage(format!("cannot read the passphrase: {}", e.kind())))
    };
    let first = read("backup passphrase")?;
    if confirm && *read("backup passphrase (again)")? != *first {
        return Err(CliError::Usage("the two passphrases differ".into()));
    }
    Ok(SecretBytes::from_slice(first.as_bytes()))
}

/// Writes one 0600 file per custodian share beside each other in `dir`.
fn write_shares(out: &Path, dir: &Path, shares: &[CustodianShare]) -> CliResult<Vec<PathBuf>> {
    let base =
        out.file_name().map_or_else(|| "backup".into(), |n| n.to_string_lossy().into_owned());
    let mut written = Vec::new();
    for s in shares {
        let p = dir.join(format!("{base}.share-{}-of-{}.json", s.index(), shares.len()));
        bulwark_core::fsutil::write_private(&p, s.to_json().as_bytes())
            .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", p.display())))?;
        written.push(p);
    }
    Ok(written)
}

fn read_share(p: &Path) -> CliResult<CustodianShare> {
    let raw = bulwark_core::fsutil::read_private(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => CliError::Usage(e.to_string()),
        k => CliError::Usage(format!("cannot read share file {}: {k}", p.display())),
    })?;
    Ok(CustodianShare::parse(&raw)?)
}

/// A progress bar on stderr when it is a terminal (hidden otherwise).
fn bar(what: &'static str) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        b.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} objects ({per_sec}, {eta} left)")
    {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(what);
    b
}

pub(crate) fn backup(ctx: &Ctx, a: &BackupArgs) -> CliResult<ExitCode> {
    if a.out.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists: choose another file name",
            a.out.display()
        )));
    }
    let t = ctx.so_token()?;
    let pb = bar("backup");
    let mut progress = |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    };
    let (s, written) = if let (Some(n), Some(m), Some(dir)) = (a.shares, a.threshold, &a.share_dir)
    {
        bulwark_core::fsutil::create_private_dir(dir)
            .map_err(|e| CliError::Usage(format!("cannot use {}: {e}", dir.display())))?;
        let (s, shares) = if a.keys.is_empty() {
            t.backup_with_shares(&a.out, m, n, &mut progress)?
        } else {
            t.backup_selected_with_shares(&a.out, &a.keys, m, n, &mut progress)?
        };
        pb.finish_and_clear();
        (s, write_shares(&a.out, dir, &shares)?)
    } else {
        let pass = passphrase(a.passphrase_file.as_deref(), true)?;
        let s = if a.keys.is_empty() {
            t.backup(&a.out, &pass, BACKUP_KDF, &mut progress)?
        } else {
            t.backup_selected(&a.out, &a.keys, &pass, BACKUP_KDF, &mut progress)?
        };
        pb.finish_and_clear();
        (s, Vec::new())
    };
    for w in &written {
        println!("custodian share written to {}", w.display());
    }
    println!(
        "backup written to {}: {} objects, {} users, {} grants, {} bytes (store {}, security \
         domain {})",
        a.out.display(),
        s.objects,
        s.users,
        s.grants,
        s.bytes,
        hex::encode(s.source_store),
        hex::encode(s.domain)
    );
    if !s.keys.is_empty() {
        println!("keys: {}", shown_keys(&s.keys));
    }
    Ok(ExitCode::SUCCESS)
}

fn shown_keys(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("{:?}", bulwark_core::display::escape(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_restored(keys: &[String], rebased: Option<u64>) {
    if !keys.is_empty() {
        println!("keys added: {}", shown_keys(keys));
    }
    if let Some(g) = rebased {
        println!(
            "the store's previous contents were replaced; its anti-rollback baseline is reset to \
             generation {g}"
        );
    }
}

pub(crate) fn restore(ctx: &Ctx, a: &RestoreArgs) -> CliResult<ExitCode> {
    // What the file claims, before any PIN or passphrase is asked for (checked later).
    let claimed = read_backup_header(&a.input)?;
    let t = ctx.so_token()?;
    let shares = a.shares.iter().map(|p| read_share(p)).collect::<CliResult<Vec<_>>>()?;
    let pass = match (claimed.custodians, shares.is_empty()) {
        (Some((m, n)), true) => {
            return Err(CliError::Usage(format!(
                "this backup's key is split among {n} custodians: give {m} share files with --share"
            )))
        }
        (Some(_), false) => None,
        (None, false) => {
            return Err(CliError::Usage(
                "this backup is protected by a passphrase, not by custodian shares".into(),
            ))
        }
        (None, true) => Some(passphrase(a.passphrase_file.as_deref(), false)?),
    };
    let unlock = match &pass {
        Some(p) => Unlock::Passphrase(p),
        None => Unlock::Shares(&shares),
    };
    let pb = bar("restore (verify, then write)");
    pb.set_length(claimed.objects.saturating_mul(2));
    let opts = bulwark_core::token::RestoreOptions { rebase: a.rebase };
    let r = t.restore_with_options(&a.input, unlock, opts, &mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    });
    pb.finish_and_clear();
    let s = r?;
    println!(
        "restored {} objects, {} users, {} grants from store {} (security domain {})",
        s.objects,
        s.users,
        s.grants,
        hex::encode(s.source_store),
        hex::encode(s.domain)
    );
    print_restored(&s.keys, s.rebased);
    Ok(ExitCode::SUCCESS)
}

/// `bulwark --endpoint URL backup`: the HSM writes the backup and streams it here, where it
/// goes to a 0600 temporary file beside `--out`, linked into place once complete.
pub(crate) fn backup_remote(c: &bulwark_client::Client, a: &BackupArgs) -> CliResult<ExitCode> {
    use std::io::Write as _;
    if a.out.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists: choose another file name",
            a.out.display()
        )));
    }
    if a.shares.is_some() {
        return Err(CliError::Usage(
            "custodian shares are for embedded stores; a remote backup uses a passphrase".into(),
        ));
    }
    let sid = c.status()?.store_id;
    let (approvals, not_after) = crate::cmd_approval::collect(&a.approval, &sid, "backup", &[])?;
    let pass = passphrase(a.passphrase_file.as_deref(), true)?;
    let mut tmp = a.out.clone().into_os_string();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    let file = bulwark_core::fsutil::create_private(&tmp)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", tmp.display())))?;
    let mut writer = std::io::BufWriter::new(file);
    let pb = bar("backup (bytes)");
    let r = c.backup_each(
        bulwark_proto::v1::BackupRequest {
            passphrase: pass.expose_secret().to_vec(),
            approvals,
            approval_not_after: not_after,
            keys: a.keys.clone(),
        },
        |data, _objects| {
            pb.inc(data.len() as u64);
            writer.write_all(data)
        },
    );
    pb.finish_and_clear();
    let done = r
        .map_err(|e| crate::cmd_approval::explain(e, &a.approval, &sid, "backup", &[], not_after))
        .and_then(|bytes| {
            let file = writer
                .into_inner()
                .map_err(|e| CliError::Usage(format!("cannot write: {}", e.error())))?;
            file.sync_all().map_err(|e| CliError::Usage(format!("cannot write: {e}")))?;
            Ok(bytes)
        });
    let bytes = match done {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // The file must read as a backup before it takes the final name, and a hard link never
    // replaces a file that appeared meanwhile.
    let placed = read_backup_header(&tmp).map_err(CliError::from).and_then(|h| {
        std::fs::hard_link(&tmp, &a.out)
            .map(|()| h)
            .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", a.out.display())))
    });
    let _ = std::fs::remove_file(&tmp);
    let h = placed?;
    println!(
        "backup written to {}: {} objects, {bytes} bytes (store {}, security domain {})",
        a.out.display(),
        h.objects,
        hex::encode(h.source_store),
        hex::encode(h.domain)
    );
    Ok(ExitCode::SUCCESS)
}

/// `bulwark --endpoint URL restore`: uploads the file; the HSM checks all of it before it
/// changes anything.
pub(crate) fn restore_remote(c: &bulwark_client::Client, a: &RestoreArgs) -> CliResult<ExitCode> {
    if read_backup_header(&a.input)?.custodians.is_some() || !a.shares.is_empty() {
        return Err(CliError::Usage(
            "a backup under custodian shares is restored into an embedded store".into(),
        ));
    }
    let file = std::fs::File::open(&a.input)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", a.input.display())))?;
    let sid = c.status()?.store_id;
    let op = if a.rebase { "restore-rebase" } else { "restore" };
    let (approvals, not_after) = crate::cmd_approval::collect(&a.approval, &sid, op, &[])?;
    let pass = passphrase(a.passphrase_file.as_deref(), false)?;
    let first = bulwark_proto::v1::RestoreChunk {
        passphrase: pass.expose_secret().to_vec(),
        approvals,
        approval_not_after: not_after,
        data: Vec::new(),
        rebase: a.rebase,
    };
    let s = c
        .restore_from(first, file)
        .map_err(|e| crate::cmd_approval::explain(e, &a.approval, &sid, op, &[], not_after))?;
    println!(
        "restored {} objects, {} users, {} grants from store {} (security domain {})",
        s.objects, s.users, s.grants, s.source_store, s.domain
    );
    print_restored(&s.keys, (s.rebased_generation != 0).then_some(s.rebased_generation));
    Ok(ExitCode::SUCCESS)
}
