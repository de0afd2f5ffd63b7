//! Object functions: create, copy, destroy, attributes, search, and key management
//! (generate, generate pair, wrap, unwrap, derive).
//!
//! This layer adds the session rules the core cannot see: a read-only session may not create,
//! change or destroy token objects (`CKR_SESSION_READ_ONLY`), and handle errors name the
//! argument that was wrong (`CKR_KEY_HANDLE_INVALID`, `CKR_WRAPPING_KEY_HANDLE_INVALID`...).

use std::collections::VecDeque;

use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::template::Template;
use bulwark_core::Error as CoreError;

use super::ops::key_handle;
use super::session::Session;
use super::{lock, Module};
use crate::error::{Error, Result};

fn wants_token(t: &Template) -> bool {
    t.iter().any(|(k, v)| *k == AttrType::Token && *v == AttrValue::Bool(true))
}

fn check_rw_for(s: &Session, t: &Template) -> Result<()> {
    if !s.rw && wants_token(t) {
        return Err(Error::SessionReadOnly);
    }
    Ok(())
}

fn check_rw_object(s: &Session, h: u64) -> Result<()> {
    if !s.rw && matches!(s.hsm.attribute(h, AttrType::Token)?, AttrValue::Bool(true)) {
        return Err(Error::SessionReadOnly);
    }
    Ok(())
}

impl Module {
    /// `C_CreateObject`.
    pub fn create_object(&self, sh: u64, t: &Template) -> Result<u64> {
        let s = self.session(sh)?;
        check_rw_for(&s, t)?;
        Ok(s.hsm.create_object(t, sh)?)
    }

    /// `C_CopyObject`.
    pub fn copy_object(&self, sh: u64, h: u64, t: &Template) -> Result<u64> {
        let s = self.session(sh)?;
        let token_src = matches!(s.hsm.attribute(h, AttrType::Token)?, AttrValue::Bool(true));
        let to_token = t
            .iter()
            .find(|(k, _)| *k == AttrType::Token)
            .map_or(token_src, |(_, v)| *v == AttrValue::Bool(true));
        if !s.rw && to_token {
            return Err(Error::SessionReadOnly);
        }
        Ok(s.hsm.copy_object(h, t, sh)?)
    }

    /// `C_DestroyObject`.
    pub fn destroy_object(&self, sh: u64, h: u64) -> Result<()> {
        let s = self.session(sh)?;
        check_rw_object(&s, h)?;
        Ok(s.hsm.destroy_object(h)?)
    }

    /// `C_GetObjectSize`: not meaningful for this token.
    pub fn object_size(&self, sh: u64, h: u64) -> Result<u64> {
        let s = self.session(sh)?;
        s.hsm.attributes(h)?;
        Ok(ck_unavailable())
    }

    /// `C_GetAttributeValue`: one result per requested type; an unknown type is
    /// `CKR_ATTRIBUTE_TYPE_INVALID` for that attribute only.
    pub fn attribute_values(&self, sh: u64, h: u64, types: &[u64]) -> Result<Vec<Result<Vec<u8>>>> {
        let s = self.session(sh)?;
        // An invalid handle fails the whole call.
        s.hsm.attribute(h, AttrType::Class)?;
        Ok(types
            .iter()
            .map(|&raw| {
                let t = AttrType::from_raw(raw)
                    .ok_or(Error::Core(CoreError::AttributeTypeInvalid(raw)))?;
                Ok(s.hsm.attribute(h, t)?.to_raw())
            })
            .collect())
    }

    /// `C_SetAttributeValue`.
    pub fn set_attributes(&self, sh: u64, h: u64, t: &Template) -> Result<()> {
        let s = self.session(sh)?;
        check_rw_object(&s, h)?;
        Ok(s.hsm.set_attributes(h, t)?)
    }

