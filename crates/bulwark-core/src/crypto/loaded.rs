//! Keys parsed once into aws-lc-rs objects: [`LoadedKey`] (private or secret) and
//! [`LoadedPublicKey`].
//!
//! Loading is the only place stored key bytes are parsed; every operation afterwards works on the
//! parsed objects (per-mode cipher keys and per-hash HMAC keys are built on first use and then
//! kept). A loaded key holds secrets inside aws-lc (wiped by aws-lc on free) and, for AES,
//! generic secrets and RSA decryption, a zeroizing copy of the stored bytes; it never prints them.

use std::fmt;
use std::sync::OnceLock;

use aws_lc_rs::cipher::{
    DecryptingKey, EncryptingKey, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
};
use aws_lc_rs::rsa::{
    OaepPrivateDecryptingKey, OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey,
    Pkcs1PublicEncryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{self, KeyPair as _, ParsedPublicKey};
use aws_lc_rs::{aead, agreement, cmac, hmac, kem, rsa};

use super::der::{self, oid};
use super::evp_rsa::EvpRsa;
use super::get_or_try_init;
use super::keys::{Curve, KeyMaterial, KeySpec, PublicKey};
use super::sign::{ecdsa_sign_alg, ecdsa_verify_alg};
use super::Provider;
use crate::error::{Error, Result};
use crate::secret::SecretBytes;

/// A private or secret key, parsed once. `Send + Sync`; share it behind an `Arc` in a cache.
pub struct LoadedKey {
    pub(super) spec: KeySpec,
    /// The public half, loaded for verification / encryption (key pairs only).
    pub(super) public: Option<LoadedPublicKey>,
    pub(super) inner: Inner,
}

pub(super) enum Inner {
    Aes(Box<AesKey>),
    Generic(Box<GenericKey>),
    Rsa(Box<RsaKey>),
    Ec(Box<EcKey>),
    Ed25519(Box<signature::Ed25519KeyPair>),
    X25519(Box<agreement::PrivateKey>),
    MlDsa(Box<signature::PqdsaKeyPair>),
    MlKem(Box<kem::DecapsulationKey>),
}

pub(super) struct AesKey {
    pub(super) key: SecretBytes,
    pub(super) gcm: aead::LessSafeKey,
    pub(super) cbc_enc: OnceLock<EncryptingKey>,
    pub(super) cbc_dec: OnceLock<DecryptingKey>,
    pub(super) cbc_pad_enc: OnceLock<PaddedBlockEncryptingKey>,
    pub(super) cbc_pad_dec: OnceLock<PaddedBlockDecryptingKey>,
    pub(super) ctr: OnceLock<EncryptingKey>,
    pub(super) ecb_enc: OnceLock<EncryptingKey>,
    pub(super) ecb_dec: OnceLock<DecryptingKey>,
    pub(super) cmac: OnceLock<cmac::Key>,
}

pub(super) struct GenericKey {
    pub(super) key: SecretBytes,
    /// HMAC keys for SHA-256, SHA-384, SHA-512.
    pub(super) hmac: [OnceLock<hmac::Key>; 3],
}

pub(super) struct RsaKey {
    pub(super) kp: rsa::KeyPair,
    pub(super) pkcs8: SecretBytes,
    pub(super) oaep: OnceLock<OaepPrivateDecryptingKey>,
    pub(super) pkcs1: OnceLock<Pkcs1PrivateDecryptingKey>,
    /// The same key for the `evp_rsa` shim (raw PKCS#1 v1.5, PSS with any parameters).
    pub(super) evp: OnceLock<EvpRsa>,
}

pub(super) struct EcKey {
    pub(super) curve: Curve,
    pub(super) kp: signature::EcdsaKeyPair,
    /// The same scalar as an ECDH key (not for secp256k1, which aws-lc-rs cannot agree on).
    pub(super) ecdh: Option<agreement::PrivateKey>,
}

/// A public key, parsed once.
pub struct LoadedPublicKey {
    pub(super) public: PublicKey,
    pub(super) inner: PubInner,
}

pub(super) enum PubInner {
    Rsa(Box<RsaPub>),
    Ec(Curve, ParsedPublicKey),
    Ed25519(ParsedPublicKey),
    X25519,
    MlDsa(ParsedPublicKey),
    MlKem(Box<kem::EncapsulationKey>),
}

pub(super) struct RsaPub {
    /// PKCS#1 v1.5 verifiers for SHA-256, SHA-384, SHA-512.
    pub(super) pkcs1: [OnceLock<ParsedPublicKey>; 3],
    /// PSS verifiers for SHA-256, SHA-384, SHA-512.
    pub(super) pss: [OnceLock<ParsedPublicKey>; 3],
    pub(super) oaep: OnceLock<OaepPublicEncryptingKey>,
    pub(super) pkcs1_enc: OnceLock<Pkcs1PublicEncryptingKey>,
    /// The same key for the `evp_rsa` shim.
    pub(super) evp: OnceLock<EvpRsa>,
    pub(super) modulus_len: usize,
}

impl LoadedKey {
    /// What this key is.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// The public half (key pairs only).
    pub fn public(&self) -> Option<&PublicKey> {
        self.public.as_ref().map(|p| &p.public)
    }

    /// The loaded public half (key pairs only).
    pub fn loaded_public(&self) -> Option<&LoadedPublicKey> {
        self.public.as_ref()
    }

    pub(super) fn public_or_err(&self) -> Result<&LoadedPublicKey> {
        self.public.as_ref().ok_or(Error::KeyTypeInconsistent)
    }
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadedKey({})", self.spec.name())
    }
}

