//! `bulwark --endpoint URL ...`: the CLI against a remote HSM (bulwarkd) over mTLS gRPC.
//!
//! TLS files come from `BULWARK_CA_CERT`, `BULWARK_CLIENT_CERT`, `BULWARK_CLIENT_KEY`; the login
//! from `BULWARK_USER` and `BULWARK_PASSWORD` (or `BULWARK_PASSWORD_FILE`, or a prompt) plus
//! `BULWARK_OTP` for a user with a TOTP second factor — never from a plain argument. `unseal` needs no login: the share file is the custodian's credential;
//! an encrypted share is decrypted here (passphrase from `BULWARK_SHARE_PASSPHRASE`,
//! `--passphrase-file` or a prompt), so the passphrase never leaves this machine.
//!
//! Exit codes as in embedded mode: 0 success, 1 invalid signature, 2 any error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_client::{v1 as pb, Client, ClientConfig, ClientError};
use bulwark_core::seal::ShareFile;
use clap::Args;
use serde_json::json;
use zeroize::Zeroizing;

use crate::cmd_approval::{self, ApprovalArgs};
use crate::cmd_audit::AuditCommand;
use crate::cmd_keys::KeyCommand;
use crate::{CliError, CliResult, Command};

/// `bulwark unseal` arguments.
#[derive(Args, Debug)]
pub(crate) struct UnsealArgs {
    /// The custodian's share file.
    #[arg(long, value_name = "FILE")]
    share: PathBuf,
    /// Read the share's passphrase from this file (if the share is encrypted).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

/// `bulwark user ...` (remote, security officer).
#[derive(clap::Subcommand, Debug)]
pub(crate) enum UserCommand {
    /// Add a user; the password comes from BULWARK_NEW_PASSWORD or a prompt.
    Add {
        /// User name.
        name: String,
        /// security-officer, crypto-officer, crypto-user or auditor.
        #[arg(long)]
        role: String,
        /// Enroll a TOTP second factor; prints the otpauth:// URI once.
        #[arg(long)]
        totp: bool,
        /// Bind the user to this client certificate (PEM): it can log in only with it.
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
        #[command(flatten)]
        approval: ApprovalArgs,
    },
    /// List users.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Delete a user; its sessions end at once.
    Delete {
        /// User name.
        name: String,
        #[command(flatten)]
        approval: ApprovalArgs,
    },
    /// Change a user's role; its sessions end at once.
    SetRole {
        /// User name.
        name: String,
        /// security-officer, crypto-officer, crypto-user or auditor.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        approval: ApprovalArgs,
    },
}

/// `bulwark access` arguments.
#[derive(Args, Debug)]
pub(crate) struct AccessArgs {
    /// Key label.
    label: String,
    /// A grant, `user:NAME=OPS` or `role:ROLE=OPS` with OPS a comma list of sign, verify,
    /// encrypt, decrypt, public, * (repeat for several; none revokes every grant).
    #[arg(long = "grant", value_name = "PRINCIPAL=OPS")]
    grants: Vec<String>,
}

/// `bulwark trust` arguments.
#[derive(Args, Debug)]
pub(crate) struct TrustArgs {
    /// Key label (the wrapping key: an AES key, or an RSA key pair's public half).
    label: String,
    /// Remove the mark instead.
    #[arg(long)]
    revoke: bool,
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Usage(match &e {
            ClientError::Status { message, .. } if message == "sealed" => {
                "the HSM is sealed: custodians must present their shares (bulwark unseal --share FILE)"
                    .into()
            }
            ClientError::Status { message, .. } if message == "not initialized" => {
                "the HSM is not initialized: initialize it with `bulwark --endpoint URL init ...`"
                    .into()
            }
            ClientError::Status { code, message, .. } => format!("HSM: {message} ({code:?})"),
            _ => e.to_string(),
        })
    }
}

fn read(p: &Path) -> CliResult<Vec<u8>> {
    std::fs::read(p)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {}", p.display(), e.kind())))
}

