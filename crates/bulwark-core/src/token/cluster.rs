//! What a cluster node (bulwarkd on a shared PostgreSQL store, docs/cluster.md) asks of the
//! kernel beyond the calls it serves.

use crate::store::Store;
use crate::{Error, Result};

use super::{guard::Call, outbox, Token};

impl<S: Store> Token<S> {
    /// Brings this token up to date with the store now, as the start of any call would: reads
    /// the change counter, drops the cached objects if another connection committed, verifies
    /// the whole store again after a foreign commit (when unsealed), re-reads the alarm and
    /// zeroized state, and makes every prepared key pass the full gate again. A cluster node
    /// calls it when told of another node's commit, before acknowledging it. Nothing is
    /// recorded unless it fails (an integrity failure applies the tamper response as usual).
    ///
    /// An active tamper alarm or a zeroized store is not a failure here: the token is current,
    /// and refuses key service by itself.
    pub fn catch_up(&self) -> Result<()> {
        let c = Call::new("catch-up");
        let r = self.precheck_at(&c).map(|change| {
            self.sync_to(change);
            self.bump_epoch();
        });
        match r {
            Ok(()) => {
                outbox::end();
                Ok(())
            }
            Err(Error::Zeroized | Error::TamperAlarm(_)) => {
                outbox::end();
                self.bump_epoch();
                Ok(())
            }
            Err(e) => self.finish(&c, Err(e), String::new()),
        }
    }
}
