//! `bulwark key ...`: generate, list, show, destroy, public, export.
//!
//! Labels name keys on the command line: `generate` refuses a label that is taken, and a key
//! pair's two halves share one label and one CKA_ID.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_core::attr::{AttrType, AttrValue, KeyType, ObjectClass};
use bulwark_core::crypto::KeySpec;
use bulwark_core::lifecycle::KeyState;
use bulwark_core::names::LabelledKey;
use bulwark_core::token::ObjectInfo;
use bulwark_core::{Error, Token};
use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::{CliError, CliResult, Ctx};

/// Session id used for the (token) objects the CLI makes.
const CLI_SESSION: u64 = 1;

/// Key commands.
#[derive(Subcommand, Debug)]
pub(crate) enum KeyCommand {
    /// Generate a key (or key pair) inside the HSM.
    Generate {
        /// aes-128, aes-192, aes-256, hmac-sha256, hmac-sha384, hmac-sha512, rsa-2048,
        /// rsa-3072, rsa-4096, ec-p256, ec-p384, ec-p521, ec-secp256k1, ed25519, x25519,
        /// ml-dsa-44, ml-dsa-65, ml-dsa-87, ml-kem-512, ml-kem-768, ml-kem-1024
        #[arg(long = "type", value_name = "TYPE")]
        key_type: String,
        /// Label naming the key (must be unused).
        #[arg(long)]
        label: String,
        /// Allow the key to leave the HSM wrapped under another key (CKA_EXTRACTABLE).
        #[arg(long)]
        extractable: bool,
        /// Secret keys only: also allow plaintext export (CKA_SENSITIVE false). Implies
        /// --extractable.
        #[arg(long)]
        not_sensitive: bool,
        /// CKA_ID as hex (default: 16 random bytes).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        dates: crate::cmd_lifecycle::DateArgs,
        #[command(flatten)]
        policy: crate::cmd_usepolicy::PolicyArgs,
        /// Rotate the key automatically with this period (e.g. 90d; units s, m, h, d, w).
        #[arg(long, value_name = "PERIOD")]
        rotate_every: Option<String>,
    },
    /// List keys.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// List the keys whose destruction is scheduled instead (docs/lifecycle.md).
        #[arg(long)]
        scheduled: bool,
    },
    /// Show every attribute and policy flag of a key, its versions, their states and the
    /// next rotation.
    Show {
        /// Key label.
        label: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Destroy a key (both halves of a pair, every version). When the store's destruction
    /// wait is not 0 the destruction is scheduled: the key is unusable and invisible at once,
    /// and its material is shredded when the wait ends (see `bulwark settings`).
    Destroy {
        /// Key label.
        label: String,
        /// Cancel the scheduled destruction of the key instead (before its wait ends).
        #[arg(long)]
        cancel: bool,
    },
    /// Archive a deactivated or compromised key: write it to an archive file (a selected-key
    /// backup under a backup passphrase), then remove its material from the store; its
    /// metadata stays (state archived). `bulwark restore --in FILE` brings it back. SO PIN.
    Archive {
        /// Key label.
        label: String,
        /// The archive file to write (mode 0600; refused if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Read the backup passphrase from this file (else BULWARK_BACKUP_PASSPHRASE, else a
        /// prompt).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Print the public key as SubjectPublicKeyInfo PEM.
    Public {
        /// Key label.
        label: String,
        /// This version of the key instead of the current one.
        #[arg(long = "key-version", value_name = "N")]
        key_version: Option<u64>,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Export a secret key in plaintext: refused unless the key is both non-sensitive and
    /// extractable. Private keys never leave in plaintext.
    Export {
        /// Key label.
        label: String,
        /// Write raw bytes to this file (default: hex on stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Export a key wrapped under another key (it must be extractable; the wrapping key must
    /// allow wrapping). With --endpoint: crypto officer, quorum approvals when required.
    Wrap {
        /// Label of the key to export.
        label: String,
        /// Label of the wrapping key (AES, or an RSA key pair's public half).
        #[arg(long, value_name = "LABEL")]
        wrapping_key: String,
        /// aes-kwp (default for AES), aes-kw, rsa-oaep-sha256 (default for RSA).
        #[arg(long)]
        mechanism: Option<String>,
        /// Write the wrapped key to this file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        approval: crate::cmd_approval::ApprovalArgs,
    },
    #[command(flatten)]
    Lifecycle(crate::cmd_lifecycle::LifecycleCommand),
    #[command(flatten)]
    Usage(crate::cmd_usepolicy::UsageCommand),
    #[command(flatten)]
    Byok(crate::cmd_byok::ByokCommand),
    #[command(flatten)]
    Versions(crate::cmd_versions::VersionCommand),
}

fn spec_for(name: &str) -> CliResult<KeySpec> {
    bulwark_core::names::key_spec(name).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown key type {name:?}; one of: {}",
            bulwark_core::names::KEY_TYPE_NAMES.join(", ")
        ))
    })
}