/// Writes an output: created 0600, never through a symbolic link.
fn write_file(p: &Path, data: &[u8]) -> CliResult<()> {
    crate::cmd_ops::write_file(p, data)
}

/// Reads a file that holds a secret (a share, a passphrase, a password): refused when the
/// group or others can access it.
fn read_secret(p: &Path) -> CliResult<Zeroizing<Vec<u8>>> {
    bulwark_core::fsutil::read_private(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => CliError::Usage(e.to_string()),
        k => CliError::Usage(format!("cannot read {}: {k}", p.display())),
    })
}

pub(crate) fn connect(endpoint: &str) -> CliResult<Client> {
    if let Some(path) = endpoint.strip_prefix("unix:") {
        return Ok(Client::connect_unix(Path::new(path))?);
    }
    let cfg = ClientConfig::from_env(endpoint)?;
    Ok(Client::connect(&cfg)?)
}

fn secret_from(env: &str, file_env: &str, prompt: &str) -> CliResult<Zeroizing<String>> {
    if let Some(v) = std::env::var(env).ok().filter(|v| !v.is_empty()) {
        return Ok(Zeroizing::new(v));
    }
    if let Some(f) = std::env::var_os(file_env).filter(|v| !v.is_empty()) {
        let raw = read_secret(Path::new(&f))?;
        let s = String::from_utf8(raw.to_vec())
            .map_err(|_| CliError::Usage(format!("{file_env}: not UTF-8")))?;
        return Ok(Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_owned()));
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|e| CliError::Usage(format!("cannot read {env}: {e}")))
}

/// Connects and logs in with the environment's credentials.
fn session(endpoint: &str) -> CliResult<Client> {
    let mut c = connect(endpoint)?;
    let user = std::env::var("BULWARK_USER")
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| CliError::Usage("set BULWARK_USER (and BULWARK_PASSWORD)".into()))?;
    let pw = secret_from("BULWARK_PASSWORD", "BULWARK_PASSWORD_FILE", "password: ")?;
    let otp = std::env::var("BULWARK_OTP").map(Zeroizing::new).unwrap_or_default();
    c.login_with_otp(&user, &pw, &otp)?;
    Ok(c)
}

