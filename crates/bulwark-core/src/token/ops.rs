//! Key generation and cryptographic operations on stored keys.
//!
//! [`Token::key_for`] is the one gate every operation passes: visibility, the key's usage
//! flag, its allowed-mechanism list, its validity dates and the mechanism/key-type fit are all
//! checked there, then the parsed key comes from the cache (or is parsed once and cached). The
//! PKCS#11 layer calls it at `C_*Init` and keeps the returned [`KeyRef`] for the operation.
//! The public, audited entry points are in `guard.rs`; the bodies here are `*_unaudited`.

use std::sync::Arc;

use super::objects::{fill_public, spec_of};
use super::{read, write, Material, Obj, SessionId, Token};
use crate::attr::{AttrType, AttrValue, ObjectClass};
use crate::crypto::{KeyMaterial, KeySpec, LoadedKey, LoadedPublicKey, PublicKey};
use crate::error::{Error, Result};
use crate::mechanism::{KeyGenMechanism, Mechanism};
use crate::secret::SecretBytes;
use crate::store::Store;
use crate::template::{self, Origin, Template};

/// A parsed key, ready for operations (never outside core: every use of a stored key passes
/// the token's gate, see [`crate::hsm::EmbeddedKey`]).
#[derive(Clone)]
pub(crate) enum KeyRef {
    /// A secret or private key.
    Private(Arc<LoadedKey>),
    /// A public key.
    Public(Arc<LoadedPublicKey>),
}

impl std::fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyRef::Private(_) => f.write_str("KeyRef::Private([REDACTED])"),
            KeyRef::Public(_) => f.write_str("KeyRef::Public"),
        }
    }
}

/// What a key is about to be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// `CKA_SIGN`
    Sign,
    /// `CKA_VERIFY`
    Verify,
    /// `CKA_ENCRYPT`
    Encrypt,
    /// `CKA_DECRYPT`
    Decrypt,
    /// `CKA_WRAP`
    Wrap,
    /// `CKA_UNWRAP`
    Unwrap,
    /// `CKA_DERIVE`
    Derive,
    /// `CKA_ENCAPSULATE`
    Encapsulate,
    /// `CKA_DECAPSULATE`
    Decapsulate,
}

impl Usage {
    fn attr(self) -> AttrType {
        match self {
            Usage::Sign => AttrType::Sign,
            Usage::Verify => AttrType::Verify,
            Usage::Encrypt => AttrType::Encrypt,
            Usage::Decrypt => AttrType::Decrypt,
            Usage::Wrap => AttrType::Wrap,
            Usage::Unwrap => AttrType::Unwrap,
            Usage::Derive => AttrType::Derive,
            Usage::Encapsulate => AttrType::Encapsulate,
            Usage::Decapsulate => AttrType::Decapsulate,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Usage::Sign => "key may not sign (CKA_SIGN is false)",
            Usage::Verify => "key may not verify (CKA_VERIFY is false)",
            Usage::Encrypt => "key may not encrypt (CKA_ENCRYPT is false)",
            Usage::Decrypt => "key may not decrypt (CKA_DECRYPT is false)",
            Usage::Wrap => "key may not wrap (CKA_WRAP is false)",
            Usage::Unwrap => "key may not unwrap (CKA_UNWRAP is false)",
            Usage::Derive => "key may not derive (CKA_DERIVE is false)",
            Usage::Encapsulate => "key may not encapsulate (CKA_ENCAPSULATE is false)",
            Usage::Decapsulate => "key may not decapsulate (CKA_DECAPSULATE is false)",
        }
    }
}

impl<S: Store> Token<S> {
    /// Checks that key `h` may be used for `usage` with `mech`, and returns it parsed.
    pub(super) fn key_for_unaudited(
        &self,
        h: u64,
        usage: Usage,
        mech: &Mechanism,
    ) -> Result<KeyRef> {
        self.key_for_at(h, usage, mech, None, 1).map(|(k, _)| k)
    }

