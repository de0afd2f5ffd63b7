//! Public-key history of a rotated signing key: every version's public key with the window in
//! which it signed, exportable as a bundle (JSON, documented in docs/lifecycle.md) so that a
//! signature made by any version verifies offline, long after the version was rotated out.
//!
//! A version's window runs from its activation (or, for a key made without dates, from when it
//! became current; open when neither is known) to the moment it stopped protecting: its
//! deactivation or protect-stop date, or its compromise date, whichever came first (open while
//! it is current). Only public keys are in a bundle; it is not secret, but it is not signed
//! either: carry it the way you carry a CA certificate.

use serde::{Deserialize, Serialize};

use crate::crypto::{self, KeySpec, Provider, PublicKey};
use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::store::Store;
use crate::token::Token;

/// The `format` value of a bundle.
pub const BUNDLE_FORMAT: &str = "bulwark-key-history";
/// The bundle format version this build writes and reads.
pub const BUNDLE_VERSION: u32 = 1;

/// A public-key history bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHistory {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Always [`BUNDLE_VERSION`].
    pub format_version: u32,
    /// The key's label.
    pub label: String,
    /// The family id (hex; empty for a key never rotated).
    pub family: String,
    /// The key type name (`ec-p256`, `rsa-3072`...).
    pub key_type: String,
    /// Every version, oldest first.
    pub versions: Vec<HistoryVersion>,
}

/// One version in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryVersion {
    /// The version number.
    pub version: u64,
    /// Its state when the bundle was made (`active`, `deactivated`, `compromised`...).
    pub state: String,
    /// Start of its signing window, Unix seconds (`null`: from the beginning).
    pub valid_from: Option<u64>,
    /// End of its signing window, Unix seconds, exclusive (`null`: still signing).
    pub valid_until: Option<u64>,
    /// Its public key, SubjectPublicKeyInfo PEM.
    pub spki_pem: String,
}

impl HistoryVersion {
    /// Whether the window covers time `at`.
    pub fn covers(&self, at: u64) -> bool {
        self.valid_from.is_none_or(|f| f <= at) && self.valid_until.is_none_or(|u| at < u)
    }

    /// The public key.
    ///
    /// # Errors
    /// `KeyInvalid` for a PEM that is not a public key.
    pub fn public_key(&self) -> Result<PublicKey> {
        use base64::Engine;
        let body: String = self
            .spki_pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| Error::KeyInvalid)?;
        PublicKey::from_spki_der(&der)
    }
}

impl KeyHistory {
    /// Parses a bundle.
    ///
    /// # Errors
    /// `ArgumentsBad` for anything that is not a bundle of a format this build reads.
    pub fn from_json(s: &str) -> Result<Self> {
        let h: KeyHistory =
            serde_json::from_str(s).map_err(|_| Error::ArgumentsBad("not a key history bundle"))?;
        if h.format != BUNDLE_FORMAT || h.format_version != BUNDLE_VERSION {
            return Err(Error::ArgumentsBad("not a key history bundle of format version 1"));
        }
        Ok(h)
    }

