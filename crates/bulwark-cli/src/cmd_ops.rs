//! `bulwark sign|verify|encrypt|decrypt|random|selftest|status`.
//!
//! Signature defaults are chosen so that stock OpenSSL verifies them: RSA → PKCS#1 v1.5 with
//! SHA-256; EC → DER ECDSA with SHA-256/384/512 by curve (P-256 and secp256k1: SHA-256, P-384:
//! SHA-384, P-521: SHA-512); Ed25519 → pure Ed25519; ML-DSA → pure ML-DSA; HMAC keys →
//! HMAC-SHA-256/384/512 by key size.
//!
//! `encrypt` output format (format 2, `bulwark_core::envelope`, documented in docs/cli.md):
//! `"BWK2"` || key version (u32 BE) || nonce (12 bytes) || AES-GCM ciphertext || tag (16
//! bytes), where the 8-byte header is the associated data; `decrypt` reads it and format 1
//! (`"BWK1"`, no version) and picks the key version the envelope names.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_core::attr::ObjectClass;
use bulwark_core::crypto::{self, KeySpec, Provider};
use bulwark_core::mechanism::Mechanism;
use bulwark_core::{Error, Token};
use clap::Args;
use serde_json::json;

use crate::cmd_keys::one_of;
use crate::{CliError, CliResult, Ctx};

const NONCE_LEN: usize = bulwark_core::envelope::NONCE_LEN;

/// `bulwark sign` arguments.
#[derive(Args, Debug)]
pub(crate) struct SignArgs {
    /// Key label.
    #[arg(long)]
    pub(crate) key: String,
    /// Input file.
    #[arg(long = "in", value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Signature output file.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// rsa-pkcs1-sha256|384|512, rsa-pss-sha256|384|512, ecdsa-sha256|384|512, ed25519,
    /// ml-dsa, hmac-sha256|384|512 (default: by key type, see `bulwark sign --help`).
    #[arg(long)]
    pub(crate) mechanism: Option<String>,
    /// Use this version of the key instead of the current one.
    #[arg(long = "key-version", value_name = "N")]
    pub(crate) key_version: Option<u64>,
}

/// `bulwark verify` arguments.
#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// Key label (not needed with --bundle).
    #[arg(long, required_unless_present = "bundle", default_value = "")]
    pub(crate) key: String,
    /// Signed file.
    #[arg(long = "in", value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Signature file.
    #[arg(long, value_name = "FILE")]
    pub(crate) sig: PathBuf,
    /// As for `sign`.
    #[arg(long)]
    pub(crate) mechanism: Option<String>,
    /// Use this version of the key (default: the current one; with --bundle, every version
    /// is tried unless --key-version or --at names one).
    #[arg(long = "key-version", value_name = "N")]
    pub(crate) key_version: Option<u64>,
    /// Verify offline with a public-key history bundle (`bulwark key history --out FILE`)
    /// instead of the HSM; --key is then ignored.
    #[arg(long, value_name = "FILE")]
    pub(crate) bundle: Option<PathBuf>,
    /// With --bundle: the time the signature was made (RFC 3339); the version whose
    /// signing window covers it verifies.
    #[arg(long, value_name = "RFC3339", requires = "bundle")]
    pub(crate) at: Option<String>,
}

/// `bulwark encrypt|decrypt` arguments.
#[derive(Args, Debug)]
pub(crate) struct CryptArgs {
    /// AES key label.
    #[arg(long)]
    pub(crate) key: String,
    /// Input file.
    #[arg(long = "in", value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Output file.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// encrypt: use this version of the key instead of the current one. decrypt: only for
    /// format-1 (BWK1) files, which do not name their version (format 2 names it).
    #[arg(long = "key-version", value_name = "N")]
    pub(crate) key_version: Option<u64>,
}

pub(crate) fn read(p: &Path) -> CliResult<Vec<u8>> {
    std::fs::read(p)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {}", p.display(), e.kind())))
}

/// Writes an output (a signature, a plaintext, random bytes, a wrapped key): created 0600,
/// never through a symbolic link (`fsutil::write_private`).
pub(crate) fn write_file(p: &Path, data: &[u8]) -> CliResult<()> {
    bulwark_core::fsutil::write_private(p, data)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", p.display())))
}

fn default_mechanism(spec: KeySpec) -> CliResult<Mechanism> {
    bulwark_core::names::default_signature(spec)
        .ok_or_else(|| CliError::Usage(format!("a {} key cannot sign", spec.name())))
}

fn named_mechanism(name: &str) -> CliResult<Mechanism> {
    bulwark_core::names::signature_mechanism(name)
        .ok_or_else(|| CliError::Usage(format!("unknown mechanism {name:?}")))
}

