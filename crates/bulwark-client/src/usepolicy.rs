//! Usage policy per key (docs/lifecycle.md, "Usage policy"): show and set a key's policy, the
//! store's use approvers. Per-use quorum approvals need no call of their own: set for the
//! thread with `bulwark_core::token::with_use_approvals`, every request carries them.

use bulwark_proto::v1 as pb;

use crate::{Client, Result};

impl Client {
    /// The usage policy and use count of the key labelled `label`, with the ids a per-use
    /// approval request names.
    pub fn key_policy(&self, label: &str) -> Result<pb::KeyPolicyResponse> {
        let mut c = self.inner.clone();
        // `..Default::default()`: KeyName grows fields (key versions) that default here.
        #[allow(clippy::needless_update)]
        let r = self.req(pb::KeyName { label: label.into(), ..Default::default() });
        Ok(self.rt.block_on(c.key_policy(r))?.into_inner())
    }

    /// Sets the usage policy of the key labelled `label` (a crypto officer: any policy; a user
    /// of the key: only a tighter one).
    pub fn set_key_policy(&self, label: &str, p: pb::KeyPolicy) -> Result<pb::KeyPolicyResponse> {
        let mut c = self.inner.clone();
        let r = self.req(pb::SetKeyPolicyRequest { label: label.into(), policy: Some(p) });
        Ok(self.rt.block_on(c.set_key_policy(r))?.into_inner())
    }

    /// The store's use approvers.
    pub fn use_approvers(&self) -> Result<Vec<pb::UseApprover>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::UseApproversRequest {});
        Ok(self.rt.block_on(c.use_approvers(r))?.into_inner().approvers)
    }

    /// Replaces the store's use approvers (security officer; quorum approvals when the HSM
    /// requires them).
    pub fn set_use_approvers(&self, r: pb::SetUseApproversRequest) -> Result<()> {
        let mut c = self.inner.clone();
        self.rt.block_on(c.set_use_approvers(self.req(r)))?;
        Ok(())
    }

    /// Imports a wrapped secret key (BYOK; crypto officer).
    pub fn import_wrapped_key(&self, r: pb::ImportWrappedKeyRequest) -> Result<pb::KeyInfo> {
        let mut c = self.inner.clone();
        Ok(self.rt.block_on(c.import_wrapped_key(self.req(r)))?.into_inner())
    }
}
