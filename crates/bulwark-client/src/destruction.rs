//! Scheduled destruction calls (docs/lifecycle.md): destroy with its schedule, cancel, the
//! list of scheduled keys, the store's destruction settings.

use bulwark_proto::v1 as pb;

use crate::{Client, Result};

impl Client {
    /// Destroys the key objects labelled `label`, or schedules their destruction when the
    /// HSM's wait is not 0: (objects, Unix seconds of the shredding or 0 for at once).
    pub fn destroy_key_scheduled(&self, label: &str) -> Result<(u32, u64)> {
        let mut c = self.inner.clone();
        let r = self.req(pb::KeyName { label: label.into(), key_version: 0 });
        let r = self.rt.block_on(c.destroy_key(r))?.into_inner();
        Ok((r.destroyed, r.scheduled_for))
    }

    /// Cancels the scheduled destruction of the keys labelled `label` (crypto officer).
    pub fn cancel_destroy_key(&self, label: &str) -> Result<pb::CancelDestroyKeyResponse> {
        let mut c = self.inner.clone();
        let r = self.req(pb::KeyName { label: label.into(), key_version: 0 });
        Ok(self.rt.block_on(c.cancel_destroy_key(r))?.into_inner())
    }

    /// Keys with a scheduled destruction (every pending one, or every one labelled `label`).
    pub fn list_scheduled_keys(&self, label: Option<&str>) -> Result<Vec<pb::ScheduledKey>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::ListScheduledKeysRequest { label: label.unwrap_or("").into() });
        Ok(self.rt.block_on(c.list_scheduled_keys(r))?.into_inner().keys)
    }

    /// The HSM's destruction wait and purge protection.
    pub fn destroy_settings(&self) -> Result<pb::DestroySettings> {
        let mut c = self.inner.clone();
        let r = self.req(pb::GetDestroySettingsRequest {});
        Ok(self.rt.block_on(c.get_destroy_settings(r))?.into_inner())
    }

    /// Changes the destruction wait and/or turns purge protection on (security officer).
    pub fn set_destroy_settings(
        &self,
        r: pb::SetDestroySettingsRequest,
    ) -> Result<pb::DestroySettings> {
        let mut c = self.inner.clone();
        Ok(self.rt.block_on(c.set_destroy_settings(self.req(r)))?.into_inner())
    }
}
