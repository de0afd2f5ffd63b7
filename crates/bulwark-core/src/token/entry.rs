//! The public, audited entry points for object management, key generation and cryptography.
//! Each one is a thin call through [`Token::audited`] (guard.rs) to its `*_unaudited` body; the
//! record names the object (uid and label) and the mechanism, never data or key material.

use super::guard::Call;
use super::{KeyRef, SessionId, Token, Usage};
use crate::attr::{AttrType, AttrValue};
use crate::error::Result;
use crate::mechanism::{KeyGenMechanism, Mechanism};
use crate::secret::SecretBytes;
use crate::store::Store;
use crate::template::Template;

impl<S: Store> Token<S> {
    // --- object management ------------------------------------------------------------------

    /// `C_FindObjects`: handles of every visible object matching `t`, token objects first.
    pub fn find(&self, t: &Template) -> Result<Vec<u64>> {
        self.audited(Call::new("find"), || self.find_unaudited(t))
    }

    /// `C_GetAttributeValue` for one attribute (see `attribute_unaudited`). Reading a secret
    /// component is audited as `read-secret-attribute`; plain attribute reads are not.
    pub fn attribute(&self, h: u64, t: AttrType) -> Result<AttrValue> {
        if t.is_secret_component() {
            self.audited(Call::new("read-secret-attribute").obj(h), || {
                self.attribute_unaudited(h, t)
            })
        } else {
            self.attribute_unaudited(h, t)
        }
    }

    /// `C_CreateObject`.
    pub fn create_object(&self, t: &Template, session: SessionId) -> Result<u64> {
        self.audited_new(Call::new("create-object").session(session), || {
            self.create_object_unaudited(t, session)
        })
    }

    /// `C_CopyObject`.
    pub fn copy_object(&self, h: u64, t: &Template, session: SessionId) -> Result<u64> {
        let c = Call::new("copy-object").session(session).obj(h);
        self.audited(c, || self.copy_object_unaudited(h, t, session))
    }

    /// `C_DestroyObject`.
    /// A token key is scheduled for destruction when the store's wait is not 0
    /// ([`Token::destroy_key_object`]): it is gone for PKCS#11 at once either way.
    pub fn destroy_object(&self, h: u64) -> Result<()> {
        self.destroy_key_object(h).map(|_| ())
    }

    /// Marks the wrapping keys labelled `label` CKA_TRUSTED or not (security officer only).
    pub fn set_trusted_by_label(&self, label: &str, trusted: bool) -> Result<u32> {
        let c =
            Call { described: Some((String::new(), label.to_owned())), ..Call::new("set-trusted") };
        let detail = if trusted { "trusted" } else { "untrusted" };
        let r = self.precheck(&c).and_then(|()| self.set_trusted_unaudited(label, trusted));
        self.finish(&c, r, detail.to_owned())
    }

    /// `C_SetAttributeValue`.
    pub fn set_attributes(&self, h: u64, changes: &Template) -> Result<()> {
        self.audited(Call::new("set-attributes").obj(h), || {
            self.set_attributes_unaudited(h, changes)
        })
    }

    /// Like [`Token::audited`] for operations that create one object: the record names it.
    fn audited_new(&self, mut c: Call, f: impl FnOnce() -> Result<u64>) -> Result<u64> {
        let r = self.precheck(&c).and_then(|()| f());
        if let Ok(h) = &r {
            let _ = self.obj(*h);
            c.handle = Some(*h);
        }
        self.finish(&c, r, String::new())
    }

    /// Like [`Token::audited`] for key uses: the body gets the store change counter that the
    /// pre-check read, so the key lookup does not read it again (one check per call).
    #[allow(clippy::needless_pass_by_value)] // as `audited`
    fn audited_key<T>(&self, c: Call, f: impl FnOnce(u64) -> Result<T>) -> Result<T> {
        let r = self.precheck_at(&c).and_then(f);
        self.finish(&c, r, String::new())
    }

    // --- keys and cryptography --------------------------------------------------------------

    /// Checks that key `h` may be used for `usage` with `mech` and returns it parsed, with its
    /// `CKA_ALWAYS_AUTHENTICATE` from the same record (what `C_SignInit` / `C_DecryptInit` need,
    /// without a second lookup); the record is `<usage>-init`. Only [`crate::hsm::Hsm::prepare`]
    /// hands the key out, inside a gated prepared key.
    pub(crate) fn key_for_auth(
        &self,
        h: u64,
        usage: Usage,
        mech: &Mechanism,
    ) -> Result<(KeyRef, bool)> {
        let op = match usage {
            Usage::Sign => "sign-init",
            Usage::Verify => "verify-init",
            Usage::Encrypt => "encrypt-init",
            Usage::Decrypt => "decrypt-init",
            Usage::Wrap => "wrap-init",
            Usage::Unwrap => "unwrap-init",
            Usage::Derive => "derive-init",
            Usage::Encapsulate => "encapsulate-init",
            Usage::Decapsulate => "decapsulate-init",
        };
        self.audited_key(Call::new(op).obj(h).mech(mech.ck_type()), |seen| {
            self.key_for_at(h, usage, mech, Some(seen), 0)
        })
    }

