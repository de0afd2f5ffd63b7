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
        let r = self.req(pb::BatchEncryptRequest { key: key.into(), plaintexts, key_version: 0 });
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

impl Client {
    /// Takes a backup of the whole HSM (security officer; quorum approvals when required) and
    /// hands each part of the file to `part`, with the object count the first part announces.
    /// Returns the number of bytes received.
    pub fn backup_each(
        &self,
        r: pb::BackupRequest,
        mut part: impl FnMut(&[u8], u64) -> std::io::Result<()>,
    ) -> Result<u64> {
        let mut c = self.inner.clone();
        let r = self.req(r);
        self.rt.block_on(async {
            let mut stream = c.backup(r).await?.into_inner();
            let mut bytes = 0u64;
            while let Some(m) = stream.message().await? {
                bytes += m.data.len() as u64;
                part(&m.data, m.objects).map_err(|e| {
                    crate::ClientError::Config(format!("cannot write the backup: {e}"))
                })?;
            }
            Ok(bytes)
        })
    }

    /// Restores a backup file into the HSM (security officer; quorum approvals when required):
    /// `first` carries the passphrase and approvals, the file follows in 1 MiB messages.
    pub fn restore_from(
        &self,
        first: pb::RestoreChunk,
        file: std::fs::File,
    ) -> Result<pb::RestoreResponse> {
        const CHUNK: usize = 1 << 20;
        let mut c = self.inner.clone();
        self.rt.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::RestoreChunk>(4);
            let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Read as _;
                let mut f = std::io::BufReader::new(file);
                let mut msg = first;
                loop {
                    let mut data = vec![0u8; CHUNK];
                    let mut n = 0;
                    while n < CHUNK {
                        match f.read(&mut data[n..])? {
                            0 => break,
                            k => n += k,
                        }
                    }
                    data.truncate(n);
                    msg.data = data;
                    if tx.blocking_send(msg).is_err() || n < CHUNK {
                        return Ok(());
                    }
                    msg = pb::RestoreChunk::default();
                }
            });
            let r = self.req(tokio_stream::wrappers::ReceiverStream::new(rx));
            let resp = c.restore(r).await;
            reader
                .await
                .map_err(|_| crate::ClientError::Config("backup reader failed".into()))?
                .map_err(|e| crate::ClientError::Config(format!("cannot read the backup: {e}")))?;
            Ok(resp?.into_inner())
        })
    }
}
