//! Bring your own key (docs/byok.md): a secret key wrapped elsewhere under one of the HSM's keys
//! (RSA-OAEP SHA-256 under an RSA key pair, AES-KWP or AES-KW under an AES key) comes in through
//! [`Token::unwrap_key`], so the gate, the store policy and the audit record are those of
//! `C_UnwrapKey`. This file only names things: types, mechanisms and the template.

use super::{SessionId, Token};
use crate::attr::{AttrType, AttrValue, KeyType, ObjectClass};
use crate::crypto::KeySpec;
use crate::error::{Error, Result};
use crate::store::Store;

/// The largest wrapped key accepted (an RSA-8192 OAEP block is 1 KiB).
pub const MAX_WRAPPED: usize = 16 * 1024;

/// What to import.
#[derive(Clone, Copy, Debug)]
pub struct WrappedImport<'a> {
    /// The wrapped key (the RSA-OAEP block, or the RFC 5649 / RFC 3394 output).
    pub wrapped: &'a [u8],
    /// The unwrapping key: an RSA private key or an AES secret key.
    pub unwrap_with: u64,
    /// `rsa-oaep` (`rsa-oaep-sha256`), `aes-kwp` or `aes-kw`.
    pub mechanism: &'a str,
    /// `aes-128|192|256`, `hmac-sha256|384|512`.
    pub key_type: &'a str,
    /// The new key's label (must be unused among the keys the caller sees).
    pub label: &'a str,
    /// CKA_EXTRACTABLE of the new key.
    pub extractable: bool,
    /// CKA_SENSITIVE of the new key.
    pub sensitive: bool,
}

/// The key type and length of an importable secret key type.
///
/// # Errors
/// `ArgumentsBad` for anything but a secret key type.
pub fn import_type(name: &str) -> Result<(KeyType, usize)> {
    match crate::names::key_spec(name) {
        Some(KeySpec::Aes { bytes }) => Ok((KeyType::Aes, bytes)),
        Some(KeySpec::GenericSecret { bytes }) => Ok((KeyType::GenericSecret, bytes)),
        _ => Err(Error::ArgumentsBad(
            "only secret keys are imported wrapped (aes-128, aes-192, aes-256, hmac-sha256, \
             hmac-sha384, hmac-sha512)",
        )),
    }
}

/// The canonical name of an import mechanism (`rsa-oaep` is RSA-OAEP with SHA-256).
///
/// # Errors
/// `ArgumentsBad` for any other name.
pub fn import_mechanism(name: &str) -> Result<&'static str> {
    match name {
        "rsa-oaep" | "rsa-oaep-sha256" => Ok("rsa-oaep-sha256"),
        "aes-kwp" => Ok("aes-kwp"),
        "aes-kw" => Ok("aes-kw"),
        _ => Err(Error::ArgumentsBad("mechanism: rsa-oaep, aes-kwp or aes-kw")),
    }
}

impl<S: Store> Token<S> {
    /// Imports a wrapped secret key as a token key labelled `r.label` (`C_UnwrapKey` with a
    /// template built from `r`: private, the given sensitivity and extractability, a random
    /// CKA_ID). Returns the new key's handle.
    ///
    /// # Errors
    /// `ArgumentsBad` for a bad type, mechanism or size; `Exists` for a label in use;
    /// `WrappedKeyInvalid` for a wrapped key that does not unwrap; every refusal of
    /// `C_UnwrapKey` (the unwrapping key's flags, state, grant and usage policy, the store
    /// policy).
    pub fn import_wrapped(&self, r: &WrappedImport<'_>, session: SessionId) -> Result<u64> {
        let (kt, bytes) = import_type(r.key_type)?;
        let mech_name = import_mechanism(r.mechanism)?;
        if r.wrapped.is_empty() || r.wrapped.len() > MAX_WRAPPED {
            return Err(Error::ArgumentsBad("a wrapped key is 1 to 16384 bytes"));
        }
        if r.label.is_empty() || r.label.len() > crate::limits::MAX_LABEL {
            return Err(Error::ArgumentsBad("key label must be 1 to 256 bytes"));
        }
        if !self.find_by_label(r.label)?.is_empty() {
            return Err(Error::Exists(r.label.to_owned()));
        }
        let (mech, _) = crate::names::wrap_mechanism(mech_name, self.key_spec(r.unwrap_with)?)
            .ok_or(Error::ArgumentsBad("mechanism: rsa-oaep, aes-kwp or aes-kw"))?;
        let mut id = [0u8; 16];
        self.provider.random(&mut id)?;
        let tmpl = vec![
            (AttrType::Class, AttrValue::Ulong(ObjectClass::SecretKey.to_raw())),
            (AttrType::KeyType, AttrValue::Ulong(kt.to_raw())),
            (AttrType::ValueLen, AttrValue::Ulong(bytes as u64)),
            (AttrType::Token, AttrValue::Bool(true)),
            (AttrType::Private, AttrValue::Bool(true)),
            (AttrType::Label, AttrValue::Bytes(r.label.as_bytes().to_vec())),
            (AttrType::Id, AttrValue::Bytes(id.to_vec())),
            (AttrType::Sensitive, AttrValue::Bool(r.sensitive)),
            (AttrType::Extractable, AttrValue::Bool(r.extractable || !r.sensitive)),
        ];
        self.unwrap_key(r.unwrap_with, &mech, r.wrapped, &tmpl, session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(import_type("aes-256").unwrap(), (KeyType::Aes, 32));
        assert_eq!(import_type("hmac-sha384").unwrap(), (KeyType::GenericSecret, 48));
        assert!(import_type("rsa-2048").is_err());
        assert_eq!(import_mechanism("rsa-oaep").unwrap(), "rsa-oaep-sha256");
        assert!(import_mechanism("rsa-pkcs").is_err());
    }
}