fn generate(
    t: &Token,
    type_name: &str,
    label: &str,
    extractable: bool,
    not_sensitive: bool,
    id: Option<&str>,
    dates: &crate::cmd_lifecycle::DateArgs,
) -> CliResult<Vec<u64>> {
    let spec = spec_for(type_name)?;
    if not_sensitive && spec.is_asymmetric() {
        return Err(CliError::Usage("--not-sensitive applies to secret keys only".into()));
    }
    let id = id
        .map(|h| hex::decode(h).map_err(|_| CliError::Usage("--id must be hex".into())))
        .transpose()?;
    let dates = dates.parse()?;
    let k = LabelledKey { spec, label, id, extractable, sensitive: !not_sensitive };
    Ok(bulwark_core::names::generate_labelled_with(t, &k, dates, CLI_SESSION)?)
}

/// The key objects `label` names: its current version (docs/lifecycle.md), or `NotFound`.
pub(crate) fn by_label(t: &Token, label: &str) -> CliResult<Vec<ObjectInfo>> {
    by_version(t, label, None)
}

/// The key objects of version `version` of the key labelled `label` (`None`: the current
/// version), or `NotFound`.
pub(crate) fn by_version(
    t: &Token,
    label: &str,
    version: Option<u64>,
) -> CliResult<Vec<ObjectInfo>> {
    Ok(t.resolve_key(label, version)?)
}

/// Every object labelled `label` (every version), or `NotFound`.
pub(crate) fn all_labelled(t: &Token, label: &str) -> CliResult<Vec<ObjectInfo>> {
    let v = t.find_by_label(label)?;
    if v.is_empty() {
        return Err(Error::NotFound(label.to_owned()).into());
    }
    Ok(v)
}

/// The one object of `class` labelled `label`.
pub(crate) fn one_of(objs: &[ObjectInfo], class: ObjectClass, label: &str) -> CliResult<u64> {
    let v: Vec<_> = objs.iter().filter(|o| o.attrs.class() == Some(class)).collect();
    match v.as_slice() {
        [o] => Ok(o.handle),
        [] => Err(Error::NotFound(label.to_owned()).into()),
        _ => Err(Error::Ambiguous(label.to_owned()).into()),
    }
}

pub(crate) fn attr_name(t: AttrType) -> String {
    let dbg = format!("{t:?}");
    let mut out = String::from("CKA_");
    for (i, ch) in dbg.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    // Spec spellings that do not follow the CamelCase rule.
    out.replace("PRIME1", "PRIME_1")
        .replace("PRIME2", "PRIME_2")
        .replace("EXPONENT1", "EXPONENT_1")
        .replace("EXPONENT2", "EXPONENT_2")
}

fn class_name(v: u64) -> String {
    ObjectClass::from_raw(v).map_or_else(|| format!("0x{v:x}"), |c| format!("{c:?}"))
}

fn key_type_name(v: u64) -> String {
    KeyType::from_raw(v).map_or_else(|| format!("0x{v:x}"), |k| format!("{k:?}"))
}

/// An attribute for a person: labels (any bytes) escaped for the terminal, the rest as in JSON.
pub(crate) fn attr_text(t: AttrType, v: &AttrValue) -> String {
    match (t, v) {
        (AttrType::Label | AttrType::UniqueId, AttrValue::Bytes(b)) => {
            format!("\"{}\"", bulwark_core::display::escape_bytes(b))
        }
        _ => attr_json(t, v).to_string(),
    }
}