impl LoadedPublicKey {
    /// The public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// What this key is.
    pub fn spec(&self) -> KeySpec {
        self.public.spec()
    }
}

impl fmt::Debug for LoadedPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadedPublicKey({})", self.public.spec().name())
    }
}

/// The raw X25519 private key inside an RFC 8410 PKCS#8 document.
pub(super) fn x25519_raw_from_pkcs8(pkcs8: &[u8]) -> Result<&[u8]> {
    match der::parse_pkcs8(pkcs8) {
        Some((oid::X25519, None, inner)) => {
            let raw = der::read_single(inner, der::OCTET_STRING).ok_or(Error::KeyInvalid)?;
            if raw.len() == 32 {
                Ok(raw)
            } else {
                Err(Error::KeyInvalid)
            }
        }
        _ => Err(Error::KeyInvalid),
    }
}

fn rsa_public(kp: &rsa::KeyPair) -> Result<PublicKey> {
    let pk = kp.public_key();
    PublicKey::from_rsa(
        pk.modulus().big_endian_without_leading_zero(),
        pk.exponent().big_endian_without_leading_zero(),
    )
}

impl Provider {
    /// Parses stored key material into aws-lc-rs objects, once. The caller caches the result.
    ///
    /// # Errors
    /// [`Error::KeyInvalid`] if the bytes are not a valid key of the material's spec;
    /// [`Error::ErrorState`] in the error state.
    pub fn load(&self, material: &KeyMaterial) -> Result<LoadedKey> {
        self.check()?;
        let spec = material.spec();
        let bytes = material.expose_secret();
        let (inner, public) = match spec {
            KeySpec::Aes { bytes: n } => {
                if bytes.len() != n {
                    return Err(Error::KeyInvalid);
                }
                (Inner::Aes(Box::new(AesKey::new(bytes)?)), None)
            }
            KeySpec::GenericSecret { bytes: n } => {
                spec.check_import()?;
                if bytes.len() != n {
                    return Err(Error::KeyInvalid);
                }
                let g =
                    GenericKey { key: SecretBytes::from_slice(bytes), hmac: Default::default() };
                (Inner::Generic(Box::new(g)), None)
            }
            KeySpec::Rsa { bits } => {
                let kp = rsa::KeyPair::from_pkcs8(bytes)?;
                let public = rsa_public(&kp)?;
                if public.spec() != (KeySpec::Rsa { bits }) {
                    return Err(Error::KeyInvalid);
                }
                let key = RsaKey {
                    kp,
                    pkcs8: SecretBytes::from_slice(bytes),
                    oaep: OnceLock::new(),
                    pkcs1: OnceLock::new(),
                    evp: OnceLock::new(),
                };
                (Inner::Rsa(Box::new(key)), Some(public))
            }
            KeySpec::Ec(curve) => {
                let kp = signature::EcdsaKeyPair::from_pkcs8(ecdsa_sign_alg(curve), bytes)?;
                let public =
                    PublicKey::new_unchecked(spec, kp.public_key().as_ref().to_vec(), Vec::new());
                let ecdh = match curve {
                    Curve::P256 => Some(&agreement::ECDH_P256),
                    Curve::P384 => Some(&agreement::ECDH_P384),
                    Curve::P521 => Some(&agreement::ECDH_P521),
                    Curve::Secp256k1 => None,
                }
                .map(|alg| agreement::PrivateKey::from_private_key_der(alg, bytes))
                .transpose()?;
                (Inner::Ec(Box::new(EcKey { curve, kp, ecdh })), Some(public))
            }
            KeySpec::Ed25519 => {
                let kp = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)?;
                let public =
                    PublicKey::new_unchecked(spec, kp.public_key().as_ref().to_vec(), Vec::new());
                (Inner::Ed25519(Box::new(kp)), Some(public))
            }
            KeySpec::X25519 => {
                let raw = x25519_raw_from_pkcs8(bytes)?;
                let sk = agreement::PrivateKey::from_private_key(&agreement::X25519, raw)?;
                let pk = sk.compute_public_key()?;
                let public = PublicKey::new_unchecked(spec, pk.as_ref().to_vec(), Vec::new());
                (Inner::X25519(Box::new(sk)), Some(public))
            }
            KeySpec::MlDsa(p) => {
                let kp = signature::PqdsaKeyPair::from_pkcs8(p.signing_alg(), bytes)?;
                let public =
                    PublicKey::new_unchecked(spec, kp.public_key().as_ref().to_vec(), Vec::new());
                (Inner::MlDsa(Box::new(kp)), Some(public))
            }
            KeySpec::MlKem(p) => {
                let ek = p.ek_from_dk(bytes).ok_or(Error::KeyInvalid)?;
                let dk = kem::DecapsulationKey::new(p.alg(), bytes)?;
                (Inner::MlKem(Box::new(dk)), Some(PublicKey::from_parts(spec, ek)?))
            }
        };
        let public = public.map(|pk| self.load_public(&pk)).transpose()?;
        Ok(LoadedKey { spec, public, inner })
    }

    /// Parses a public key into aws-lc-rs objects, once.
    ///
    /// # Errors
    /// [`Error::KeyInvalid`] if aws-lc-rs rejects the key; [`Error::ErrorState`].
    pub fn load_public(&self, public: &PublicKey) -> Result<LoadedPublicKey> {
        self.check()?;
        let inner = match public.spec() {
            KeySpec::Rsa { .. } => PubInner::Rsa(Box::new(RsaPub {
                pkcs1: Default::default(),
                pss: Default::default(),
                oaep: OnceLock::new(),
                pkcs1_enc: OnceLock::new(),
                evp: OnceLock::new(),
                modulus_len: public.raw().len(),
            })),
            KeySpec::Ec(c) => {
                PubInner::Ec(c, ParsedPublicKey::new(ecdsa_verify_alg(c), public.raw())?)
            }
            KeySpec::Ed25519 => {
                PubInner::Ed25519(ParsedPublicKey::new(&signature::ED25519, public.raw())?)
            }
            KeySpec::X25519 => PubInner::X25519,
            KeySpec::MlDsa(p) => {
                PubInner::MlDsa(ParsedPublicKey::new(p.verification_alg(), public.raw())?)
            }
            KeySpec::MlKem(p) => {
                PubInner::MlKem(Box::new(kem::EncapsulationKey::new(p.alg(), public.raw())?))
            }
            KeySpec::Aes { .. } | KeySpec::GenericSecret { .. } => {
                return Err(Error::KeyTypeInconsistent)
            }
        };
        Ok(LoadedPublicKey { public: public.clone(), inner })
    }
}