    /// `C_GenerateKey`.
    pub fn generate_key(
        &self,
        mech: KeyGenMechanism,
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        let c = Call::new("generate-key").session(session).mech(mech.ck_type());
        self.audited_new(c, || self.generate_key_unaudited(mech, t, session))
    }

    /// `C_GenerateKeyPair`: returns (public handle, private handle). The record names the
    /// private key.
    pub fn generate_key_pair(
        &self,
        mech: KeyGenMechanism,
        pub_t: &Template,
        priv_t: &Template,
        session: SessionId,
    ) -> Result<(u64, u64)> {
        let mut c = Call::new("generate-key-pair").session(session).mech(mech.ck_type());
        let r = self
            .precheck(&c)
            .and_then(|()| self.generate_key_pair_unaudited(mech, pub_t, priv_t, session));
        if let Ok((_, h)) = &r {
            let _ = self.obj(*h);
            c.handle = Some(*h);
        }
        self.finish(&c, r, String::new())
    }

    /// Signs with key `h`.
    pub fn sign(&self, h: u64, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        self.audited_key(Call::new("sign").obj(h).mech(mech.ck_type()), |seen| {
            self.sign_unaudited(h, mech, data, Some(seen))
        })
    }

    /// Verifies with key `h` (a public key, or an HMAC secret key).
    pub fn verify(&self, h: u64, mech: &Mechanism, data: &[u8], sig: &[u8]) -> Result<()> {
        self.audited_key(Call::new("verify").obj(h).mech(mech.ck_type()), |seen| {
            self.verify_unaudited(h, mech, data, sig, Some(seen))
        })
    }

    /// Encrypts with key `h`.
    pub fn encrypt(&self, h: u64, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>> {
        self.audited_key(Call::new("encrypt").obj(h).mech(mech.ck_type()), |seen| {
            self.encrypt_unaudited(h, mech, data, Some(seen))
        })
    }

    /// Decrypts with key `h`.
    pub fn decrypt(&self, h: u64, mech: &Mechanism, data: &[u8]) -> Result<SecretBytes> {
        self.audited_key(Call::new("decrypt").obj(h).mech(mech.ck_type()), |seen| {
            self.decrypt_unaudited(h, mech, data, Some(seen))
        })
    }

    /// `C_WrapKey`: wraps key `target` under `wrapping` (the record names the target; the
    /// detail names the wrapping key).
    pub fn wrap_key(&self, wrapping: u64, mech: &Mechanism, target: u64) -> Result<Vec<u8>> {
        let c = Call::new("wrap-key").obj(target).mech(mech.ck_type());
        let r = self.precheck(&c).and_then(|()| self.wrap_key_unaudited(wrapping, mech, target));
        let detail = format!("wrapping key {}", self.describe(wrapping).0);
        self.finish(&c, r, detail)
    }

    /// `C_UnwrapKey`: unwraps a secret key described by `t` under `unwrapping`.
    pub fn unwrap_key(
        &self,
        unwrapping: u64,
        mech: &Mechanism,
        wrapped: &[u8],
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        let c = Call::new("unwrap-key").session(session).mech(mech.ck_type());
        let detail = format!("unwrapping key {}", self.describe(unwrapping).0);
        let mut c = c;
        let r = self
            .precheck(&c)
            .and_then(|()| self.unwrap_key_unaudited(unwrapping, mech, wrapped, t, session));
        if let Ok(h) = &r {
            let _ = self.obj(*h);
            c.handle = Some(*h);
        }
        self.finish(&c, r, detail)
    }

    /// `C_DeriveKey`: derives a secret key described by `t` from `base`.
    pub fn derive_key(
        &self,
        base: u64,
        mech: &Mechanism,
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        let mut c = Call::new("derive-key").session(session).mech(mech.ck_type());
        let r = self.precheck(&c).and_then(|()| self.derive_key_unaudited(base, mech, t, session));
        let detail = format!("base key {}", self.describe(base).0);
        if let Ok(h) = &r {
            let _ = self.obj(*h);
            c.handle = Some(*h);
        }
        self.finish(&c, r, detail)
    }

    /// The value of a secret key that is neither sensitive nor unextractable.
    pub fn export_secret(&self, h: u64) -> Result<SecretBytes> {
        self.audited(Call::new("export-secret").obj(h), || self.export_secret_unaudited(h))
    }

    /// Fills `out` with random bytes.
    pub fn random(&self, out: &mut [u8]) -> Result<()> {
        let n = out.len();
        let c = Call::new("random");
        let r = self.precheck(&c).and_then(|()| self.random_unaudited(out));
        self.finish(&c, r, format!("{n} bytes"))
    }
}
