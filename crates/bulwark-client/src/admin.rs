//! Calls beyond the basic key operations: role changes, zeroization, the audit log, batches.

use bulwark_proto::v1 as pb;

use crate::{Client, Result};

impl Client {
    /// Changes a user's role (security officer; quorum approvals when the HSM requires them).
    pub fn set_user_role(&self, r: pb::SetUserRoleRequest) -> Result<()> {
        let mut c = self.inner.clone();
        self.rt.block_on(c.set_user_role(self.req(r)))?;
        Ok(())
    }

    /// Zeroizes the HSM (security officer; quorum approvals when the HSM requires them).
    /// Irreversible.
    pub fn zeroize(&self, r: pb::ZeroizeRequest) -> Result<()> {
        let mut c = self.inner.clone();
        self.rt.block_on(c.zeroize(self.req(r)))?;
        Ok(())
    }

    /// The audit log from `since` as JSON lines ending with a fresh signed checkpoint
    /// (auditor or security officer).
    pub fn audit_export(&self, since: u64) -> Result<Vec<String>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::AuditExportRequest { since });
        Ok(self.rt.block_on(c.audit_export(r))?.into_inner().lines)
    }

    /// The audit log as a stream of JSON lines, each passed to `line` as it arrives (auditor or
    /// security officer): constant memory whatever the log's size. Returns the line count.
    pub fn audit_export_each(
        &self,
        since: u64,
        mut line: impl FnMut(&str) -> std::io::Result<()>,
    ) -> Result<u64> {
        let mut c = self.inner.clone();
        let r = self.req(pb::AuditExportRequest { since });
        self.rt.block_on(async {
            let mut stream = c.audit_export_stream(r).await?.into_inner();
            let mut n = 0u64;
            while let Some(chunk) = stream.message().await? {
                for l in &chunk.lines {
                    line(l).map_err(|e| {
                        crate::ClientError::Config(format!("cannot write the export: {e}"))
                    })?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }

    /// The audit signing key, raw Ed25519 (auditor or security officer).
    pub fn audit_public_key(&self) -> Result<Vec<u8>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::AuditPublicKeyRequest {});
        Ok(self.rt.block_on(c.audit_public_key(r))?.into_inner().public_key)
    }
}

impl Client {
    /// Many AES-GCM encryptions (BWK1 format) with one key in one request.
    pub fn batch_encrypt(&self, key: &str, plaintexts: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::BatchEncryptRequest { key: key.into(), plaintexts });
        Ok(self.rt.block_on(c.batch_encrypt(r))?.into_inner().ciphertexts)
    }
}

impl Client {
    /// Clears an active tamper alarm (security officer).
    pub fn clear_tamper(&self) -> Result<()> {
        let mut c = self.inner.clone();
        self.rt.block_on(c.clear_tamper(self.req(pb::ClearTamperRequest {})))?;
        Ok(())
    }
}

impl Client {
    /// Exports a key wrapped under another key (crypto officer; quorum approvals when the HSM
    /// requires them).
    pub fn export_key(&self, r: pb::ExportKeyRequest) -> Result<pb::ExportKeyResponse> {
        let mut c = self.inner.clone();
        Ok(self.rt.block_on(c.export_key(self.req(r)))?.into_inner())
    }
}