/// The key handle for signing (private or secret key) or verifying (public or secret key).
pub(crate) fn key_handle(t: &Token, label: &str, signing: bool) -> CliResult<u64> {
    key_handle_v(t, label, None, signing)
}

/// [`key_handle`] of version `version` (`None`: the current one).
pub(crate) fn key_handle_v(
    t: &Token,
    label: &str,
    version: Option<u64>,
    signing: bool,
) -> CliResult<u64> {
    let objs = crate::cmd_keys::by_version(t, label, version)?;
    let class = if signing { ObjectClass::PrivateKey } else { ObjectClass::PublicKey };
    one_of(&objs, class, label).or_else(|_| one_of(&objs, ObjectClass::SecretKey, label))
}

pub(crate) fn mechanism_for(
    t: &Token,
    h: u64,
    name: Option<&str>,
) -> CliResult<(Mechanism, KeySpec)> {
    let spec = t.key_spec(h)?;
    let m = match name {
        Some(n) => named_mechanism(n)?,
        None => default_mechanism(spec)?,
    };
    Ok((m, spec))
}

fn is_ecdsa(m: &Mechanism) -> bool {
    matches!(
        m,
        Mechanism::Ecdsa | Mechanism::EcdsaSha256 | Mechanism::EcdsaSha384 | Mechanism::EcdsaSha512
    )
}

