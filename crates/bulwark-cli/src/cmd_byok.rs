//! `bulwark key import --wrapped`: bring your own key (docs/byok.md). A secret key wrapped
//! elsewhere under one of the HSM's keys — RSA-OAEP (SHA-256) under an RSA key pair whose
//! public half was handed out, or AES-KWP (RFC 5649) under an AES key — is unwrapped inside the
//! HSM (`C_UnwrapKey`: the unwrapping key must allow unwrap, the store policy applies, the
//! import is audited) and stored under a new label. The way out is `bulwark key wrap`.

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_core::attr::{AttrType, AttrValue, KeyType, ObjectClass};
use bulwark_core::crypto::KeySpec;
use bulwark_core::{Error, Token};
use clap::{Args, Subcommand};

use crate::{CliError, CliResult};

/// Session id used for the (token) objects the CLI makes.
const CLI_SESSION: u64 = 1;

/// The largest wrapped key accepted (an RSA-8192 OAEP block is 1 KiB).
const MAX_WRAPPED: u64 = 16 * 1024;

/// BYOK commands (flattened into `bulwark key`).
#[derive(Subcommand, Debug)]
pub(crate) enum ByokCommand {
    /// Import a secret key wrapped elsewhere (RSA-OAEP SHA-256 under one of the HSM's RSA key
    /// pairs, or AES-KWP under one of its AES keys): `--wrapped FILE --unwrap-with LABEL
    /// --mechanism rsa-oaep|aes-kwp --type TYPE --label LABEL`.
    Import(ImportArgs),
}

/// The options of `key import`.
#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    /// The wrapped key (raw bytes: the RSA-OAEP block or the RFC 5649 output).
    #[arg(long, value_name = "FILE")]
    pub(crate) wrapped: PathBuf,
    /// Label of the unwrapping key (an RSA key pair, or an AES key) inside the HSM.
    #[arg(long, value_name = "LABEL")]
    pub(crate) unwrap_with: String,
    /// rsa-oaep (SHA-256, MGF1-SHA-256, empty label), aes-kwp (RFC 5649) or aes-kw (RFC 3394).
    #[arg(long)]
    pub(crate) mechanism: String,
    /// The key's type: aes-128, aes-192, aes-256, hmac-sha256, hmac-sha384, hmac-sha512.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) key_type: String,
    /// Label of the imported key (must be unused).
    #[arg(long)]
    pub(crate) label: String,
    /// Allow the imported key to leave the HSM again wrapped (CKA_EXTRACTABLE).
    #[arg(long)]
    pub(crate) extractable: bool,
    /// Also allow plaintext export (CKA_SENSITIVE false; refused by a store whose policy wants
    /// keys to leave only under trusted keys). Implies --extractable.
    #[arg(long)]
    pub(crate) not_sensitive: bool,
    #[command(flatten)]
    pub(crate) policy: crate::cmd_usepolicy::PolicyArgs,
}

/// The key type and length the template names.
pub(crate) fn secret_type(name: &str) -> CliResult<(KeyType, usize)> {
    match bulwark_core::names::key_spec(name) {
        Some(KeySpec::Aes { bytes }) => Ok((KeyType::Aes, bytes)),
        Some(KeySpec::GenericSecret { bytes }) => Ok((KeyType::GenericSecret, bytes)),
        _ => Err(CliError::Usage(format!(
            "--type {:?}: only secret keys are imported wrapped (aes-128, aes-192, aes-256, \
             hmac-sha256, hmac-sha384, hmac-sha512)",
            bulwark_core::display::escape(name)
        ))),
    }
}

/// The canonical mechanism name (`rsa-oaep` is RSA-OAEP with SHA-256).
pub(crate) fn mechanism_name(name: &str) -> CliResult<&'static str> {
    match name {
        "rsa-oaep" | "rsa-oaep-sha256" => Ok("rsa-oaep-sha256"),
        "aes-kwp" => Ok("aes-kwp"),
        "aes-kw" => Ok("aes-kw"),
        _ => Err(CliError::Usage("--mechanism: rsa-oaep, aes-kwp or aes-kw".into())),
    }
}

