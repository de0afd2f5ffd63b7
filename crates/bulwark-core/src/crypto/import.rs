//! Import of plaintext private keys given as PKCS#11 components (`C_CreateObject` with
//! CKA_MODULUS/CKA_PRIVATE_EXPONENT/..., or CKA_EC_PARAMS + CKA_VALUE), as SoftHSM users do with
//! `softhsm2-util --import` or `pkcs11-tool --write-object --type privkey`.
//!
//! The components are assembled into a PKCS#8 document (in zeroizing memory) and go through
//! [`Provider::import_private_pkcs8`], so an imported key is validated and stored exactly like one
//! unwrapped from PKCS#8; a key whose parts do not fit together is `KeyInvalid`.

use zeroize::Zeroizing;

use super::der::{
    self, oid, tlv, write_tlv, write_uint, INTEGER, NULL, OCTET_STRING, OID, SEQUENCE,
};
use super::{Curve, GeneratedKey, Provider};
use crate::error::{Error, Result};

/// The private parts of a key, big-endian unsigned integers or raw bytes as PKCS#11 gives them.
pub enum PrivateComponents<'a> {
    /// RSA (CKK_RSA): all eight CRT components are required.
    Rsa {
        /// CKA_MODULUS
        n: &'a [u8],
        /// CKA_PUBLIC_EXPONENT
        e: &'a [u8],
        /// CKA_PRIVATE_EXPONENT
        d: &'a [u8],
        /// CKA_PRIME_1
        p: &'a [u8],
        /// CKA_PRIME_2
        q: &'a [u8],
        /// CKA_EXPONENT_1
        dp: &'a [u8],
        /// CKA_EXPONENT_2
        dq: &'a [u8],
        /// CKA_COEFFICIENT
        qinv: &'a [u8],
    },
    /// EC (CKK_EC): the private scalar (CKA_VALUE) on a named curve.
    Ec {
        /// The curve from CKA_EC_PARAMS.
        curve: Curve,
        /// CKA_VALUE, big-endian.
        scalar: &'a [u8],
    },
    /// Ed25519 (CKK_EC_EDWARDS): the 32-byte private key (CKA_VALUE).
    Ed25519 {
        /// CKA_VALUE
        seed: &'a [u8],
    },
    /// X25519 (CKK_EC_MONTGOMERY): the 32-byte private key (CKA_VALUE).
    X25519 {
        /// CKA_VALUE
        scalar: &'a [u8],
    },
}

impl std::fmt::Debug for PrivateComponents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            PrivateComponents::Rsa { .. } => "Rsa",
            PrivateComponents::Ec { .. } => "Ec",
            PrivateComponents::Ed25519 { .. } => "Ed25519",
            PrivateComponents::X25519 { .. } => "X25519",
        };
        write!(f, "PrivateComponents::{kind}([REDACTED])")
    }
}

fn pkcs8(alg: &[u8], private_key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(tlv(INTEGER, &[0]));
    write_tlv(&mut body, SEQUENCE, alg);
    write_tlv(&mut body, OCTET_STRING, private_key);
    Zeroizing::new(tlv(SEQUENCE, &body))
}

