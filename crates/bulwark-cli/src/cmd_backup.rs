//! `bulwark backup` and `bulwark restore` (docs/backup.md): an encrypted, authenticated file
//! of the whole store under a backup passphrase, and its restore into a freshly initialized
//! store. The passphrase comes from `--passphrase-file`, `BULWARK_BACKUP_PASSPHRASE` or a
//! prompt, never from an argument.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_core::secret::SecretBytes;
use bulwark_core::token::{read_backup_header, BACKUP_KDF};
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
}

fn passphrase(file: Option<&Path>, confirm: bool) -> CliResult<SecretBytes> {
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
    let pass = passphrase(a.passphrase_file.as_deref(), true)?;
    let pb = bar("backup");
    let r = t.backup(&a.out, &pass, BACKUP_KDF, &mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    });
    pb.finish_and_clear();
    let s = r?;
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
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn restore(ctx: &Ctx, a: &RestoreArgs) -> CliResult<ExitCode> {
    // What the file claims, before any PIN or passphrase is asked for (checked later).
    let claimed = read_backup_header(&a.input)?;
    let t = ctx.so_token()?;
    let pass = passphrase(a.passphrase_file.as_deref(), false)?;
    let pb = bar("restore (verify, then write)");
    pb.set_length(claimed.objects.saturating_mul(2));
    let r = t.restore(&a.input, &pass, &mut |done, total| {
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
    Ok(ExitCode::SUCCESS)
}