    /// The bundle as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Verifies `sig` over `data` offline with the version named (`version`), else the
    /// versions whose window covers `at`, else every version, newest first. `mech`: the
    /// signature mechanism (default: the key type's, as `bulwark sign` uses); ECDSA
    /// signatures are DER, as `bulwark sign` writes them. Returns the version that verified.
    ///
    /// # Errors
    /// `NotFound` when no version is named or covers `at`; `SignatureInvalid` when none
    /// verifies.
    pub fn verify(
        &self,
        version: Option<u64>,
        at: Option<u64>,
        mech: Option<&Mechanism>,
        data: &[u8],
        sig: &[u8],
    ) -> Result<u64> {
        let p = Provider::get()?;
        let mut candidates: Vec<&HistoryVersion> = self
            .versions
            .iter()
            .filter(|v| version.is_none_or(|n| v.version == n))
            .filter(|v| at.is_none_or(|t| v.covers(t)))
            .collect();
        candidates.sort_by_key(|v| std::cmp::Reverse(v.version));
        if candidates.is_empty() {
            return Err(Error::NotFound(match (version, at) {
                (Some(n), _) => format!("{} (version {n})", self.label),
                _ => format!("{} (no version covers that time)", self.label),
            }));
        }
        for v in candidates {
            let pk = v.public_key()?;
            let spec = pk.spec();
            let m = match mech {
                Some(m) => m.clone(),
                None => crate::names::default_signature(spec)
                    .ok_or(Error::KeyFunctionNotPermitted("this key type cannot sign"))?,
            };
            let raw = match (spec, &m) {
                (
                    KeySpec::Ec(curve),
                    Mechanism::Ecdsa
                    | Mechanism::EcdsaSha256
                    | Mechanism::EcdsaSha384
                    | Mechanism::EcdsaSha512,
                ) => match crypto::ecdsa_der_to_raw(curve, sig) {
                    Ok(r) => r,
                    Err(_) => continue,
                },
                _ => sig.to_vec(),
            };
            if p.load_public(&pk)?.verify(p, &m, data, &raw).is_ok() {
                return Ok(v.version);
            }
        }
        Err(Error::SignatureInvalid)
    }
}

impl<S: Store> Token<S> {
    /// The public-key history of the key pair labelled `label` (every version of its family).
    ///
    /// # Errors
    /// `NotFound` for an unknown label; `Ambiguous` when several key families share it;
    /// `KeyTypeInconsistent` for a secret key (it has no public key).
    pub fn public_key_history(&self, label: &str) -> Result<KeyHistory> {
        let versions = self.key_versions(label)?;
        let families: std::collections::BTreeSet<&str> =
            versions.iter().map(|v| v.family.as_str()).collect();
        if families.len() > 1 {
            return Err(Error::Ambiguous(label.to_owned()));
        }
        let mut out = Vec::new();
        let mut key_type = String::new();
        for v in &versions {
            let h = *v.handles.first().ok_or(Error::NotFound(label.to_owned()))?;
            let pk = self.public_key(h)?;
            key_type = pk.spec().name();
            let l = &v.lifecycle;
            let until = [l.stop(), l.compromise].into_iter().flatten().min();
            out.push(HistoryVersion {
                version: v.version,
                state: v.state.name().to_owned(),
                valid_from: l.activation.or(v.rotated_at),
                valid_until: until,
                spki_pem: pk.to_pem(),
            });
        }
        Ok(KeyHistory {
            format: BUNDLE_FORMAT.to_owned(),
            format_version: BUNDLE_VERSION,
            label: label.to_owned(),
            family: versions.first().map(|v| v.family.clone()).unwrap_or_default(),
            key_type,
            versions: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover() {
        let v = HistoryVersion {
            version: 1,
            state: "deactivated".into(),
            valid_from: Some(10),
            valid_until: Some(20),
            spki_pem: String::new(),
        };
        assert!(!v.covers(9));
        assert!(v.covers(10));
        assert!(v.covers(19));
        assert!(!v.covers(20));
        let open = HistoryVersion { valid_from: None, valid_until: None, ..v };
        assert!(open.covers(0) && open.covers(u64::MAX));
    }

    #[test]
    fn bundles_are_checked() {
        assert!(KeyHistory::from_json("{}").is_err());
        let h = KeyHistory {
            format: BUNDLE_FORMAT.into(),
            format_version: 2,
            label: "x".into(),
            family: String::new(),
            key_type: "ec-p256".into(),
            versions: vec![],
        };
        assert!(KeyHistory::from_json(&h.to_json()).is_err(), "unknown format version");
        let ok = KeyHistory { format_version: 1, ..h };
        assert_eq!(KeyHistory::from_json(&ok.to_json()).unwrap(), ok);
    }
}
