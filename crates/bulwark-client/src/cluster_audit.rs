//! The cluster audit export (cluster mode, docs/audit.md "Cluster audit").

use bulwark_proto::v1 as pb;

use crate::{Client, Result};

impl Client {
    /// Every node's audit records and the signed global checkpoint chain, as JSON lines passed
    /// to `line` as they arrive (auditor or security officer). Returns the line count.
    pub fn audit_export_cluster_each(
        &self,
        mut line: impl FnMut(&str) -> std::io::Result<()>,
    ) -> Result<u64> {
        let mut c = self.inner.clone();
        let r = self.req(pb::AuditExportClusterRequest {});
        self.rt.block_on(async {
            let mut stream = c.audit_export_cluster(r).await?.into_inner();
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
}
