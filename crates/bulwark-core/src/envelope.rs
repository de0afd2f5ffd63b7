//! The `bulwark encrypt` envelope (docs/cli.md), one implementation for the CLI and the daemon.
//!
//! Format 2 (written): `"BWK2"` (4 bytes) || key version (u32, big-endian) || nonce (12 bytes)
//! || AES-256-GCM ciphertext || tag (16 bytes); the first 8 bytes (magic and version) are the
//! associated data, so the version named cannot be changed without the tag failing.
//!
//! Format 1 (still read): `"BWK1"` || nonce || ciphertext || tag, with the 4-byte magic as the
//! associated data. It was written before keys had versions, so it was made by version 1.

use crate::error::{Error, Result};
use crate::mechanism::Mechanism;

/// The magic of format 1 (read only).
pub const MAGIC_V1: &[u8; 4] = b"BWK1";
/// The magic of format 2.
pub const MAGIC_V2: &[u8; 4] = b"BWK2";
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

/// A parsed envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The key version that made it (format 1: 1).
    pub key_version: u64,
    /// Whether it is in format 1 (no version stored).
    pub legacy: bool,
    /// The AES-GCM mechanism (nonce and associated data) that opens it.
    pub mechanism: Mechanism,
    /// Ciphertext and tag.
    pub body: &'a [u8],
}

/// Parses an envelope.
///
/// # Errors
/// `ArgumentsBad` for anything that is not one.
pub fn parse(data: &[u8]) -> Result<Envelope<'_>> {
    let bad = || Error::ArgumentsBad("not a bulwark ciphertext (expected the BWK2 or BWK1 format)");
    let (version, legacy, head) = match data.get(..4) {
        Some(m) if m == MAGIC_V2 => {
            let v = data.get(4..8).ok_or_else(bad)?;
            let v = u32::from_be_bytes(v.try_into().map_err(|_| Error::ArgumentsBad("short"))?);
            if v == 0 {
                return Err(bad());
            }
            (u64::from(v), false, 8)
        }
        Some(m) if m == MAGIC_V1 => (1, true, 4),
        _ => return Err(bad()),
    };
    if data.len() < head + NONCE_LEN + TAG_LEN {
        return Err(bad());
    }
    let nonce = data[head..head + NONCE_LEN].to_vec();
    Ok(Envelope {
        key_version: version,
        legacy,
        mechanism: Mechanism::AesGcm { iv: nonce, aad: data[..head].to_vec(), tag_bits: 128 },
        body: &data[head + NONCE_LEN..],
    })
}

/// The header (magic, version, nonce) of a new envelope made by key version `version`, and
/// the mechanism to encrypt with; the envelope is the header followed by the ciphertext.
///
/// # Errors
/// `ArgumentsBad` for a version that does not fit 32 bits.
pub fn seal_header(version: u64, nonce: [u8; NONCE_LEN]) -> Result<(Vec<u8>, Mechanism)> {
    let v = u32::try_from(version)
        .ok()
        .filter(|v| *v != 0)
        .ok_or(Error::ArgumentsBad("key version out of range for the envelope"))?;
    let mut head = Vec::with_capacity(8 + NONCE_LEN);
    head.extend_from_slice(MAGIC_V2);
    head.extend_from_slice(&v.to_be_bytes());
    let mech = Mechanism::AesGcm { iv: nonce.to_vec(), aad: head.clone(), tag_bits: 128 };
    head.extend_from_slice(&nonce);
    Ok((head, mech))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_legacy() {
        let (head, mech) = seal_header(7, [9; 12]).unwrap();
        let mut env = head.clone();
        env.extend_from_slice(&[0xAB; 20]);
        let e = parse(&env).unwrap();
        assert_eq!((e.key_version, e.legacy, e.body.len()), (7, false, 20));
        assert_eq!(e.mechanism, mech);
        let mut old = MAGIC_V1.to_vec();
        old.extend_from_slice(&[1; 12 + 16]);
        let e = parse(&old).unwrap();
        assert_eq!((e.key_version, e.legacy), (1, true));
        assert!(matches!(e.mechanism, Mechanism::AesGcm { ref aad, .. } if aad == MAGIC_V1));
        for bad in [&b"BWK3xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"[..], b"BWK2", b"", &env[..20]] {
            assert!(parse(bad).is_err());
        }
        let mut zero = env.clone();
        zero[4..8].copy_from_slice(&[0; 4]);
        assert!(parse(&zero).is_err());
        assert!(seal_header(0, [0; 12]).is_err());
        assert!(seal_header(u64::from(u32::MAX) + 1, [0; 12]).is_err());
    }
}