impl AesKey {
    fn new(bytes: &[u8]) -> Result<AesKey> {
        let alg = match bytes.len() {
            16 => &aead::AES_128_GCM,
            24 => &aead::AES_192_GCM,
            32 => &aead::AES_256_GCM,
            _ => return Err(Error::KeySizeRange),
        };
        Ok(AesKey {
            key: SecretBytes::from_slice(bytes),
            gcm: aead::LessSafeKey::new(aead::UnboundKey::new(alg, bytes)?),
            cbc_enc: OnceLock::new(),
            cbc_dec: OnceLock::new(),
            cbc_pad_enc: OnceLock::new(),
            cbc_pad_dec: OnceLock::new(),
            ctr: OnceLock::new(),
            ecb_enc: OnceLock::new(),
            ecb_dec: OnceLock::new(),
            cmac: OnceLock::new(),
        })
    }
}

impl RsaKey {
    /// The key for the `evp_rsa` shim, parsed on first use.
    pub(super) fn evp(&self) -> Result<&EvpRsa> {
        get_or_try_init(&self.evp, || EvpRsa::from_pkcs8(self.pkcs8.expose_secret()))
    }
}

impl RsaPub {
    /// The public key for the `evp_rsa` shim, parsed on first use.
    pub(super) fn evp(&self, spki: &[u8]) -> Result<&EvpRsa> {
        get_or_try_init(&self.evp, || EvpRsa::from_spki(spki))
    }

    /// The RSA public key as an aws-lc-rs encryption key (from the SPKI).
    pub(super) fn encrypting_key(public: &PublicKey) -> Result<PublicEncryptingKey> {
        Ok(PublicEncryptingKey::from_der(public.spki_der())?)
    }
}