    /// [`Token::key_for_unaudited`] with the change counter this call's pre-check read (see
    /// [`Token::obj_at`]); also returns the key's `CKA_ALWAYS_AUTHENTICATE` (read-only after
    /// creation), from the same record. `uses` is how many uses this call makes of the key
    /// (0 for `C_*Init` and a prepared key's re-check): a metered key counts them durably
    /// before the key is handed out (usepolicy.rs).
    pub(super) fn key_for_at(
        &self,
        h: u64,
        usage: Usage,
        mech: &Mechanism,
        seen: Option<u64>,
        uses: u64,
    ) -> Result<(KeyRef, bool)> {
        self.provider.check()?;
        if !mech.allows(usage) {
            // A mechanism of the wrong family (C_EncryptInit with a signature mechanism...).
            return Err(Error::MechanismInvalid(mech.ck_type()));
        }
        let o = self.obj_at(h, seen)?;
        self.check_use(&self.who(), &o, usage)?;
        // A due automatic rotation happens here, where the dates apply (versions.rs): the
        // version `h` names is then deactivated, and the state check below sees it.
        let o = if self.rotate_if_due(&o)? { self.obj(h)? } else { o };
        // The lifecycle state (dates applied): only active keys protect; deactivated and
        // compromised keys still process old data; other states do nothing.
        self.check_state(&o, usage)?;
        self.check_version(&o, usage)?;
        if usage == Usage::Encrypt {
            self.check_nonce_policy(mech)?;
        }
        let class = o.attrs.class();
        let class_ok = match usage {
            Usage::Sign | Usage::Decrypt | Usage::Unwrap | Usage::Derive | Usage::Decapsulate => {
                matches!(class, Some(ObjectClass::PrivateKey | ObjectClass::SecretKey))
            }
            Usage::Verify | Usage::Encrypt | Usage::Wrap | Usage::Encapsulate => {
                matches!(class, Some(ObjectClass::PublicKey | ObjectClass::SecretKey))
            }
        };
        if !class_ok {
            return Err(Error::KeyTypeInconsistent);
        }
        if !o.attrs.bool_or(usage.attr(), false) {
            return Err(Error::KeyFunctionNotPermitted(usage.name()));
        }
        if let Some(AttrValue::MechanismList(allowed)) = o.attrs.get(AttrType::AllowedMechanisms) {
            if !allowed.is_empty() && !allowed.contains(&mech.ck_type()) {
                return Err(Error::MechanismInvalid(mech.ck_type()));
            }
        }
        let today = || crate::lifecycle::ck_date(self.now());
        if let Some(AttrValue::Date(Some(start))) = o.attrs.get(AttrType::StartDate) {
            if today() < *start {
                return Err(Error::KeyFunctionNotPermitted(
                    "key is not yet valid (CKA_START_DATE)",
                ));
            }
        }
        if let Some(AttrValue::Date(Some(end))) = o.attrs.get(AttrType::EndDate) {
            if today() > *end {
                return Err(Error::KeyFunctionNotPermitted("key has expired (CKA_END_DATE)"));
            }
        }
        // The cached, loaded key knows its spec: deriving it from the stored SPKI instead would
        // re-parse (and for RSA re-validate, ~0.1 ms) the public key on every `C_*Init`.
        let k = self.loaded(&o)?;
        let spec = match &k {
            KeyRef::Private(k) => k.spec(),
            KeyRef::Public(k) => k.spec(),
        };
        if !mech.key_fits(spec) {
            return Err(Error::KeyTypeInconsistent);
        }
        // Last, once everything else allows the use: a refused call never spends a use.
        self.meter(&o, usage, uses)?;
        Ok((k, o.attrs.bool_or(AttrType::AlwaysAuthenticate, false)))
    }

    /// The parsed key of an object, from the cache when its record is unchanged.
    fn loaded(&self, o: &Obj) -> Result<KeyRef> {
        if let Some((mac, k)) = read(&self.cache).keys.get(&o.handle) {
            if *mac == o.mac {
                return Ok(k.clone());
            }
        }
        let k = if o.attrs.class() == Some(ObjectClass::PublicKey) {
            let spki = o
                .attrs
                .bytes(AttrType::PublicKeyInfo)
                .ok_or(Error::Integrity("public key info missing"))?;
            KeyRef::Public(Arc::new(self.provider.load_public(&PublicKey::from_spki_der(spki)?)?))
        } else {
            if !o.verified {
                // Read before the token was unlocked: its MAC could not be checked yet.
                return Err(Error::UserNotLoggedIn);
            }
            KeyRef::Private(Arc::new(self.provider.load(&self.material(o)?)?))
        };
        write(&self.cache).keys.insert(o.handle, (o.mac.clone(), k.clone()));
        Ok(k)
    }

