//! `bulwark --endpoint URL init --label L --shares N --threshold M --share-dir DIR`: initializes
//! a remote HSM that has no store yet (the daemon's bootstrap service).
//!
//! The daemon creates the quorum store and the first security officer and returns the N share
//! files over the mTLS channel; this command encrypts each to its custodian's passphrase *here*
//! (`--encrypt-shares`: one `--passphrase-file` per custodian, or prompts) and writes
//! `share-<i>.json` (0600, never over an existing file). Passwords and passphrases never come
//! from a plain argument. Everything that can fail locally (existing share files, unreadable
//! passphrase files, mismatched passphrases) fails before the HSM is asked to initialize.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_client::{bootstrap_v1 as pb, ClientError, Code};
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::seal::{QuorumInit, ShareFile};
use bulwark_core::token::{SecurityPolicy, TamperResponse};
use clap::Args;
use zeroize::Zeroizing;

use crate::{CliError, CliResult};

/// The remote-initialization options of `bulwark init` (with `--endpoint` only).
#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// Remote HSM: number of unseal shares (custodians).
    #[arg(long)]
    shares: Option<u8>,
    /// Remote HSM: shares needed to unseal (at least 2).
    #[arg(long)]
    threshold: Option<u8>,
    /// Remote HSM: directory for the share files share-<i>.json (created 0700 if needed).
    #[arg(long, value_name = "DIR")]
    share_dir: Option<PathBuf>,
    /// Remote HSM: encrypt each share file to its custodian's passphrase (prompted, or
    /// --passphrase-file once per custodian, in share order).
    #[arg(long)]
    encrypt_shares: bool,
    /// Remote HSM: a custodian's passphrase file (repeat N times, share 1 first).
    #[arg(long = "passphrase-file", value_name = "FILE", requires = "encrypt_shares")]
    passphrase_files: Vec<PathBuf>,
    /// Remote HSM: the first security officer (password from BULWARK_NEW_PASSWORD or a prompt).
    #[arg(long, value_name = "NAME")]
    so_name: Option<String>,
}

impl InitArgs {
    /// The first remote-only option given, if any (to refuse it without --endpoint).
    pub(crate) fn first_given(&self) -> Option<&'static str> {
        [
            (self.shares.is_some(), "--shares"),
            (self.threshold.is_some(), "--threshold"),
            (self.share_dir.is_some(), "--share-dir"),
            (self.encrypt_shares, "--encrypt-shares"),
            (!self.passphrase_files.is_empty(), "--passphrase-file"),
            (self.so_name.is_some(), "--so-name"),
        ]
        .into_iter()
        .find_map(|(given, name)| given.then_some(name))
    }
}

const MIN_SECRET: usize = 8;

fn usage(s: impl Into<String>) -> CliError {
    CliError::Usage(s.into())
}

/// The share files, created empty (0600, `create_new`) before the HSM is asked anything, and
/// removed again unless they were all written.
struct ShareOutputs {
    files: Vec<(PathBuf, std::fs::File)>,
    kept: bool,
}

impl ShareOutputs {
    fn create(dir: &Path, n: u8) -> CliResult<Self> {
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| usage(format!("cannot create {}: {}", dir.display(), e.kind())))?;
        }
        let mut out = Self { files: Vec::new(), kept: false };
        for i in 1..=n {
            let path = dir.join(format!("share-{i}.json"));
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        usage(format!(
                            "{} exists: refusing to overwrite a share file (use an empty --share-dir)",
                            path.display()
                        ))
                    } else {
                        usage(format!("cannot create {}: {}", path.display(), e.kind()))
                    }
                })?;
            out.files.push((path, f));
        }
        Ok(out)
    }
}