fn build(c: &PrivateComponents<'_>) -> Result<Zeroizing<Vec<u8>>> {
    match c {
        PrivateComponents::Rsa { n, e, d, p, q, dp, dq, qinv } => {
            let mut inner = Zeroizing::new(tlv(INTEGER, &[0]));
            for part in [n, e, d, p, q, dp, dq, qinv] {
                if der::strip_zeros(part).is_empty() {
                    return Err(Error::KeyInvalid);
                }
                write_uint(&mut inner, part);
            }
            let rsa_private_key = Zeroizing::new(tlv(SEQUENCE, &inner));
            let mut alg = tlv(OID, oid::RSA_ENCRYPTION);
            write_tlv(&mut alg, NULL, &[]);
            Ok(pkcs8(&alg, &rsa_private_key))
        }
        PrivateComponents::Ec { curve, scalar } => {
            let v = der::strip_zeros(scalar);
            let n = curve.field_bytes();
            if v.is_empty() || v.len() > n {
                return Err(Error::KeyInvalid);
            }
            // RFC 5915: the private key is an OCTET STRING of exactly the field length.
            let mut padded = Zeroizing::new(vec![0u8; n]);
            padded[n - v.len()..].copy_from_slice(v);
            let mut inner = Zeroizing::new(tlv(INTEGER, &[1]));
            write_tlv(&mut inner, OCTET_STRING, &padded);
            let ec_private_key = Zeroizing::new(tlv(SEQUENCE, &inner));
            let mut alg = tlv(OID, oid::EC_PUBLIC_KEY);
            alg.extend_from_slice(curve.oid_der());
            Ok(pkcs8(&alg, &ec_private_key))
        }
        PrivateComponents::Ed25519 { seed } if seed.len() == 32 => {
            Ok(Zeroizing::new(der::pkcs8_curve25519(oid::ED25519, seed)))
        }
        PrivateComponents::X25519 { scalar } if scalar.len() == 32 => {
            Ok(Zeroizing::new(der::pkcs8_curve25519(oid::X25519, scalar)))
        }
        PrivateComponents::Ed25519 { .. } | PrivateComponents::X25519 { .. } => {
            Err(Error::KeyInvalid)
        }
    }
}

impl Provider {
    /// Imports a private key from its PKCS#11 components; returns the stored material and the
    /// public key.
    ///
    /// # Errors
    /// [`Error::KeyInvalid`] when the parts are malformed or inconsistent; size limits as for
    /// PKCS#8 import.
    pub fn import_private_components(&self, c: &PrivateComponents<'_>) -> Result<GeneratedKey> {
        self.check()?;
        let doc = build(c)?;
        self.import_private_pkcs8(&doc).map_err(|e| match e {
            Error::ErrorState(_) | Error::KeySizeRange => e,
            _ => Error::KeyInvalid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeySpec;
    use crate::mechanism::Mechanism;

    #[test]
    fn ec_and_ed25519_round_trip_through_components() {
        let p = Provider::get().unwrap();
        // Generate, take the scalar out of the PKCS#8 (test only), re-import, same public key.
        let g = p.generate(KeySpec::Ec(Curve::P256)).unwrap();
        let (_, _, key) = der::parse_pkcs8(g.material.expose_secret()).unwrap();
        let mut r = der::Reader::new(der::read_single(key, SEQUENCE).unwrap());
        r.read(INTEGER).unwrap();
        let scalar = r.read(OCTET_STRING).unwrap();
        let back = p
            .import_private_components(&PrivateComponents::Ec { curve: Curve::P256, scalar })
            .unwrap();
        assert_eq!(back.public.as_ref().unwrap().spki_der(), g.public.as_ref().unwrap().spki_der());
        let k = p.load(&back.material).unwrap();
        let sig = k.sign(p, &Mechanism::EcdsaSha256, b"m").unwrap();
        p.load_public(g.public.as_ref().unwrap())
            .unwrap()
            .verify(p, &Mechanism::EcdsaSha256, b"m", &sig)
            .unwrap();
        // A scalar of zero or too long is refused.
        assert!(matches!(
            p.import_private_components(&PrivateComponents::Ec {
                curve: Curve::P256,
                scalar: &[0; 32]
            }),
            Err(Error::KeyInvalid)
        ));
        assert!(p
            .import_private_components(&PrivateComponents::Ec {
                curve: Curve::P256,
                scalar: &[1; 33]
            })
            .is_err());
        // RFC 8032 test 1 secret key gives its published public key.
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let ed = p.import_private_components(&PrivateComponents::Ed25519 { seed: &seed }).unwrap();
        assert_eq!(
            hex::encode(ed.public.unwrap().raw()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert!(format!("{:?}", PrivateComponents::Ed25519 { seed: &seed }).contains("REDACTED"));
    }

    #[test]
    fn rsa_components_must_fit_together() {
        let p = Provider::get().unwrap();
        let bad = [1u8; 8];
        let r = p.import_private_components(&PrivateComponents::Rsa {
            n: &[0xc5; 256],
            e: &[1, 0, 1],
            d: &bad,
            p: &bad,
            q: &bad,
            dp: &bad,
            dq: &bad,
            qinv: &bad,
        });
        assert!(matches!(r, Err(Error::KeyInvalid)));
    }
}