    /// The key spec (algorithm and size) of a key object.
    pub fn key_spec(&self, h: u64) -> Result<KeySpec> {
        spec_of(&self.obj(h)?.attrs)
    }

    /// The public key of a key pair member (either half), or of a public key object.
    pub fn public_key(&self, h: u64) -> Result<PublicKey> {
        let o = self.obj(h)?;
        let spki = o.attrs.bytes(AttrType::PublicKeyInfo).ok_or(Error::KeyTypeInconsistent)?;
        PublicKey::from_spki_der(spki)
    }

    /// `C_GenerateKey`.
    pub(super) fn generate_key_unaudited(
        &self,
        mech: KeyGenMechanism,
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        let (attrs, spec) = template::secret_key_for_generate(mech, t)?;
        let g = self.provider.generate(spec)?;
        self.insert(attrs, Some(g.material), session, None)
    }

    /// `C_GenerateKeyPair`: returns (public handle, private handle).
    pub(super) fn generate_key_pair_unaudited(
        &self,
        mech: KeyGenMechanism,
        pub_t: &Template,
        priv_t: &Template,
        session: SessionId,
    ) -> Result<(u64, u64)> {
        let (mut pub_a, mut priv_a, spec) = template::key_pair_for_generate(mech, pub_t, priv_t)?;
        let g = self.provider.generate(spec)?;
        let pk = g.public.ok_or(Error::Internal("generated pair without public key"))?;
        fill_public(&mut pub_a, &pk, true);
        fill_public(&mut priv_a, &pk, false);
        let priv_h = self.insert(priv_a, Some(g.material), session, None)?;
        match self.insert(pub_a, None, session, None) {
            Ok(pub_h) => Ok((pub_h, priv_h)),
            Err(e) => {
                // Never leave half a pair behind.
                let _ = self.destroy_object_unaudited(priv_h);
                Err(e)
            }
        }
    }

    /// Signs with key `h`.
    pub(super) fn sign_unaudited(
        &self,
        h: u64,
        mech: &Mechanism,
        data: &[u8],
        seen: Option<u64>,
    ) -> Result<Vec<u8>> {
        match self.key_for_at(h, Usage::Sign, mech, seen, 1)?.0 {
            KeyRef::Private(k) => k.sign(self.provider, mech, data),
            KeyRef::Public(_) => Err(Error::KeyTypeInconsistent),
        }
    }

    /// Verifies with key `h` (a public key, or an HMAC secret key).
    pub(super) fn verify_unaudited(
        &self,
        h: u64,
        mech: &Mechanism,
        data: &[u8],
        sig: &[u8],
        seen: Option<u64>,
    ) -> Result<()> {
        match self.key_for_at(h, Usage::Verify, mech, seen, 1)?.0 {
            KeyRef::Private(k) => k.verify(self.provider, mech, data, sig),
            KeyRef::Public(k) => k.verify(self.provider, mech, data, sig),
        }
    }

    /// Encrypts with key `h`.
    pub(super) fn encrypt_unaudited(
        &self,
        h: u64,
        mech: &Mechanism,
        data: &[u8],
        seen: Option<u64>,
    ) -> Result<Vec<u8>> {
        match self.key_for_at(h, Usage::Encrypt, mech, seen, 1)?.0 {
            KeyRef::Private(k) => k.encrypt(self.provider, mech, data),
            KeyRef::Public(k) => k.encrypt(self.provider, mech, data),
        }
    }

    /// Decrypts with key `h`.
    pub(super) fn decrypt_unaudited(
        &self,
        h: u64,
        mech: &Mechanism,
        data: &[u8],
        seen: Option<u64>,
    ) -> Result<SecretBytes> {
        match self.key_for_at(h, Usage::Decrypt, mech, seen, 1)?.0 {
            KeyRef::Private(k) => k.decrypt(self.provider, mech, data),
            KeyRef::Public(_) => Err(Error::KeyTypeInconsistent),
        }
    }