pub(crate) fn attr_json(t: AttrType, v: &AttrValue) -> Value {
    match (t, v) {
        (_, AttrValue::Bool(b)) => json!(b),
        (AttrType::Class, AttrValue::Ulong(c)) => json!(class_name(*c)),
        (AttrType::KeyType, AttrValue::Ulong(k)) => json!(key_type_name(*k)),
        (AttrType::KeyGenMechanism, AttrValue::Ulong(m)) => json!(format!("0x{m:x}")),
        (AttrType::BulwarkState, AttrValue::Ulong(s)) => {
            json!(KeyState::from_raw(*s).map_or_else(|| format!("0x{s:x}"), |k| k.name().into()))
        }
        (
            AttrType::BulwarkActivationDate
            | AttrType::BulwarkProtectStopDate
            | AttrType::BulwarkDeactivationDate
            | AttrType::BulwarkCompromiseDate
            | AttrType::BulwarkDestroyDate
            | AttrType::BulwarkRotatedAt
            | AttrType::BulwarkDestroyScheduled
            | AttrType::BulwarkArchived,
            AttrValue::Ulong(d),
        ) => json!(crate::cmd_lifecycle::format_date(*d)),
        (_, AttrValue::Ulong(u)) => json!(u),
        (AttrType::Label | AttrType::UniqueId, AttrValue::Bytes(b)) => {
            json!(String::from_utf8_lossy(b))
        }
        (_, AttrValue::Bytes(b)) => json!(hex::encode(b)),
        (_, AttrValue::Date(None)) => Value::Null,
        (_, AttrValue::Date(Some(d))) => {
            let s = String::from_utf8_lossy(d).into_owned();
            json!(format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..]))
        }
        (_, AttrValue::MechanismList(l)) => {
            json!(l.iter().map(|m| format!("0x{m:x}")).collect::<Vec<_>>())
        }
    }
}

fn object_json(t: &Token, o: &ObjectInfo) -> Value {
    let mut m = Map::new();
    m.insert("handle".into(), json!(o.handle));
    if let Ok(spec) = t.key_spec(o.handle) {
        m.insert("type".into(), json!(spec.name()));
    }
    if let Ok((l, now)) = t.key_lifecycle(o.handle) {
        m.insert("state".into(), json!(now.name()));
        m.insert("lifecycle".into(), crate::cmd_lifecycle::lifecycle_json(&l, now));
        m.insert("version".into(), json!(bulwark_core::token::version_of(&o.attrs)));
        let next = bulwark_core::token::rotation_due_at(&o.attrs)
            .filter(|_| now == KeyState::Active)
            .map(crate::cmd_lifecycle::format_date);
        m.insert("next_rotation".into(), json!(next));
    }
    if let Ok((p, c)) = t.usage_policy(o.handle) {
        m.insert("usage_policy".into(), crate::cmd_usepolicy::policy_json(&p, &c, t.now()));
    }
    let mut attrs = Map::new();
    for (k, v) in o.attrs.iter() {
        attrs.insert(attr_name(k), attr_json(k, v));
    }
    m.insert("attributes".into(), Value::Object(attrs));
    Value::Object(m)
}

fn summary(t: &Token, o: &ObjectInfo) -> (String, String, String, String, String) {
    let class = o.attrs.class().map_or_else(|| "?".into(), |c| format!("{c:?}"));
    let ty = t.key_spec(o.handle).map_or_else(|_| "-".into(), |s| s.name());
    let flags = bulwark_core::names::usage_names(&o.attrs).join(",");
    let state = if o.attrs.contains(AttrType::BulwarkArchived) {
        "archived".into()
    } else {
        t.key_lifecycle(o.handle).map_or_else(|_| "-".into(), |(_, s)| s.name().into())
    };
    // Labels may hold any bytes: escaped for the terminal.
    (bulwark_core::display::escape(&o.attrs.label()), class, ty, state, flags)
}

