//! The store's security policy: fixed at init, stored authenticated under the master key, and
//! checked at every unlock.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::state::kind;
use super::Token;
use crate::audit;
use crate::error::{Error, Result};
use crate::hierarchy::{IntegrityKeys, KdfParams};
use crate::store::Store;

/// What the token does when it detects tampering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TamperResponse {
    /// Record it, then refuse all service (except SO login, audit export and `tamper clear`)
    /// until the security officer clears the alarm.
    Alarm,
    /// Record it, then zeroize the store.
    Zeroize,
}

/// The store's security policy, fixed at init (stored in the store's metadata, authenticated
/// under the master key and checked at every login).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::struct_excessive_bools)] // independent switches of a stored policy, not a state
pub struct SecurityPolicy {
    /// Response to tampering.
    pub tamper_response: TamperResponse,
    /// Consecutive SO PIN failures that count as tampering (0: never).
    pub so_failure_limit: u32,
    /// A file whose appearance is an external tamper signal (an enclosure switch stand-in).
    pub tamper_file: Option<PathBuf>,
    /// Treat a tracer (debugger) attached to a process using the store as tampering.
    pub tracer_is_tamper: bool,
    /// Sign an audit checkpoint after this many records (0: never by count).
    pub checkpoint_every_records: u64,
    /// Sign an audit checkpoint when this many seconds passed since the last (0: never).
    pub checkpoint_every_secs: u64,
    /// How successful key uses (sign, verify, encrypt, decrypt, (de)capsulate and their
    /// `C_*Init`) are recorded: `durable` (before the result returns), `bounded` (chained before
    /// the result, durable within the audit window; the default) or `off` (only refusals).
    /// Administration, key management and every refusal are always recorded durably. Reads
    /// the boolean of older policies (`true` → durable, `false` → off); a policy without the
    /// field predates it and meant durable.
    #[serde(default = "audit_key_use_default")]
    pub audit_key_use: audit::AuditKeyUse,
    /// Keys leave the token only wrapped under a CKA_TRUSTED key (which only the security
    /// officer can mark), and unwrapped keys are always sensitive: a caller can then never
    /// wrap a sensitive key under a key it knows and unwrap it in the clear. On by default for
    /// daemon stores; embedded stores keep standard PKCS#11 behaviour for drop-in use.
    #[serde(default)]
    pub wrap_requires_trusted: bool,
    /// AES-GCM encryption only with IVs the token generates (`CKG_GENERATE_RANDOM` through the
    /// PKCS#11 3.0 message API, `Mechanism::AesGcmGenerated`): a caller can then never reuse a
    /// nonce. Off by default (standard PKCS#11 callers choose their IVs).
    #[serde(default)]
    pub require_token_iv: bool,
}

fn audit_key_use_default() -> audit::AuditKeyUse {
    audit::AuditKeyUse::Durable
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        Self {
            tamper_response: TamperResponse::Alarm,
            so_failure_limit: 5,
            tamper_file: None,
            tracer_is_tamper: false,
            checkpoint_every_records: 1000,
            checkpoint_every_secs: 60,
            audit_key_use: audit::AuditKeyUse::Bounded,
            wrap_requires_trusted: false,
            require_token_iv: false,
        }
    }
}

impl SecurityPolicy {
    /// The defaults of a network HSM's store: as [`SecurityPolicy::default`], but keys leave
    /// only wrapped under trusted keys.
    pub fn for_daemon() -> Self {
        Self { wrap_requires_trusted: true, ..Self::default() }
    }
}

/// Options for creating a store.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    /// Argon2id cost of the keyslots.
    pub kdf: KdfParams,
    /// Security policy.
    pub policy: SecurityPolicy,
}

/// The policy as stored, not yet authenticated (before the store is unlocked in this process):
/// used only until the first unlock, which replaces it with the authenticated one or fails.
pub(super) fn policy_of<S: Store>(store: &S) -> SecurityPolicy {
    store
        .record(kind::SETTING, b"policy")
        .ok()
        .flatten()
        .and_then(|r| serde_json::from_slice(&r.value).ok())
        .unwrap_or_default()
}

impl<S: Store> Token<S> {
    /// The security policy of this store.
    pub fn security_policy(&self) -> SecurityPolicy {
        self.guard.policy.clone()
    }

    /// The security policy, authenticated (a missing or forged policy is an integrity
    /// failure, never a default).
    pub(super) fn policy_verified(&self, ik: &IntegrityKeys) -> Result<SecurityPolicy> {
        let pj = self
            .verified_setting(ik, "policy")?
            .ok_or(Error::Integrity("security policy missing"))?;
        serde_json::from_slice(&pj).map_err(|_| Error::Integrity("security policy malformed"))
    }
}
