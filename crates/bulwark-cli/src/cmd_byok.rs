//! `bulwark key import --wrapped`: bring your own key (docs/byok.md). A secret key wrapped
//! elsewhere under one of the HSM's keys — RSA-OAEP (SHA-256) under an RSA key pair whose
//! public half was handed out, or AES-KWP (RFC 5649) under an AES key — is unwrapped inside the
//! HSM (`C_UnwrapKey`: the unwrapping key must allow unwrap, the store policy applies, the
//! import is audited) and stored under a new label. The way out is `bulwark key wrap`.

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_core::attr::ObjectClass;
use bulwark_core::token::{import_mechanism, import_type, WrappedImport, MAX_WRAPPED};
use bulwark_core::Token;
use clap::{Args, Subcommand};

use crate::{CliError, CliResult};

/// Session id used for the (token) objects the CLI makes.
const CLI_SESSION: u64 = 1;

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

/// Reads the wrapped key file (bounded).
pub(crate) fn read_wrapped(p: &std::path::Path) -> CliResult<Vec<u8>> {
    let cannot =
        |e: std::io::Error| CliError::Usage(format!("cannot read {}: {}", p.display(), e.kind()));
    let len = std::fs::metadata(p).map_err(cannot)?.len();
    if len == 0 || len > MAX_WRAPPED as u64 {
        return Err(CliError::Usage(format!(
            "{}: a wrapped key is 1 to {MAX_WRAPPED} bytes",
            p.display()
        )));
    }
    std::fs::read(p).map_err(cannot)
}

/// Imports the wrapped key; returns its handle.
fn import(t: &Token, a: &ImportArgs) -> CliResult<u64> {
    import_type(&a.key_type)?;
    import_mechanism(&a.mechanism)?;
    let wrapped = read_wrapped(&a.wrapped)?;
    let objs = crate::cmd_keys::by_label(t, &a.unwrap_with)?;
    let uh = crate::cmd_keys::one_of(&objs, ObjectClass::PrivateKey, &a.unwrap_with)
        .or_else(|_| crate::cmd_keys::one_of(&objs, ObjectClass::SecretKey, &a.unwrap_with))?;
    let r = WrappedImport {
        wrapped: &wrapped,
        unwrap_with: uh,
        mechanism: &a.mechanism,
        key_type: &a.key_type,
        label: &a.label,
        extractable: a.extractable,
        sensitive: !a.not_sensitive,
    };
    let h = t.import_wrapped(&r, CLI_SESSION)?;
    if let Err(e) = crate::cmd_usepolicy::apply_on_generate(t, &[h], &a.policy) {
        // No key without the policy asked for.
        let _ = t.destroy_object(h);
        return Err(e);
    }
    Ok(h)
}

/// Imports through `bulwarkd` (`ImportWrappedKey`).
pub(crate) fn run_remote(c: &bulwark_client::Client, cmd: ByokCommand) -> CliResult<ExitCode> {
    let ByokCommand::Import(a) = cmd;
    import_type(&a.key_type)?;
    let mech = import_mechanism(&a.mechanism)?;
    let wrapped = read_wrapped(&a.wrapped)?;
    let policy = if a.policy.is_set() {
        Some(crate::cmd_usepolicy::remote_policy_of(&a.policy)?)
    } else {
        None
    };
    c.import_wrapped_key(bulwark_client::v1::ImportWrappedKeyRequest {
        label: a.label.clone(),
        unwrap_with: a.unwrap_with.clone(),
        mechanism: mech.to_owned(),
        key_type: a.key_type.clone(),
        wrapped,
        extractable: a.extractable,
        not_sensitive: a.not_sensitive,
        policy,
    })?;
    println!("imported {} key {:?} unwrapped by {:?} ({mech})", a.key_type, a.label, a.unwrap_with);
    Ok(ExitCode::SUCCESS)
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
                import_mechanism(&a.mechanism)?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
