//! Cluster status (cluster mode, docs/cluster.md).

use bulwark_proto::v1 as pb;

use crate::{Client, Result};

impl Client {
    /// The cluster as the node that answers sees it: nodes, leases, applied sequence numbers.
    pub fn cluster_status(&self) -> Result<pb::ClusterStatusResponse> {
        let mut c = self.inner.clone();
        let r = self.req(pb::ClusterStatusRequest {});
        Ok(self.rt.block_on(c.cluster_status(r))?.into_inner())
    }
}