impl Drop for ShareOutputs {
    fn drop(&mut self) {
        if !self.kept {
            for (p, _) in &self.files {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn read_secret_file(p: &Path) -> CliResult<Zeroizing<String>> {
    let raw = bulwark_core::fsutil::read_private(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => usage(e.to_string()),
        k => usage(format!("cannot read {}: {k}", p.display())),
    })?;
    let s = std::str::from_utf8(&raw).map_err(|_| usage(format!("{}: not UTF-8", p.display())))?;
    Ok(Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_owned()))
}

fn prompt(msg: &str) -> CliResult<Zeroizing<String>> {
    rpassword::prompt_password(msg)
        .map(Zeroizing::new)
        .map_err(|e| usage(format!("cannot read the passphrase: {e}")))
}

/// One passphrase per custodian, from files or prompts (asked twice).
fn passphrases(a: &InitArgs, n: u8) -> CliResult<Vec<Option<Zeroizing<String>>>> {
    if !a.encrypt_shares {
        return Ok((0..n).map(|_| None).collect());
    }
    let mut out = Vec::with_capacity(usize::from(n));
    if a.passphrase_files.is_empty() {
        for i in 1..=n {
            let p = prompt(&format!("passphrase for custodian {i} (share {i}): "))?;
            if *p != *prompt("again: ")? {
                return Err(usage(format!("the passphrases for custodian {i} differ")));
            }
            out.push(p);
        }
    } else if a.passphrase_files.len() == usize::from(n) {
        for f in &a.passphrase_files {
            out.push(read_secret_file(f)?);
        }
    } else {
        return Err(usage(format!(
            "--passphrase-file given {} times: give one per custodian ({n}), or none to be prompted",
            a.passphrase_files.len()
        )));
    }
    if out.iter().any(|p| p.len() < MIN_SECRET) {
        return Err(usage(format!("share passphrases must be at least {MIN_SECRET} bytes")));
    }
    Ok(out.into_iter().map(Some).collect())
}

fn policy_message(p: &SecurityPolicy) -> CliResult<pb::SecurityPolicy> {
    let tamper_file = match &p.tamper_file {
        None => String::new(),
        Some(f) => f
            .to_str()
            .ok_or_else(|| usage("--tamper-file must be a UTF-8 path on the HSM's host"))?
            .to_owned(),
    };
    Ok(pb::SecurityPolicy {
        tamper_response: match p.tamper_response {
            TamperResponse::Zeroize => pb::TamperResponse::Zeroize,
            TamperResponse::Alarm => pb::TamperResponse::Alarm,
        }
        .into(),
        tamper_file,
        tracer_is_tamper: p.tracer_is_tamper,
        audit_key_use: Some(p.audit_key_use != bulwark_core::audit::AuditKeyUse::Off),
        audit_key_use_class: p.audit_key_use.as_str().to_owned(),
        so_failure_limit: Some(p.so_failure_limit),
        checkpoint_every_records: Some(p.checkpoint_every_records),
        checkpoint_every_secs: Some(p.checkpoint_every_secs),
    })
}

/// Checks the files the HSM returned against what was asked, and re-encodes each for its
/// custodian (encrypted when a passphrase is given). Returns the files' JSON, share 1 first.
fn custodian_files(
    r: &bulwark_client::Initialized,
    shares: u8,
    threshold: u8,
    pass: &[Option<Zeroizing<String>>],
) -> CliResult<Vec<Zeroizing<String>>> {
    let bad = |why: &str| usage(format!("the HSM returned unexpected share files ({why})"));
    if r.share_files.len() != usize::from(shares) {
        return Err(bad("wrong count"));
    }
    let mut uid = [0u8; 16];
    hex::decode_to_slice(&r.store_id, &mut uid).map_err(|_| bad("store id"))?;
    let mut parsed = Vec::with_capacity(r.share_files.len());
    for (i, text) in r.share_files.iter().enumerate() {
        let f = ShareFile::parse(text).map_err(|_| bad("not a share file"))?;
        let ok = usize::from(f.index) == i + 1
            && f.store_id == r.store_id
            && f.shares == shares
            && f.threshold == threshold
            && !f.is_encrypted();
        if !ok {
            return Err(bad("fields"));
        }
        parsed.push(f.share(None).map_err(|_| bad("share"))?);
    }
    let init = QuorumInit { store_uid: uid, threshold, shares: parsed };
    let mut out = Vec::with_capacity(init.shares.len());
    for (s, p) in init.shares.iter().zip(pass) {
        let pass = p.as_ref().map(|p| p.as_bytes());
        let f = ShareFile::new(&init, s, pass, KdfParams::default())?;
        out.push(Zeroizing::new(f.to_json()));
    }
    Ok(out)
}

pub(crate) fn run(
    endpoint: &str,
    label: &str,
    so_pin_file: Option<&Path>,
    policy: &SecurityPolicy,
    a: &InitArgs,
) -> CliResult<ExitCode> {
    if so_pin_file.is_some() {
        return Err(usage(
            "--so-pin-file is for an embedded store; a remote HSM's security officer has a \
             password (BULWARK_NEW_PASSWORD or a prompt)",
        ));
    }
    let need = |o: &'static str| usage(format!("init with --endpoint needs {o}"));
    let shares = a.shares.ok_or_else(|| need("--shares N"))?;
    let threshold = a.threshold.ok_or_else(|| need("--threshold M"))?;
    let share_dir = a.share_dir.as_deref().ok_or_else(|| need("--share-dir DIR"))?;
    if threshold < 2 || shares < threshold {
        return Err(usage("quorum needs 2 <= --threshold <= --shares <= 255"));
    }
    let so_name = a.so_name.as_deref().unwrap_or("so");
    let c = crate::cmd_remote::connect(endpoint)?;
    match c.bootstrap_status() {
        Ok(s) if s.initialized => {
            return Err(usage(format!("the HSM at {endpoint} is already initialized")))
        }
        Ok(_) => {}
        Err(ClientError::Status { code: Code::Unimplemented, .. }) => {
            return Err(usage(format!(
                "the HSM at {endpoint} does not offer remote initialization: initialize it on \
                 its host with `bulwarkd init`"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let mut outputs = ShareOutputs::create(share_dir, shares)?;
    let pass = passphrases(a, shares)?;
    let so_password = crate::cmd_remote::new_password()?;
    if so_password.len() < MIN_SECRET {
        return Err(usage(format!("passwords must be at least {MIN_SECRET} bytes")));
    }
    let r = c
        .initialize(pb::InitializeRequest {
            label: label.to_owned(),
            shares: u32::from(shares),
            threshold: u32::from(threshold),
            policy: Some(policy_message(policy)?),
            so_name: so_name.to_owned(),
            so_password: so_password.to_string(),
        })
        .map_err(|e| match e {
            ClientError::Status { code: Code::AlreadyExists, .. } => {
                usage(format!("the HSM at {endpoint} is already initialized"))
            }
            e => e.into(),
        })?;
    // The HSM is initialized now: from here on, a failure loses shares. Say so plainly.
    let lost = |what: String| {
        usage(format!(
            "the HSM at {endpoint} is initialized (store {}) but {what}: without {threshold} \
             share files it can never be unsealed; remove its store on the HSM host and \
             initialize again",
            r.store_id
        ))
    };
    let files = custodian_files(&r, shares, threshold, &pass)
        .map_err(|e| lost(format!("the share files could not be prepared ({e})")))?;
    for ((path, f), text) in outputs.files.iter_mut().zip(&files) {
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| lost(format!("{} could not be written ({})", path.display(), e.kind())))?;
    }
    outputs.kept = true;
    println!(
        "HSM at {endpoint} initialized (store {}, label {label:?}): {threshold} of {shares} \
         shares unseal it; give each custodian one file{}:",
        r.store_id,
        if a.encrypt_shares { " (encrypted to their passphrase)" } else { " (UNENCRYPTED)" }
    );
    for (p, _) in &outputs.files {
        println!("  {}", p.display());
    }
    println!("first security officer: {so_name} (logs in once the HSM is unsealed)");
    println!("the HSM is sealed: each custodian runs `bulwark --endpoint {endpoint} unseal --share FILE`");
    Ok(ExitCode::SUCCESS)
}
