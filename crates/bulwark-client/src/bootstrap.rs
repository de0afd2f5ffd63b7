//! Remote initialization: the bootstrap service of a `bulwarkd` that has no store yet
//! (`proto/bulwark/bootstrap/v1/bootstrap.proto`).
//!
//! The share files `initialize` returns are unencrypted: they live only in zeroizing buffers
//! here, and the caller encrypts each to its custodian before it writes anything.

use bulwark_proto::bootstrap::v1 as pb;
use bulwark_proto::bootstrap::v1::bootstrap_client::BootstrapClient;
use zeroize::Zeroizing;

use crate::{Client, Result};

/// What `Initialize` returned.
pub struct Initialized {
    /// The new store's id (hex).
    pub store_id: String,
    /// The N share files (JSON, unencrypted), share 1 to N.
    pub share_files: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Initialized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initialized")
            .field("store_id", &self.store_id)
            .field("share_files", &self.share_files.len())
            .finish()
    }
}

impl Client {
    /// Whether the HSM is initialized (any daemon that knows the bootstrap service answers;
    /// an older one answers UNIMPLEMENTED).
    pub fn bootstrap_status(&self) -> Result<pb::StatusResponse> {
        let mut c = BootstrapClient::new(self.channel.clone());
        Ok(self.rt.block_on(c.status(pb::StatusRequest {}))?.into_inner())
    }

    /// Initializes an HSM that has no store: creates the quorum store and the first security
    /// officer, and returns the share files. ALREADY_EXISTS when the HSM is initialized.
    pub fn initialize(&self, req: pb::InitializeRequest) -> Result<Initialized> {
        let mut c = BootstrapClient::new(self.channel.clone());
        let r = self.rt.block_on(c.initialize(req))?.into_inner();
        Ok(Initialized {
            store_id: r.store_id,
            share_files: r.share_files.into_iter().map(Zeroizing::new).collect(),
        })
    }
}
