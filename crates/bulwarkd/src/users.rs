//! Daemon users are principals of the security kernel: they live in the store, under the
//! master key and the store's anti-rollback generation (`bulwark_core::token` users, grants,
//! login state), never in a side file. This module only re-exports the names the daemon uses.

pub use bulwark_core::kernel::{check_user_name as check_name, Role};
pub use bulwark_core::token::MAX_LOGIN_FAILURES;

/// The user file of daemons before users moved into the store. If a configuration still names
/// one that exists, the daemon says so instead of silently ignoring the users in it.
pub fn legacy_user_file_notice(path: &std::path::Path) -> Option<String> {
    path.exists().then(|| {
        format!(
            "{} is no longer read: users live in the store now (create them with `bulwark user add` \
             as the security officer, or at init)",
            path.display()
        )
    })
}