pub(crate) fn sign(ctx: &Ctx, a: &SignArgs) -> CliResult<ExitCode> {
    let t = ctx.user_token()?;
    let h = key_handle_v(&t, &a.key, a.key_version, true)?;
    let (mech, spec) = mechanism_for(&t, h, a.mechanism.as_deref())?;
    let data = read(&a.input)?;
    let mut sig = t.sign(h, &mech, &data)?;
    if let (KeySpec::Ec(curve), true) = (spec, is_ecdsa(&mech)) {
        // PKCS#11 ECDSA output is r || s; OpenSSL and X.509 want DER.
        sig = crypto::ecdsa_raw_to_der(curve, &sig)?;
    }
    write_file(&a.out, &sig)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify(ctx: &Ctx, a: &VerifyArgs) -> CliResult<ExitCode> {
    if let Some(b) = &a.bundle {
        return crate::cmd_versions::verify_bundle(a, b);
    }
    let t = ctx.user_token()?;
    let h = key_handle_v(&t, &a.key, a.key_version, false)?;
    let (mech, spec) = mechanism_for(&t, h, a.mechanism.as_deref())?;
    let data = read(&a.input)?;
    let mut sig = read(&a.sig)?;
    if let (KeySpec::Ec(curve), true) = (spec, is_ecdsa(&mech)) {
        sig = if let Ok(s) = crypto::ecdsa_der_to_raw(curve, &sig) {
            s
        } else {
            println!("signature INVALID (not a DER ECDSA signature)");
            return Ok(ExitCode::from(1));
        };
    }
    let outcome = t.verify(h, &mech, &data, &sig);
    if matches!(outcome, Ok(()) | Err(Error::SignatureInvalid | Error::SignatureLenRange)) {
        crate::cmd_lifecycle::note_key(&t, h, &a.key);
    }
    match outcome {
        Ok(()) => {
            println!("signature OK");
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::SignatureInvalid | Error::SignatureLenRange) => {
            println!("signature INVALID");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn aes_key(t: &Token, label: &str) -> CliResult<u64> {
    aes_key_v(t, label, None)
}

/// [`aes_key`] of version `version` (`None`: the current one).
pub(crate) fn aes_key_v(t: &Token, label: &str, version: Option<u64>) -> CliResult<u64> {
    let objs = crate::cmd_keys::by_version(t, label, version)?;
    let h = one_of(&objs, ObjectClass::SecretKey, label)?;
    match t.key_spec(h)? {
        KeySpec::Aes { .. } => Ok(h),
        other => {
            Err(CliError::Usage(format!("{label:?} is a {} key, not an AES key", other.name())))
        }
    }
}

pub(crate) fn encrypt(ctx: &Ctx, a: &CryptArgs) -> CliResult<ExitCode> {
    let t = ctx.user_token()?;
    let h = aes_key_v(&t, &a.key, a.key_version)?;
    let version = bulwark_core::token::version_of(&t.object_info(h)?.attrs);
    let data = read(&a.input)?;
    let mut nonce = [0u8; NONCE_LEN];
    t.random(&mut nonce)?;
    let (mut out, mech) = bulwark_core::envelope::seal_header(version, nonce)?;
    let ct = t.encrypt(h, &mech, &data)?;
    out.extend_from_slice(&ct);
    write_file(&a.out, &out)?;
    Ok(ExitCode::SUCCESS)
}

/// The key version that opens envelope `e`: the one it names; `--key-version` only for a
/// format-1 envelope, which names none.
pub(crate) fn envelope_version(
    e: &bulwark_core::envelope::Envelope<'_>,
    flag: Option<u64>,
    input: &Path,
) -> CliResult<u64> {
    match flag {
        Some(v) if e.legacy => Ok(v),
        Some(v) if v != e.key_version => Err(CliError::Usage(format!(
            "{} was made by key version {}, not {v}",
            input.display(),
            e.key_version
        ))),
        _ => Ok(e.key_version),
    }
}

pub(crate) fn decrypt(ctx: &Ctx, a: &CryptArgs) -> CliResult<ExitCode> {
    let data = read(&a.input)?;
    let e = bulwark_core::envelope::parse(&data).map_err(|_| {
        CliError::Usage(format!(
            "{} is not a bulwark ciphertext (expected the BWK2 or BWK1 format)",
            a.input.display()
        ))
    })?;
    let version = envelope_version(&e, a.key_version, &a.input)?;
    let t = ctx.user_token()?;
    let h = aes_key_v(&t, &a.key, Some(version))?;
    let pt = t.decrypt(h, &e.mechanism, e.body)?;
    crate::cmd_lifecycle::note_key(&t, h, &a.key);
    write_file(&a.out, pt.expose_secret())?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn random(ctx: &Ctx, n: usize, as_hex: bool, out: Option<&Path>) -> CliResult<ExitCode> {
    if bulwark_core::limits::check_random(n).is_err() {
        return Err(CliError::Usage("--bytes must be between 1 and 1048576".into()));
    }
    // The RNG needs no login; a store is optional.
    let mut buf = vec![0u8; n];
    match ctx.store.as_ref() {
        Some(_) => ctx.open_token()?.random(&mut buf)?,
        None => Provider::get()?.random(&mut buf)?,
    }
    if let Some(p) = out {
        write_file(p, &buf)?;
    } else if as_hex {
        println!("{}", hex::encode(&buf));
    } else {
        use std::io::Write;
        std::io::stdout()
            .write_all(&buf)
            .map_err(|e| CliError::Usage(format!("cannot write: {}", e.kind())))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn selftest() -> CliResult<ExitCode> {
    let results = bulwark_core::selftest::run_all();
    let mut failed = 0;
    for r in &results {
        println!(
            "{:<36} {:>4}  {:>8} us",
            r.name,
            if r.passed { "PASS" } else { "FAIL" },
            r.micros
        );
        if !r.passed {
            failed += 1;
        }
    }
    println!("{} passed, {} failed", results.len() - failed, failed);
    if failed > 0 {
        return Err(CliError::Usage(format!(
            "{failed} self-test(s) failed: the module is in the error state"
        )));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn status(ctx: &Ctx, as_json: bool) -> CliResult<ExitCode> {
    let t = ctx.open_token()?;
    let s = t.status()?;
    let self_tests = Provider::get().is_ok_and(|p| p.check().is_ok());
    let key_use = t.security_policy().audit_key_use;
    let window = t.audit_log().map(bulwark_core::audit::AuditLog::window);
    if as_json {
        let v = json!({
            "audit_key_use": key_use.as_str(),
            "audit_window_ms": window.map(|w| w.max_delay.as_millis()),
            "audit_window_records": window.map(|w| w.max_records),
            "store": t.path().display().to_string(),
            "label": s.label,
            "policy": s.policy,
            "store_id": s.store_id,
            "generation": s.generation,
            "objects": s.objects,
            "user_pin_initialized": s.user_pin_initialized,
            "user_pin_failures": s.user_pin_failures,
            "user_pin_locked": s.user_pin_failures >= bulwark_core::token::MAX_PIN_FAILURES,
            "so_pin_failures": s.so_pin_failures,
            "zeroized": s.zeroized,
            "self_tests_passed": self_tests,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("store:        {}", t.path().display());
        println!("label:        {}", bulwark_core::display::escape(&s.label));
        println!("store id:     {}", s.store_id);
        println!("policy:       {}", s.policy);
        println!("generation:   {}", s.generation);
        println!("objects:      {}", s.objects);
        println!(
            "user PIN:     {}{}",
            if s.user_pin_initialized { "set" } else { "not set" },
            if s.user_pin_failures >= bulwark_core::token::MAX_PIN_FAILURES {
                " (LOCKED)"
            } else {
                ""
            }
        );
        println!("self-tests:   {}", if self_tests { "passed" } else { "FAILED (error state)" });
        println!("zeroized:     {}", if s.zeroized { "yes" } else { "no" });
        match (key_use, window) {
            (bulwark_core::audit::AuditKeyUse::Bounded, Some(w)) => println!(
                "key-use audit: bounded (every use chained at once, durable within {} ms or {} records)",
                w.max_delay.as_millis(),
                w.max_records
            ),
            (k, _) => println!("key-use audit: {}", k.as_str()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