pub(crate) fn run(ctx: &Ctx, cmd: KeyCommand) -> CliResult<ExitCode> {
    if let KeyCommand::Usage(u) = cmd {
        return crate::cmd_usepolicy::run(ctx, u);
    }
    if let KeyCommand::Archive { label, out, passphrase_file } = cmd {
        return crate::cmd_destroy::archive(ctx, &label, &out, passphrase_file.as_deref());
    }
    let t = ctx.user_token()?;
    match cmd {
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
            let hs =
                generate(&t, &key_type, &label, extractable, not_sensitive, id.as_deref(), &dates)?;
            crate::cmd_usepolicy::apply_on_generate(&t, &hs, &policy)?;
            println!("generated {key_type} key {label:?} (handles {hs:?})");
            if let Some(p) = period {
                let next = t.set_rotation_period(hs[0], Some(p))?;
                if let Some(n) = next {
                    println!(
                        "rotates every {}; next rotation {}",
                        crate::cmd_versions::format_period(p),
                        crate::cmd_lifecycle::format_date(n)
                    );
                }
            }
            if dates.is_set() {
                let (_, now) = t.key_lifecycle(hs[0])?;
                println!("state: {now}");
            }
        }
        KeyCommand::Lifecycle(l) => return crate::cmd_lifecycle::run(&t, l),
        KeyCommand::Usage(_) => unreachable!("handled above"),
        KeyCommand::Byok(b) => return crate::cmd_byok::run(&t, b),
        KeyCommand::Versions(v) => return crate::cmd_versions::run(&t, v),
        KeyCommand::List { json, scheduled: false } => {
            let objs = t.list()?;
            if json {
                let v: Vec<Value> = objs.iter().map(|o| object_json(&t, o)).collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!(
                    "{:<8} {:<24} {:<11} {:<14} {:<22} USAGE",
                    "HANDLE", "LABEL", "CLASS", "TYPE", "STATE"
                );
                for o in &objs {
                    let (l, c, ty, st, f) = summary(&t, o);
                    println!("{:<8} {:<24} {:<11} {:<14} {:<22} {}", o.handle, l, c, ty, st, f);
                }
            }
        }
        KeyCommand::List { json, scheduled: true } => {
            return crate::cmd_destroy::list_scheduled(&t, None, json);
        }
        KeyCommand::Show { label, json } => {
            let objs = match all_labelled(&t, &label) {
                Err(CliError::Core(Error::NotFound(_))) => {
                    return crate::cmd_destroy::list_scheduled(&t, Some(&label), json);
                }
                r => r?,
            };
            let versions = t.key_versions(&label).unwrap_or_default();
            if json {
                let v: Vec<Value> = objs.iter().map(|o| object_json(&t, o)).collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for o in &objs {
                    let (_, class, _, state, _) = summary(&t, o);
                    println!("object {} ({class}), state {state}", o.handle);
                    for (k, v) in o.attrs.iter() {
                        println!("  {:<24} {}", attr_name(k), attr_text(k, v));
                    }
                    if let Ok((p, c)) = t.usage_policy(o.handle) {
                        for l in crate::cmd_usepolicy::policy_lines(&p, &c, t.now()) {
                            println!("  usage policy: {l}");
                        }
                    }
                }
                if !versions.is_empty() {
                    crate::cmd_versions::print_versions(&versions);
                }
            }
        }
        KeyCommand::Destroy { label, cancel } => {
            return crate::cmd_destroy::destroy(&t, &label, cancel);
        }
        KeyCommand::Archive { .. } => unreachable!("handled before the user login"),
        KeyCommand::Public { label, key_version, out } => {
            let objs = by_version(&t, &label, key_version)?;
            let h = one_of(&objs, ObjectClass::PublicKey, &label)
                .or_else(|_| one_of(&objs, ObjectClass::PrivateKey, &label))?;
            let pem = t.public_key(h)?.to_pem();
            match out {
                Some(p) => std::fs::write(&p, pem.as_bytes()).map_err(|e| {
                    CliError::Usage(format!("cannot write {}: {}", p.display(), e.kind()))
                })?,
                None => print!("{pem}"),
            }
        }
        KeyCommand::Export { label, out } => {
            let objs = by_label(&t, &label)?;
            if objs.iter().any(|o| o.attrs.class() == Some(ObjectClass::PrivateKey)) {
                return Err(Error::KeyUnextractable(
                    "private keys never leave the HSM in plaintext",
                )
                .into());
            }
            let h = one_of(&objs, ObjectClass::SecretKey, &label)?;
            let v = t.export_secret(h)?;
            if let Some(p) = out {
                crate::cmd_ops::write_file(&p, v.expose_secret())?;
            } else {
                let mut s = hex::encode(v.expose_secret());
                let _ = writeln!(std::io::stdout(), "{s}");
                zeroize::Zeroize::zeroize(&mut s);
            }
        }
        KeyCommand::Wrap { label, wrapping_key, mechanism, out, approval } => {
            if approval.is_set() {
                return Err(CliError::Usage(
                    "--approval and --approval-request-out apply to a remote HSM (--endpoint)"
                        .into(),
                ));
            }
            let target = crate::cmd_ops::key_handle(&t, &label, true)?;
            let objs = by_label(&t, &wrapping_key)?;
            let wh = one_of(&objs, ObjectClass::PublicKey, &wrapping_key)
                .or_else(|_| one_of(&objs, ObjectClass::SecretKey, &wrapping_key))?;
            let (m, name) = bulwark_core::names::wrap_mechanism(
                mechanism.as_deref().unwrap_or(""),
                t.key_spec(wh)?,
            )
            .ok_or_else(|| {
                CliError::Usage(
                    "--mechanism: aes-kwp, aes-kw or rsa-oaep-sha256 (AES or RSA wrapping key)"
                        .into(),
                )
            })?;
            let wrapped = t.wrap_key(wh, &m, target)?;
            crate::cmd_ops::write_file(&out, &wrapped)?;
            println!("{label:?} wrapped under {wrapping_key:?} ({name}) to {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