/// Reads the wrapped key file (bounded).
pub(crate) fn read_wrapped(p: &std::path::Path) -> CliResult<Vec<u8>> {
    let cannot =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {}", p.display(), e.kind()));
    let len = std::fs::metadata(p).map_err(cannot)?.len();
    if len == 0 || len > MAX_WRAPPED {
        return Err(CliError::Usage(format!(
            "{}: a wrapped key is 1 to {MAX_WRAPPED} bytes",
            p.display()
        )));
    }
    std::fs::read(p).map_err(cannot)
}

/// Imports the wrapped key; returns its handle.
fn import(t: &Token, a: &ImportArgs) -> CliResult<u64> {
    let (kt, bytes) = secret_type(&a.key_type)?;
    let mech_name = mechanism_name(&a.mechanism)?;
    let wrapped = read_wrapped(&a.wrapped)?;
    if !t.find_by_label(&a.label)?.is_empty() {
        return Err(Error::Exists(a.label.clone()).into());
    }
    let objs = crate::cmd_keys::by_label(t, &a.unwrap_with)?;
    let uh = crate::cmd_keys::one_of(&objs, ObjectClass::PrivateKey, &a.unwrap_with)
        .or_else(|_| crate::cmd_keys::one_of(&objs, ObjectClass::SecretKey, &a.unwrap_with))?;
    let (mech, _) = bulwark_core::names::wrap_mechanism(mech_name, t.key_spec(uh)?)
        .ok_or_else(|| CliError::Usage("--mechanism does not fit the unwrapping key".into()))?;
    let mut id = [0u8; 16];
    t.random(&mut id)?;
    let tmpl = vec![
        (AttrType::Class, AttrValue::Ulong(ObjectClass::SecretKey.to_raw())),
        (AttrType::KeyType, AttrValue::Ulong(kt.to_raw())),
        (AttrType::ValueLen, AttrValue::Ulong(bytes as u64)),
        (AttrType::Token, AttrValue::Bool(true)),
        (AttrType::Private, AttrValue::Bool(true)),
        (AttrType::Label, AttrValue::Bytes(a.label.as_bytes().to_vec())),
        (AttrType::Id, AttrValue::Bytes(id.to_vec())),
        (AttrType::Sensitive, AttrValue::Bool(!a.not_sensitive)),
        (AttrType::Extractable, AttrValue::Bool(a.extractable || a.not_sensitive)),
    ];
    let h = t.unwrap_key(uh, &mech, &wrapped, &tmpl, CLI_SESSION)?;
    if let Err(e) = crate::cmd_usepolicy::apply_on_generate(t, &[h], &a.policy) {
        // No key without the policy asked for.
        let _ = t.destroy_object(h);
        return Err(e);
    }
    Ok(h)
}

/// Runs a BYOK command on the embedded store.
pub(crate) fn run(t: &Token, cmd: ByokCommand) -> CliResult<ExitCode> {
    match cmd {
        ByokCommand::Import(a) => {
            let h = import(t, &a)?;
            println!(
                "imported {} key {:?} (handle {h}) unwrapped by {:?} ({})",
                a.key_type,
                a.label,
                a.unwrap_with,
                mechanism_name(&a.mechanism)?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(secret_type("aes-256").unwrap(), (KeyType::Aes, 32));
        assert_eq!(secret_type("hmac-sha384").unwrap(), (KeyType::GenericSecret, 48));
        assert!(secret_type("rsa-2048").is_err());
        assert_eq!(mechanism_name("rsa-oaep").unwrap(), "rsa-oaep-sha256");
        assert!(mechanism_name("rsa-pkcs").is_err());
    }
}