    /// `C_WrapKey`: wraps key `target` under `wrapping`. The target must be extractable; if it
    /// demands CKA_WRAP_WITH_TRUSTED, the wrapping key must be CKA_TRUSTED.
    pub(super) fn wrap_key_unaudited(
        &self,
        wrapping: u64,
        mech: &Mechanism,
        target: u64,
    ) -> Result<Vec<u8>> {
        let t = self.obj(target)?;
        self.check_export(&self.who(), &t)?;
        self.check_export_state(&t)?;
        Self::check_export_metered(&t)?;
        if !matches!(t.attrs.class(), Some(ObjectClass::SecretKey | ObjectClass::PrivateKey)) {
            return Err(Error::KeyTypeInconsistent);
        }
        if !t.attrs.bool_or(AttrType::Extractable, false) {
            return Err(Error::KeyUnextractable("CKA_EXTRACTABLE is false"));
        }
        let w = self.obj(wrapping)?;
        let trusted = w.attrs.bool_or(AttrType::Trusted, false);
        if t.attrs.bool_or(AttrType::WrapWithTrusted, false) && !trusted {
            return Err(Error::KeyUnextractable("target requires a trusted wrapping key"));
        }
        if self.guard.policy.wrap_requires_trusted && !trusted {
            return Err(Error::KeyUnextractable(
                "store policy: keys leave only under a trusted wrapping key (CKA_TRUSTED, set by the security officer)",
            ));
        }
        let material = self.material(&t)?;
        match self.key_for_unaudited(wrapping, Usage::Wrap, mech)? {
            KeyRef::Private(k) => k.wrap(self.provider, mech, &material),
            KeyRef::Public(k) => match mech {
                // Wrapping under a public key is RSA encryption (OAEP or PKCS#1 v1.5) of the key
                // bytes.
                Mechanism::RsaOaep { .. } | Mechanism::RsaPkcs
                    if matches!(
                        material.spec(),
                        KeySpec::Aes { .. } | KeySpec::GenericSecret { .. }
                    ) =>
                {
                    k.encrypt(self.provider, mech, material.expose_secret())
                }
                _ => Err(Error::KeyTypeInconsistent),
            },
        }
    }

    /// `C_UnwrapKey`: unwraps a secret key described by `t` under `unwrapping`.
    pub(super) fn unwrap_key_unaudited(
        &self,
        unwrapping: u64,
        mech: &Mechanism,
        wrapped: &[u8],
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        let KeyRef::Private(k) = self.key_for_unaudited(unwrapping, Usage::Unwrap, mech)? else {
            return Err(Error::KeyTypeInconsistent);
        };
        if self.guard.policy.wrap_requires_trusted
            && t.iter().any(|(k, v)| *k == AttrType::Sensitive && *v == AttrValue::Bool(false))
        {
            return Err(Error::TemplateInconsistent(
                "store policy: unwrapped keys are sensitive (CKA_SENSITIVE=false refused)",
            ));
        }
        let source = self.obj(unwrapping)?;
        let inherit = if source.session.is_none() { Some(source.uid) } else { None };
        let want = target_secret_spec(t, None)?;
        let material = k.unwrap(self.provider, mech, wrapped, want)?;
        let spec = material.spec();
        let len_ok = match (want, spec) {
            (KeySpec::Aes { bytes: 0 } | KeySpec::GenericSecret { bytes: 0 }, _) => true,
            (KeySpec::Aes { bytes: w }, KeySpec::Aes { bytes: g })
            | (KeySpec::GenericSecret { bytes: w }, KeySpec::GenericSecret { bytes: g }) => w == g,
            _ => false,
        };
        if !len_ok || material.expose_secret().len() != spec_len(spec) {
            return Err(Error::WrappedKeyInvalid);
        }
        let attrs = template::secret_key_for_unwrap_or_derive(t, spec, Origin::Unwrapped)?;
        self.insert(attrs, Some(material), session, inherit)
    }

    /// `C_DeriveKey`: derives a secret key described by `t` from `base`.
    pub(super) fn derive_key_unaudited(
        &self,
        base: u64,
        mech: &Mechanism,
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        let b = self.obj(base)?;
        let KeyRef::Private(k) = self.key_for_unaudited(base, Usage::Derive, mech)? else {
            return Err(Error::KeyTypeInconsistent);
        };
        let spec = target_secret_spec(t, Some(32))?;
        let (KeySpec::Aes { bytes: len } | KeySpec::GenericSecret { bytes: len }) = spec else {
            return Err(Error::TemplateInconsistent("derived keys are secret keys"));
        };
        let secret = k.derive(self.provider, mech, len)?;
        let origin = Origin::Derived {
            always_sensitive: b.attrs.bool_or(AttrType::AlwaysSensitive, false),
            never_extractable: b.attrs.bool_or(AttrType::NeverExtractable, false),
        };
        let attrs = template::secret_key_for_unwrap_or_derive(t, spec, origin)?;
        let inherit = if b.session.is_none() { Some(b.uid) } else { None };
        self.insert(attrs, Some(KeyMaterial::new(spec, secret)), session, inherit)
    }

