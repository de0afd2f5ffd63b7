//! Key generation (with the pairwise-consistency test) and import of secret and private keys.
//!
//! Every asymmetric key generated here is stored, re-loaded from its stored form and exercised
//! (sign/verify, agreement or encapsulate/decapsulate) before it is returned; a failure puts the
//! provider into the error state (FIPS 140-3 §7.10.3.3). Imported material is normalized to the
//! form aws-lc-rs emits, so what we store is always what we can load.

use aws_lc_rs::encoding::{AsBigEndian, AsDer, Curve25519SeedBin, Pkcs8V1Der};
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, PqdsaKeyPair};
use aws_lc_rs::{agreement, kem, rsa};

use super::der::{self, oid};
use super::keys::{Curve, GeneratedKey, KeyMaterial, KeySpec, MlDsaParam, PublicKey};
use super::loaded::x25519_raw_from_pkcs8;
use super::sign::ecdsa_sign_alg;
use super::Provider;
use crate::error::{Error, Result};
use crate::mechanism::{EcdhKdf, Mechanism};
use crate::secret::SecretBytes;

const PCT_MESSAGE: &[u8] = b"bulwark pairwise consistency test";
const PCT: &str = "pairwise consistency test";

fn material(spec: KeySpec, bytes: &[u8]) -> KeyMaterial {
    KeyMaterial::new(spec, SecretBytes::from_slice(bytes))
}

impl Provider {
    /// Generates a key. Asymmetric keys pass a pairwise-consistency test first.
    ///
    /// # Errors
    /// [`Error::KeySizeRange`] for unsupported sizes (RSA: 2048/3072/4096 only),
    /// [`Error::ErrorState`] if the module is, or by a failed PCT enters, the error state.
    pub fn generate(&self, spec: KeySpec) -> Result<GeneratedKey> {
        self.check()?;
        let m = match spec {
            KeySpec::Aes { bytes } | KeySpec::GenericSecret { bytes } => {
                spec.check_import()?;
                return Ok(GeneratedKey {
                    material: KeyMaterial::new(spec, self.random_secret(bytes)?),
                    public: None,
                });
            }
            KeySpec::Rsa { bits } => {
                let size = match bits {
                    2048 => rsa::KeySize::Rsa2048,
                    3072 => rsa::KeySize::Rsa3072,
                    4096 => rsa::KeySize::Rsa4096,
                    _ => return Err(Error::KeySizeRange),
                };
                let kp = rsa::KeyPair::generate(size)?;
                let der: Pkcs8V1Der<'static> = kp.as_der()?;
                material(spec, der.as_ref())
            }
            KeySpec::Ec(c) => {
                material(spec, EcdsaKeyPair::generate(ecdsa_sign_alg(c))?.to_pkcs8v1()?.as_ref())
            }
            KeySpec::Ed25519 => material(spec, Ed25519KeyPair::generate()?.to_pkcs8v1()?.as_ref()),
            KeySpec::X25519 => {
                let sk = agreement::PrivateKey::generate(&agreement::X25519)?;
                let seed: Curve25519SeedBin<'static> = sk.as_be_bytes()?;
                let doc =
                    zeroize::Zeroizing::new(der::pkcs8_curve25519(oid::X25519, seed.as_ref()));
                material(spec, &doc)
            }
            KeySpec::MlDsa(p) => {
                material(spec, PqdsaKeyPair::generate(p.signing_alg())?.to_pkcs8v1()?.as_ref())
            }
            KeySpec::MlKem(p) => {
                let dk = kem::DecapsulationKey::generate(p.alg())?;
                material(spec, dk.key_bytes()?.as_ref())
            }
        };
        let public = self.pairwise_consistency(&m)?;
        Ok(GeneratedKey { material: m, public: Some(public) })
    }

    /// Loads freshly generated material and exercises it; any failure is a module error.
    fn pairwise_consistency(&self, m: &KeyMaterial) -> Result<PublicKey> {
        let fail = |_| self.enter_error_state(PCT);
        let key = self.load(m).map_err(fail)?;
        let verifier = key.loaded_public().ok_or_else(|| self.enter_error_state(PCT))?;
        let sign_mech = match m.spec() {
            KeySpec::Rsa { .. } => Some(Mechanism::Sha256RsaPkcs),
            KeySpec::Ec(_) => Some(Mechanism::EcdsaSha256),
            KeySpec::Ed25519 => Some(Mechanism::EdDsa(None)),
            KeySpec::MlDsa(_) => Some(Mechanism::MlDsa { context: Vec::new() }),
            _ => None,
        };
        let consistent = if let Some(mech) = sign_mech {
            let mut sig = key.sign(self, &mech, PCT_MESSAGE).map_err(fail)?;
            if self.pct_fault() {
                sig[0] ^= 1;
            }
            verifier.verify(self, &mech, PCT_MESSAGE, &sig).is_ok()
        } else if m.spec() == KeySpec::X25519 {
            let peer = agreement::PrivateKey::generate(&agreement::X25519)
                .map_err(|_| self.enter_error_state(PCT))?;
            let peer_pub = peer.compute_public_key().map_err(|_| self.enter_error_state(PCT))?;
            let mech = Mechanism::Ecdh1Derive {
                kdf: EcdhKdf::Null,
                shared_data: Vec::new(),
                public_data: peer_pub.as_ref().to_vec(),
            };
            let ours = key.derive(self, &mech, 0).map_err(fail)?;
            let ours_pub =
                agreement::UnparsedPublicKey::new(&agreement::X25519, verifier.public().raw());
            let theirs = agreement::agree(&peer, ours_pub, Error::CryptoFailed, |z| Ok(z.to_vec()))
                .map_err(fail)?;
            !self.pct_fault() && ours.ct_eq(&theirs)
        } else {
            let (ct, ss) = verifier.encapsulate(self).map_err(fail)?;
            let ss2 = key.decapsulate(self, &ct).map_err(fail)?;
            !self.pct_fault() && ss2.ct_eq(ss.expose_secret())
        };
        if !consistent {
            return Err(self.enter_error_state(PCT));
        }
        Ok(verifier.public().clone())
    }