    /// `C_FindObjectsInit`.
    pub fn find_init(&self, sh: u64, t: &Template) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        if st.find.is_some() {
            return Err(Error::OperationActive);
        }
        let found = s.hsm.find(t)?;
        st.find = Some(VecDeque::from(found));
        Ok(())
    }

    /// `C_FindObjects`: up to `max` more handles.
    pub fn find_next(&self, sh: u64, max: usize) -> Result<Vec<u64>> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let q = st.find.as_mut().ok_or(Error::OperationNotInitialized)?;
        let n = max.min(q.len());
        Ok(q.drain(..n).collect())
    }

    /// `C_FindObjectsFinal`.
    pub fn find_final(&self, sh: u64) -> Result<()> {
        let s = self.session(sh)?;
        lock(&s.state).find.take().ok_or(Error::OperationNotInitialized)?;
        Ok(())
    }

    /// `C_GenerateKey`.
    pub fn generate_key(&self, sh: u64, mech: KeyGenMechanism, t: &Template) -> Result<u64> {
        let s = self.session(sh)?;
        check_rw_for(&s, t)?;
        Ok(s.hsm.generate_key(mech, t, sh)?)
    }

    /// `C_GenerateKeyPair`: returns (public, private).
    pub fn generate_key_pair(
        &self,
        sh: u64,
        mech: KeyGenMechanism,
        pub_t: &Template,
        priv_t: &Template,
    ) -> Result<(u64, u64)> {
        let s = self.session(sh)?;
        check_rw_for(&s, pub_t)?;
        check_rw_for(&s, priv_t)?;
        Ok(s.hsm.generate_key_pair(mech, pub_t, priv_t, sh)?)
    }

    /// `C_WrapKey`. The wrapped length is only known after wrapping, so a length query wraps.
    pub fn wrap_key(
        &self,
        sh: u64,
        mech: &Mechanism,
        wrapping: u64,
        target: u64,
    ) -> Result<Vec<u8>> {
        let s = self.session(sh)?;
        s.hsm.attributes(wrapping).map_err(|e| match e {
            CoreError::ObjectHandleInvalid => Error::WrappingKeyHandleInvalid,
            e => Error::Core(e),
        })?;
        s.hsm.attributes(target).map_err(key_handle)?;
        Ok(s.hsm.wrap_key(wrapping, mech, target)?)
    }

    /// `C_UnwrapKey`.
    pub fn unwrap_key(
        &self,
        sh: u64,
        mech: &Mechanism,
        unwrapping: u64,
        wrapped: &[u8],
        t: &Template,
    ) -> Result<u64> {
        let s = self.session(sh)?;
        check_rw_for(&s, t)?;
        s.hsm.attributes(unwrapping).map_err(|e| match e {
            CoreError::ObjectHandleInvalid => Error::UnwrappingKeyHandleInvalid,
            e => Error::Core(e),
        })?;
        Ok(s.hsm.unwrap_key(unwrapping, mech, wrapped, t, sh)?)
    }

    /// `C_DeriveKey`.
    pub fn derive_key(&self, sh: u64, mech: &Mechanism, base: u64, t: &Template) -> Result<u64> {
        let s = self.session(sh)?;
        check_rw_for(&s, t)?;
        s.hsm.attributes(base).map_err(key_handle)?;
        Ok(s.hsm.derive_key(base, mech, t, sh)?)
    }
}

/// Creates the secret-key object holding a KEM shared secret, as described by the caller's
/// template (class and key type default to a generic secret). The secret is wiped from the
/// template copy afterwards.
fn store_shared_secret(
    s: &Session,
    sh: u64,
    t: &Template,
    secret: &bulwark_core::secret::SecretBytes,
) -> Result<u64> {
    let mut full: Vec<(AttrType, AttrValue)> =
        t.iter().filter(|(k, _)| *k != AttrType::Value).cloned().collect();
    if !full.iter().any(|(k, _)| *k == AttrType::Class) {
        full.push((AttrType::Class, AttrValue::Ulong(cryptoki_sys::CKO_SECRET_KEY)));
    }
    if !full.iter().any(|(k, _)| *k == AttrType::KeyType) {
        full.push((AttrType::KeyType, AttrValue::Ulong(cryptoki_sys::CKK_GENERIC_SECRET)));
    }
    full.push((AttrType::Value, AttrValue::Bytes(secret.expose_secret().to_vec())));
    let r = s.hsm.create_object(&full, sh);
    for (_, v) in &mut full {
        if let AttrValue::Bytes(b) = v {
            zeroize::Zeroize::zeroize(b);
        }
    }
    Ok(r?)
}

impl Module {
    /// `C_EncapsulateKey` (3.2): returns the ciphertext and, unless the caller only asked for
    /// its length (`cap == None`) or gave too small a buffer, the handle of the new key.
    pub fn encapsulate_key(
        &self,
        sh: u64,
        mech: &Mechanism,
        key: u64,
        t: &Template,
        cap: Option<usize>,
    ) -> Result<(Vec<u8>, Option<u64>)> {
        let s = self.session(sh)?;
        check_rw_for(&s, t)?;
        let k = s
            .hsm
            .prepare(key, bulwark_core::token::Usage::Encapsulate, mech)
            .map_err(key_handle)?;
        let (ct, ss) = k.encapsulate()?;
        match cap {
            None => Ok((ct, None)),
            Some(c) if c < ct.len() => Err(Error::BufferTooSmall(ct.len())),
            Some(_) => {
                let h = store_shared_secret(&s, sh, t, &ss)?;
                Ok((ct, Some(h)))
            }
        }
    }

    /// `C_DecapsulateKey` (3.2).
    pub fn decapsulate_key(
        &self,
        sh: u64,
        mech: &Mechanism,
        key: u64,
        t: &Template,
        ciphertext: &[u8],
    ) -> Result<u64> {
        let s = self.session(sh)?;
        check_rw_for(&s, t)?;
        let k = s
            .hsm
            .prepare(key, bulwark_core::token::Usage::Decapsulate, mech)
            .map_err(key_handle)?;
        let ss = k.decapsulate(ciphertext)?;
        store_shared_secret(&s, sh, t, &ss)
    }
}

fn ck_unavailable() -> u64 {
    cryptoki_sys::CK_UNAVAILABLE_INFORMATION
}
