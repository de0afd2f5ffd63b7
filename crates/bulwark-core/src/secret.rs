//! Secret containers: key bytes, PINs, the master key.
//!
//! Every secret lives in a type that zeroizes on drop, is not `Clone`, has no `PartialEq`, and
//! whose `Debug` prints only a kind and a length. The one accessor is `expose_secret`, so every
//! use can be found with `grep`. Comparisons go through [`SecretBytes::ct_eq`] (constant time).

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Heap bytes that are wiped on drop. Not `Clone`; `Debug` shows the length only.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are wiped when this value drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret. The caller remains responsible for its own copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// A secret of `len` zero bytes, to be filled in place.
    pub fn zeroed(len: usize) -> Self {
        Self(Zeroizing::new(vec![0u8; len]))
    }

    /// The secret bytes. Every call site is a place where a secret is handled.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Mutable access, for filling a buffer in place.
    pub fn expose_secret_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.len() == other.len() && bool::from(self.0.as_slice().ct_eq(other))
    }

    /// An explicit, visibly named copy (secrets are not `Clone`).
    #[must_use]
    pub fn duplicate(&self) -> Self {
        Self::from_slice(&self.0)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

/// A PIN or password. Wiped on drop, never printed.
pub struct Pin(SecretBytes);

impl Pin {
    /// Wraps the PIN bytes. Trailing newlines (from files or prompts) are not stripped here.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(SecretBytes::new(bytes))
    }

    /// From a string, consuming and wiping it.
    pub fn from_string(mut s: String) -> Self {
        let p = Self(SecretBytes::from_slice(s.as_bytes()));
        s.zeroize();
        p
    }

    /// The PIN bytes.
    pub fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin([REDACTED])")
    }
}

/// A 256-bit AES key held in memory (the master key, and keys derived from it).
pub struct Key256(Zeroizing<[u8; 32]>);

impl Key256 {
    /// Wraps 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// From a slice that must be exactly 32 bytes.
    pub fn try_from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self::new(arr))
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key256([REDACTED; 32 bytes])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_bytes() {
        let raw: Vec<u8> = (0xA0..0xC0).collect();
        let hex = hex::encode(&raw);
        let s = SecretBytes::from_slice(&raw);
        let p = Pin::new(b"hunter2-pin".to_vec());
        let k = Key256::try_from_slice(&raw).unwrap();
        for out in [format!("{s:?}"), format!("{p:?}"), format!("{k:?}"), format!("{s:#?}")] {
            assert!(!out.contains(&hex), "{out}");
            assert!(!out.contains("hunter2"), "{out}");
            assert!(!out.contains("160"), "decimal byte leaked: {out}");
            assert!(out.contains("REDACTED"));
        }
    }

    #[test]
    fn ct_eq_works() {
        let s = SecretBytes::from_slice(b"abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
    }
}
