//! Key versions and rotation over the network API (docs/lifecycle.md): the `RotateKey`,
//! `KeyVersions` and `SetKeyRotation` RPCs, and the key operations that name a version
//! (`key_version` 0: the current one).

use zeroize::Zeroizing;

use super::{pb, Client, Result, SignatureFormat};

impl Client {
    /// Makes a new version of the key labelled `label` (crypto officer).
    pub fn rotate_key(&self, label: &str) -> Result<pb::KeyVersionsResponse> {
        let mut c = self.inner.clone();
        let r = self.req(pb::KeyName { label: label.into(), key_version: 0 });
        Ok(self.rt.block_on(c.rotate_key(r))?.into_inner())
    }

    /// Every version of the key labelled `label`, and its public-key history bundle.
    pub fn key_versions(&self, label: &str) -> Result<pb::KeyVersionsResponse> {
        let mut c = self.inner.clone();
        let r = self.req(pb::KeyName { label: label.into(), key_version: 0 });
        Ok(self.rt.block_on(c.key_versions(r))?.into_inner())
    }

    /// Sets (`Some(seconds)`) or turns off (`None`) automatic rotation (crypto officer).
    pub fn set_rotation_period(
        &self,
        label: &str,
        period: Option<u64>,
    ) -> Result<pb::KeyVersionsResponse> {
        self.set_key_rotation(pb::SetKeyRotationRequest {
            label: label.into(),
            rotation_period: period.unwrap_or(0),
            rotation_off: period.is_none(),
            min_decrypt_version: 0,
        })
    }

    /// Raises the minimum decryption version of a key (crypto officer).
    pub fn set_min_decrypt_version(
        &self,
        label: &str,
        version: u64,
    ) -> Result<pb::KeyVersionsResponse> {
        self.set_key_rotation(pb::SetKeyRotationRequest {
            label: label.into(),
            rotation_period: 0,
            rotation_off: false,
            min_decrypt_version: version,
        })
    }

    fn set_key_rotation(&self, r: pb::SetKeyRotationRequest) -> Result<pb::KeyVersionsResponse> {
        let mut c = self.inner.clone();
        let r = self.req(r);
        Ok(self.rt.block_on(c.set_key_rotation(r))?.into_inner())
    }

    /// The public key (SPKI PEM) of version `version` (0: the current one).
    pub fn public_key_version(&self, label: &str, version: u64) -> Result<String> {
        let mut c = self.inner.clone();
        let r = self.req(pb::KeyName { label: label.into(), key_version: version });
        Ok(self.rt.block_on(c.public_key(r))?.into_inner().pem)
    }

    /// Signs with version `version` (0: the current one); ECDSA as DER.
    pub fn sign_version(
        &self,
        key: &str,
        version: u64,
        mechanism: &str,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::SignRequest {
            key: key.into(),
            mechanism: mechanism.into(),
            data: data.to_vec(),
            format: SignatureFormat::Der.into(),
            key_version: version,
        });
        Ok(self.rt.block_on(c.sign(r))?.into_inner().signature)
    }

    /// Verifies (ECDSA as DER) with version `version` (0: the current one): whether it is
    /// valid, and the key's state when it is not active.
    pub fn verify_version(
        &self,
        key: &str,
        version: u64,
        mechanism: &str,
        data: &[u8],
        sig: &[u8],
    ) -> Result<(bool, String)> {
        let mut c = self.inner.clone();
        let r = self.req(pb::VerifyRequest {
            key: key.into(),
            mechanism: mechanism.into(),
            data: data.to_vec(),
            signature: sig.to_vec(),
            format: SignatureFormat::Der.into(),
            key_version: version,
        });
        let r = self.rt.block_on(c.verify(r))?.into_inner();
        Ok((r.valid, r.key_state))
    }

    /// Encrypts with version `version` (0: the current one) into a BWK2 envelope.
    pub fn encrypt_version(&self, key: &str, version: u64, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::EncryptRequest {
            key: key.into(),
            plaintext: plaintext.to_vec(),
            key_version: version,
        });
        Ok(self.rt.block_on(c.encrypt(r))?.into_inner().ciphertext)
    }

    /// Decrypts an envelope with the version it names (`version`: only for a BWK1 envelope,
    /// which names none); the plaintext and the key's state when it is not active.
    pub fn decrypt_version(
        &self,
        key: &str,
        version: u64,
        ciphertext: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, String)> {
        let mut c = self.inner.clone();
        let r = self.req(pb::DecryptRequest {
            key: key.into(),
            ciphertext: ciphertext.to_vec(),
            key_version: version,
        });
        let r = self.rt.block_on(c.decrypt(r))?.into_inner();
        Ok((Zeroizing::new(r.plaintext), r.key_state))
    }
}