    /// Imports a secret key (AES or generic secret) after checking its length.
    ///
    /// # Errors
    /// [`Error::KeySizeRange`] for a bad length, [`Error::KeyTypeInconsistent`] for an asymmetric
    /// spec, [`Error::ErrorState`].
    pub fn import_secret(&self, spec: KeySpec, bytes: &[u8]) -> Result<KeyMaterial> {
        self.check()?;
        let (KeySpec::Aes { bytes: expected } | KeySpec::GenericSecret { bytes: expected }) = spec
        else {
            return Err(Error::KeyTypeInconsistent);
        };
        spec.check_import()?;
        if bytes.len() != expected {
            return Err(Error::KeySizeRange);
        }
        Ok(material(spec, bytes))
    }

    /// Imports a PKCS#8 private key (RSA, EC incl. secp256k1, Ed25519, X25519, ML-DSA), detecting
    /// its type, and returns it in stored form with its public half.
    ///
    /// # Errors
    /// [`Error::KeyInvalid`] for malformed or inconsistent keys, [`Error::KeySizeRange`] for RSA
    /// outside 2048..=8192 bits, [`Error::NotSupported`] for other algorithms, [`Error::ErrorState`].
    pub fn import_private_pkcs8(&self, pkcs8: &[u8]) -> Result<GeneratedKey> {
        self.check()?;
        let (alg, params, _) = der::parse_pkcs8(pkcs8).ok_or(Error::KeyInvalid)?;
        let ml_dsa = |p: MlDsaParam| -> Result<GeneratedKey> {
            let kp = PqdsaKeyPair::from_pkcs8(p.signing_alg(), pkcs8)?;
            // aws-lc-rs emits the seed form; a key imported in expanded-only form is kept as is.
            let stored = kp.to_pkcs8v1().map_or_else(|_| pkcs8.to_vec(), |d| d.as_ref().to_vec());
            self.with_public(material(KeySpec::MlDsa(p), &zeroize::Zeroizing::new(stored)))
        };
        match alg {
            oid::RSA_ENCRYPTION => {
                let kp = rsa::KeyPair::from_pkcs8(pkcs8)?;
                let be = kp.public_key().modulus().big_endian_without_leading_zero();
                let bits = KeySpec::Rsa {
                    bits: be.first().map_or(0, |b| be.len() * 8 - b.leading_zeros() as usize),
                };
                bits.check_import()?;
                let der: Pkcs8V1Der<'static> = kp.as_der()?;
                self.with_public(material(bits, der.as_ref()))
            }
            oid::EC_PUBLIC_KEY => {
                let curve =
                    params.and_then(Curve::from_oid_der).ok_or(Error::NotSupported("EC curve"))?;
                let kp = EcdsaKeyPair::from_pkcs8(ecdsa_sign_alg(curve), pkcs8)?;
                self.with_public(material(KeySpec::Ec(curve), kp.to_pkcs8v1()?.as_ref()))
            }
            oid::ED25519 => {
                let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)?;
                self.with_public(material(KeySpec::Ed25519, kp.to_pkcs8v1()?.as_ref()))
            }
            oid::X25519 => {
                let raw = x25519_raw_from_pkcs8(pkcs8)?;
                let doc = zeroize::Zeroizing::new(der::pkcs8_curve25519(oid::X25519, raw));
                self.with_public(material(KeySpec::X25519, &doc))
            }
            oid::ML_DSA_44 => ml_dsa(MlDsaParam::MlDsa44),
            oid::ML_DSA_65 => ml_dsa(MlDsaParam::MlDsa65),
            oid::ML_DSA_87 => ml_dsa(MlDsaParam::MlDsa87),
            _ => Err(Error::NotSupported("private key algorithm")),
        }
    }

    fn with_public(&self, material: KeyMaterial) -> Result<GeneratedKey> {
        let public = self.load(&material)?.public().cloned();
        Ok(GeneratedKey { material, public })
    }

    /// Validates unwrapped bytes as a key of `target` (see [`super::LoadedKey::unwrap`]).
    pub(crate) fn material_from_unwrapped(
        &self,
        target: KeySpec,
        bytes: SecretBytes,
    ) -> Result<KeyMaterial> {
        let bad = |_| Error::WrappedKeyInvalid;
        let spec = match target {
            KeySpec::Aes { bytes: 0 } => KeySpec::Aes { bytes: bytes.len() },
            KeySpec::GenericSecret { bytes: 0 } => KeySpec::GenericSecret { bytes: bytes.len() },
            KeySpec::Aes { .. } | KeySpec::GenericSecret { .. } | KeySpec::MlKem(_) => target,
            _ => {
                let imported = self.import_private_pkcs8(bytes.expose_secret()).map_err(bad)?;
                let got = imported.material.spec();
                let fits = got == target
                    || matches!((target, got), (KeySpec::Rsa { bits: 0 }, KeySpec::Rsa { .. }));
                return if fits { Ok(imported.material) } else { Err(Error::WrappedKeyInvalid) };
            }
        };
        let m = KeyMaterial::new(spec, bytes);
        self.load(&m).map_err(bad)?;
        Ok(m)
    }
}