    /// The value of a secret key that is neither sensitive nor unextractable. Everything else
    /// is refused: private keys never leave in plaintext.
    pub(super) fn export_secret_unaudited(&self, h: u64) -> Result<SecretBytes> {
        let o = self.obj(h)?;
        match o.attrs.class() {
            Some(ObjectClass::SecretKey) => {}
            Some(ObjectClass::PrivateKey) => {
                return Err(Error::KeyUnextractable(
                    "private keys never leave the HSM in plaintext",
                ))
            }
            _ => return Err(Error::KeyTypeInconsistent),
        }
        if o.attrs.bool_or(AttrType::Sensitive, true) {
            return Err(Error::KeyUnextractable("key is sensitive (CKA_SENSITIVE is true)"));
        }
        if !o.attrs.bool_or(AttrType::Extractable, false) {
            return Err(Error::KeyUnextractable(
                "key is not extractable (CKA_EXTRACTABLE is false)",
            ));
        }
        self.check_export_state(&o)?;
        Self::check_export_metered(&o)?;
        let m = self.material(&o)?;
        Ok(SecretBytes::from_slice(m.expose_secret()))
    }

    /// Fills `out` with random bytes.
    pub(super) fn random_unaudited(&self, out: &mut [u8]) -> Result<()> {
        self.provider.random(out)
    }

    /// True if `h` names an object whose material is held in memory (session object).
    pub fn is_session_object(&self, h: u64) -> bool {
        self.obj(h).is_ok_and(|o| matches!(o.material, Material::Plain(_)) || o.session.is_some())
    }
}

fn spec_len(spec: KeySpec) -> usize {
    match spec {
        KeySpec::Aes { bytes } | KeySpec::GenericSecret { bytes } => bytes,
        _ => usize::MAX,
    }
}

/// The spec of a secret key to be made by unwrap/derive, from its template. A generic secret
/// without CKA_VALUE_LEN takes the unwrapped length (`bytes: 0` marks "whatever it is").
fn target_secret_spec(t: &Template, default_len: Option<usize>) -> Result<KeySpec> {
    let get = |a: AttrType| t.iter().find(|(k, _)| *k == a).map(|(_, v)| v);
    let class = match get(AttrType::Class) {
        Some(AttrValue::Ulong(c)) => ObjectClass::from_raw(*c),
        _ => Some(ObjectClass::SecretKey),
    };
    if class != Some(ObjectClass::SecretKey) {
        return Err(Error::NotSupported("only secret keys can be unwrapped or derived"));
    }
    let len = match get(AttrType::ValueLen) {
        Some(AttrValue::Ulong(l)) => Some(*l as usize),
        _ => None,
    };
    let kt = match get(AttrType::KeyType) {
        Some(AttrValue::Ulong(k)) => crate::attr::KeyType::from_raw(*k)
            .ok_or(Error::AttributeValueInvalid(AttrType::KeyType))?,
        _ => return Err(Error::TemplateIncomplete(AttrType::KeyType)),
    };
    match kt {
        crate::attr::KeyType::Aes => {
            // Unwrap without CKA_VALUE_LEN takes the unwrapped length (`bytes: 0`).
            let l = len.or(default_len).unwrap_or(0);
            if !matches!(l, 0 | 16 | 24 | 32) {
                return Err(Error::AttributeValueInvalid(AttrType::ValueLen));
            }
            Ok(KeySpec::Aes { bytes: l })
        }
        crate::attr::KeyType::GenericSecret | crate::attr::KeyType::Hkdf => {
            let l = len.or(default_len).unwrap_or(0);
            if l > 512 {
                return Err(Error::AttributeValueInvalid(AttrType::ValueLen));
            }
            Ok(KeySpec::GenericSecret { bytes: l })
        }
        _ => Err(Error::TemplateInconsistent("key type is not a secret key type")),
    }
}