pub(crate) fn run(endpoint: &str, cmd: Command) -> CliResult<ExitCode> {
    match cmd {
        Command::Init { label, so_pin_file, policy, remote } => crate::cmd_remote_init::run(
            endpoint,
            &label,
            so_pin_file.as_deref(),
            &policy.options().policy,
            &remote,
        ),
        Command::Key(k) => key(endpoint, k),
        Command::Sign(a) => {
            let c = session(endpoint)?;
            let data = read(&a.input)?;
            let sig = c.sign_version(
                &a.key,
                a.key_version.unwrap_or(0),
                a.mechanism.as_deref().unwrap_or(""),
                &data,
            )?;
            write_file(&a.out, &sig)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(a) => {
            if let Some(b) = &a.bundle {
                return crate::cmd_versions::verify_bundle(&a, b);
            }
            let c = session(endpoint)?;
            let (data, sig) = (read(&a.input)?, read(&a.sig)?);
            let (valid, state) = c.verify_version(
                &a.key,
                a.key_version.unwrap_or(0),
                a.mechanism.as_deref().unwrap_or(""),
                &data,
                &sig,
            )?;
            crate::cmd_lifecycle::note_state(&a.key, &state);
            if valid {
                println!("signature OK");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("signature INVALID");
                Ok(ExitCode::from(1))
            }
        }
        Command::Encrypt(a) => {
            let c = session(endpoint)?;
            let pt = Zeroizing::new(read(&a.input)?);
            write_file(&a.out, &c.encrypt_version(&a.key, a.key_version.unwrap_or(0), &pt)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Decrypt(a) => {
            let c = session(endpoint)?;
            let (pt, state) =
                c.decrypt_version(&a.key, a.key_version.unwrap_or(0), &read(&a.input)?)?;
            crate::cmd_lifecycle::note_state(&a.key, &state);
            write_file(&a.out, &pt)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Random { bytes, hex, out } => {
            let n = u32::try_from(bytes)
                .ok()
                .filter(|_| bulwark_core::limits::check_random(bytes).is_ok())
                .ok_or_else(|| CliError::Usage("--bytes must be between 1 and 1048576".into()))?;
            let buf = session(endpoint)?.random(n)?;
            if let Some(p) = out {
                write_file(&p, &buf)?;
            } else if hex {
                println!("{}", ::hex::encode(&buf));
            } else {
                std::io::stdout()
                    .write_all(&buf)
                    .map_err(|e| CliError::Usage(format!("cannot write: {}", e.kind())))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => status(endpoint, json),
        Command::Seal => {
            session(endpoint)?.seal()?;
            println!("sealed: the HSM's keys are wiped from memory; unseal with `bulwark unseal --share FILE`");
            Ok(ExitCode::SUCCESS)
        }
        Command::Unseal(a) => unseal(endpoint, &a),
        Command::User(u) => user(endpoint, u),
        Command::Access(a) => access(endpoint, &a),
        Command::Trust(a) => {
            let n = session(endpoint)?.set_key_trusted(&a.label, !a.revoke)?;
            let what = if a.revoke { "no longer trusted" } else { "trusted" };
            println!("{n} key object(s) labelled {:?} {what}", a.label);
            Ok(ExitCode::SUCCESS)
        }
        Command::Zeroize(a) => zeroize(endpoint, &a),
        Command::Backup(a) => crate::cmd_backup::backup_remote(&session(endpoint)?, &a),
        Command::Restore(a) => crate::cmd_backup::restore_remote(&session(endpoint)?, &a),
        Command::Audit(a) => audit(endpoint, a),
        Command::Settings(s) => crate::cmd_destroy::settings_remote(&session(endpoint)?, s),
        Command::Bench(a) => crate::cmd_bench::remote(&|| session(endpoint), endpoint, &a),
        Command::Cluster(c) => crate::cmd_cluster::run(&session(endpoint)?, &c),
        Command::Tamper(crate::cmd_zeroize::TamperCommand::Status) => {
            let s = connect(endpoint)?.status()?;
            if s.tamper_alarm.is_empty() {
                println!("tamper alarm: none");
            } else {
                println!(
                    "tamper alarm: ACTIVE ({})",
                    bulwark_core::display::escape(&s.tamper_alarm)
                );
            }
            if s.zeroized {
                println!("zeroized: yes");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tamper(crate::cmd_zeroize::TamperCommand::Clear) => {
            session(endpoint)?.clear_tamper()?;
            println!("tamper alarm cleared");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(CliError::Usage(
            "this command works on an embedded store only (drop --endpoint / BULWARK_ENDPOINT)"
                .into(),
        )),
    }
}

fn status(endpoint: &str, as_json: bool) -> CliResult<ExitCode> {
    let c = connect(endpoint)?;
    let s = match c.status() {
        Err(ClientError::Status {
            reason: Some(bulwark_client::Reason::NotInitialized), ..
        }) => {
            let b = c.bootstrap_status()?;
            if as_json {
                let v = json!({"endpoint": endpoint, "initialized": b.initialized,
                               "version": b.version});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("endpoint:     {endpoint}");
                println!(
                    "state:        UNINITIALIZED (no store: `bulwark --endpoint URL init ...`)"
                );
                println!("version:      {}", b.version);
            }
            return Ok(ExitCode::SUCCESS);
        }
        r => r?,
    };
    if as_json {
        let v = json!({
            "endpoint": endpoint,
            "initialized": true,
            "sealed": s.sealed,
            "unseal_progress": s.unseal_progress,
            "unseal_threshold": s.unseal_threshold,
            "unseal_shares": s.unseal_shares,
            "policy": s.policy,
            "label": s.label,
            "store_id": s.store_id,
            "generation": s.generation,
            "objects": s.objects,
            "self_tests_passed": s.self_tests_passed,
            "version": s.version,
            "dev_mode": s.dev_mode,
            "zeroized": s.zeroized,
            "tamper_alarm": s.tamper_alarm,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("endpoint:     {endpoint}");
        println!("label:        {}", bulwark_core::display::escape(&s.label));
        println!("store id:     {}", s.store_id);
        println!(
            "policy:       {} ({} of {} shares)",
            s.policy, s.unseal_threshold, s.unseal_shares
        );
        if s.zeroized {
            println!("state:        ZEROIZED (every key is destroyed)");
        } else if s.sealed {
            println!(
                "state:        SEALED (unseal progress {}/{})",
                s.unseal_progress, s.unseal_threshold
            );
        } else {
            println!("state:        unsealed");
            println!("generation:   {}", s.generation);
            println!("objects:      {}", s.objects);
        }
        if !s.tamper_alarm.is_empty() {
            println!("tamper alarm: ACTIVE ({})", bulwark_core::display::escape(&s.tamper_alarm));
        }
        println!(
            "self-tests:   {}",
            if s.self_tests_passed { "passed" } else { "FAILED (error state)" }
        );
        if s.dev_mode {
            println!("mode:         DEV MODE (not for production)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn unseal(endpoint: &str, a: &UnsealArgs) -> CliResult<ExitCode> {
    let text = read_secret(&a.share)?;
    let f = ShareFile::parse(&text).map_err(|_| {
        CliError::Usage(format!("{} is not a bulwark share file", a.share.display()))
    })?;
    let plain = if f.is_encrypted() {
        let pass = match &a.passphrase_file {
            Some(p) => {
                let raw = read_secret(p)?;
                let s = String::from_utf8(raw.to_vec())
                    .map_err(|_| CliError::Usage("passphrase file is not UTF-8".into()))?;
                Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_owned())
            }
            None => secret_from(
                "BULWARK_SHARE_PASSPHRASE",
                "BULWARK_SHARE_PASSPHRASE_FILE",
                &format!("passphrase for share {}: ", f.index),
            )?,
        };
        f.decrypt(Some(pass.as_bytes()))
            .map_err(|_| CliError::Usage("wrong passphrase for this share".into()))?
    } else {
        f
    };
    let body = Zeroizing::new(plain.to_json());
    let r = connect(endpoint)?.unseal(body.as_bytes())?;
    if r.sealed {
        println!(
            "share {} accepted: unseal progress {}/{} (still sealed)",
            plain.index, r.progress, r.threshold
        );
    } else {
        println!(
            "share {} accepted: {}/{} — the HSM is unsealed",
            plain.index, r.progress, r.threshold
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn key(endpoint: &str, k: KeyCommand) -> CliResult<ExitCode> {
    let c = session(endpoint)?;
    match k {
        KeyCommand::Generate {
            key_type,
            label,
            extractable,
            not_sensitive,
            id,
            dates,
            rotate_every,
            policy,
        } => {
            let period =
                rotate_every.as_deref().map(crate::cmd_versions::parse_period).transpose()?;
            if not_sensitive || id.is_some() {
                return Err(CliError::Usage(
                    "--not-sensitive and --id are not available with --endpoint".into(),
                ));
            }
            let d = dates.parse()?;
            let v = |x: Option<u64>| x.unwrap_or(0);
            let info = c.generate_key_with_dates(
                &key_type,
                &label,
                extractable,
                [v(d.activation), v(d.protect_stop), v(d.deactivation)],
            )?;
            let hs: Vec<u64> = info.objects.iter().map(|o| o.handle).collect();
            crate::cmd_usepolicy::apply_remote_on_generate(&c, &label, &policy)?;
            println!("generated {key_type} key {label:?} (handles {hs:?})");
            if dates.is_set() {
                let state = info.objects.first().map_or("-", |o| o.state.as_str());
                println!("state: {state}");
            }
            if let Some(p) = period {
                crate::cmd_versions::rotation_remote(&c, &label, Some(p))?;
            }
        }
        KeyCommand::List { json, scheduled: false } => {
            let keys = c.list_keys()?;
            if json {
                let v: Vec<_> = keys
                    .iter()
                    .flat_map(|k| {
                        k.objects.iter().map(move |o| json!({
                    "handle": o.handle, "label": k.label, "class": o.class, "type": o.key_type,
                    "usage": o.usage, "sensitive": o.sensitive, "extractable": o.extractable,
                    "local": o.local, "state": o.state,
                }))
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!(
                    "{:<8} {:<24} {:<11} {:<14} {:<22} USAGE",
                    "HANDLE", "LABEL", "CLASS", "TYPE", "STATE"
                );
                for k in &keys {
                    for o in &k.objects {
                        println!(
                            "{:<8} {:<24} {:<11} {:<14} {:<22} {}",
                            o.handle,
                            bulwark_core::display::escape(&k.label),
                            o.class,
                            o.key_type,
                            o.state,
                            o.usage.join(",")
                        );
                    }
                }
            }
        }
        KeyCommand::Show { label, json } => {
            let k = match c.show_key(&label) {
                Err(e) if e.code() == Some(bulwark_client::Code::NotFound) => {
                    return crate::cmd_destroy::list_scheduled_remote(&c, Some(&label), json);
                }
                r => r?,
            };
            let v: Vec<_> = k
                .objects
                .iter()
                .map(|o| {
                    json!({
                        "handle": o.handle, "class": o.class, "type": o.key_type, "usage": o.usage,
                        "sensitive": o.sensitive, "extractable": o.extractable, "local": o.local,
                        "state": o.state, "version": o.key_version,
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for o in &k.objects {
                    println!("object {} ({}, {})", o.handle, o.class, o.key_type);
                    println!("  usage        {}", o.usage.join(","));
                    println!("  sensitive    {}", o.sensitive);
                    println!("  extractable  {}", o.extractable);
                    println!("  local        {}", o.local);
                    println!("  state        {}", o.state);
                    println!("  version      {}", o.key_version);
                }
                if let Ok(r) = c.key_versions(&label) {
                    crate::cmd_versions::print_versions(&crate::cmd_versions::from_pb(&r));
                }
            }
        }
        KeyCommand::Destroy { label, cancel } => {
            return crate::cmd_destroy::destroy_remote(&c, &label, cancel);
        }
        KeyCommand::List { json, scheduled: true } => {
            return crate::cmd_destroy::list_scheduled_remote(&c, None, json);
        }
        KeyCommand::Public { label, key_version, out } => {
            let pem = c.public_key_version(&label, key_version.unwrap_or(0))?;
            match out {
                Some(p) => write_file(&p, pem.as_bytes())?,
                None => print!("{pem}"),
            }
        }
        KeyCommand::Lifecycle(l) => return crate::cmd_lifecycle::run_remote(&c, l),
        KeyCommand::Usage(u) => return crate::cmd_usepolicy::run_remote(&c, u),
        KeyCommand::Byok(b) => return crate::cmd_byok::run_remote(&c, b),
        KeyCommand::Versions(v) => return crate::cmd_versions::run_remote(&c, v),
        KeyCommand::Archive { .. } => {
            return Err(CliError::Usage(
                "key archive works on an embedded store; on a remote HSM use backup --key LABEL, \
                 then key destroy LABEL"
                    .into(),
            ));
        }
        KeyCommand::Export { .. } => {
            return Err(CliError::Usage(
                "plaintext key export is not offered by the network HSM (use key wrap)".into(),
            ))
        }
        KeyCommand::Wrap { label, wrapping_key, mechanism, out, approval } => {
            let mech = mechanism.unwrap_or_default();
            let sid = store_id(&c)?;
            let fields = [label.as_str(), wrapping_key.as_str(), mech.as_str()];
            let (approvals, not_after) =
                cmd_approval::collect(&approval, &sid, "export-key", &fields)?;
            let r = c
                .export_key(pb::ExportKeyRequest {
                    key: label.clone(),
                    wrapping_key: wrapping_key.clone(),
                    mechanism: mech.clone(),
                    approvals,
                    approval_not_after: not_after,
                })
                .map_err(|e| {
                    cmd_approval::explain(e, &approval, &sid, "export-key", &fields, not_after)
                })?;
            write_file(&out, &r.wrapped)?;
            println!(
                "{label:?} wrapped under {wrapping_key:?} ({}) to {}",
                r.mechanism,
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn new_password() -> CliResult<Zeroizing<String>> {
    if let Some(v) = std::env::var("BULWARK_NEW_PASSWORD").ok().filter(|v| !v.is_empty()) {
        return Ok(Zeroizing::new(v));
    }
    let read = |p: &str| {
        rpassword::prompt_password(p)
            .map(Zeroizing::new)
            .map_err(|e| CliError::Usage(format!("cannot read the password: {e}")))
    };
    let a = read("new user's password: ")?;
    if *a != *read("again: ")? {
        return Err(CliError::Usage("passwords differ".into()));
    }
    Ok(a)
}

fn store_id(c: &Client) -> CliResult<String> {
    Ok(c.status()?.store_id)
}

fn user(endpoint: &str, cmd: UserCommand) -> CliResult<ExitCode> {
    let c = session(endpoint)?;
    match cmd {
        UserCommand::Add { name, role, totp, cert, approval } => {
            let fp = match &cert {
                Some(p) => bulwark_client::cert_sha256_of_pem(&read(p)?)?,
                None => String::new(),
            };
            let canonical = bulwark_proto::canonical_role(&role)
                .ok_or_else(|| CliError::Usage(format!("unknown role {role:?}")))?;
            let sid = store_id(&c)?;
            let fields = [name.as_str(), canonical, if totp { "totp" } else { "" }, fp.as_str()];
            let (approvals, not_after) =
                cmd_approval::collect(&approval, &sid, "create-user", &fields)?;
            let pw = new_password()?;
            let r = c
                .create_user_request(pb::CreateUserRequest {
                    name: name.clone(),
                    role: role.clone(),
                    password: pw.to_string(),
                    totp,
                    client_cert_sha256: fp.clone(),
                    approvals,
                    approval_not_after: not_after,
                })
                .map_err(|e| {
                    cmd_approval::explain(e, &approval, &sid, "create-user", &fields, not_after)
                })?;
            println!("user {name:?} added ({role})");
            if totp {
                println!("TOTP enrolled; give this to {name} once (it is not shown again):");
                println!("  {}", r.otpauth_uri);
                println!("  secret (base32): {}", r.totp_secret_base32);
            }
        }
        UserCommand::List { json } => {
            let users = c.list_users()?;
            if json {
                let v: Vec<_> = users
                    .iter()
                    .map(|u| json!({"name": u.name, "role": u.role, "totp": u.totp, "locked": u.locked}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{:<24} {:<18} {:<5} LOCKED", "NAME", "ROLE", "TOTP");
                for u in &users {
                    println!(
                        "{:<24} {:<18} {:<5} {}",
                        bulwark_core::display::escape(&u.name),
                        u.role,
                        u.totp,
                        u.locked
                    );
                }
            }
        }
        UserCommand::Delete { name, approval } => {
            let sid = store_id(&c)?;
            let fields = [name.as_str()];
            let (approvals, not_after) =
                cmd_approval::collect(&approval, &sid, "delete-user", &fields)?;
            c.delete_user_request(pb::DeleteUserRequest {
                name: name.clone(),
                approvals,
                approval_not_after: not_after,
            })
            .map_err(|e| {
                cmd_approval::explain(e, &approval, &sid, "delete-user", &fields, not_after)
            })?;
            println!("user {name:?} deleted; its sessions are closed");
        }
        UserCommand::SetRole { name, role, approval } => {
            let canonical = bulwark_proto::canonical_role(&role)
                .ok_or_else(|| CliError::Usage(format!("unknown role {role:?}")))?;
            let sid = store_id(&c)?;
            let fields = [name.as_str(), canonical];
            let (approvals, not_after) =
                cmd_approval::collect(&approval, &sid, "set-user-role", &fields)?;
            c.set_user_role(pb::SetUserRoleRequest {
                name: name.clone(),
                role: role.clone(),
                approvals,
                approval_not_after: not_after,
            })
            .map_err(|e| {
                cmd_approval::explain(e, &approval, &sid, "set-user-role", &fields, not_after)
            })?;
            println!("user {name:?} is now {canonical}; its sessions are closed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn zeroize(endpoint: &str, a: &crate::cmd_zeroize::ZeroizeArgs) -> CliResult<ExitCode> {
    let c = session(endpoint)?;
    let sid = store_id(&c)?;
    let (approvals, not_after) = cmd_approval::collect(&a.approval, &sid, "zeroize", &[])?;
    crate::cmd_zeroize::confirm_zeroize(a.yes, &format!("the HSM at {endpoint} (store {sid})"))?;
    c.zeroize(pb::ZeroizeRequest { approvals, approval_not_after: not_after })
        .map_err(|e| cmd_approval::explain(e, &a.approval, &sid, "zeroize", &[], not_after))?;
    println!(
        "HSM at {endpoint} zeroized: every master-key wrapping, key and the audit key are destroyed"
    );
    Ok(ExitCode::SUCCESS)
}

fn audit(endpoint: &str, cmd: AuditCommand) -> CliResult<ExitCode> {
    match cmd {
        AuditCommand::Export { out, cluster: true, .. } => {
            crate::cmd_audit::export_cluster(&session(endpoint)?, &out)
        }
        AuditCommand::Export { since, out, cluster: false } => {
            use std::io::Write as _;
            // Streamed to a private file (0600, never through a symlink), one line at a time.
            let f = bulwark_core::fsutil::create_private(&out)
                .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", out.display())))?;
            let mut w = std::io::BufWriter::new(f);
            let mut records = 0u64;
            session(endpoint)?.audit_export_each(since.unwrap_or(0), |l| {
                if l.contains("\"type\":\"record\"") {
                    records += 1;
                }
                w.write_all(l.as_bytes())?;
                w.write_all(b"\n")
            })?;
            w.flush()
                .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", out.display())))?;
            println!("exported {records} records to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::PublicKey { out } => {
            let raw = session(endpoint)?.audit_public_key()?;
            let pem = bulwark_core::audit::public_key_pem(&raw);
            match out {
                Some(p) => write_file(&p, pem.as_bytes())?,
                None => print!("{pem}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { log, public_key, proof, strict } => {
            crate::cmd_audit::verify(log.as_deref(), &public_key, proof.as_deref(), strict)
        }
        AuditCommand::Prove { .. } => Err(CliError::Usage(
            "audit prove works on an embedded store; for a remote HSM export the log and verify it"
                .into(),
        )),
    }
}

fn access(endpoint: &str, a: &AccessArgs) -> CliResult<ExitCode> {
    let mut parsed: Vec<(String, Vec<String>)> = Vec::new();
    for g in &a.grants {
        let (p, ops) = g
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--grant {g:?}: expected PRINCIPAL=OPS")))?;
        parsed.push((p.to_owned(), ops.split(',').map(str::to_owned).collect()));
    }
    let ops: Vec<Vec<&str>> =
        parsed.iter().map(|(_, o)| o.iter().map(String::as_str).collect()).collect();
    let grants: Vec<(&str, &[&str])> =
        parsed.iter().zip(&ops).map(|((p, _), o)| (p.as_str(), o.as_slice())).collect();
    session(endpoint)?.set_key_access(&a.label, &grants)?;
    println!("access list of {:?}: {} grant(s)", a.label, grants.len());
    Ok(ExitCode::SUCCESS)
}
