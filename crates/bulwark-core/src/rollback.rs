//! The anti-rollback high-water mark: the highest store generation this host has seen, kept
//! outside the store so that replacing the store file with an older copy is noticed by the next
//! process that opens it.
//!
//! The mark lives in `$BULWARK_STATE_DIR`, else `$XDG_STATE_HOME/bulwark`, else
//! `~/.local/state/bulwark`, one file per store id. It holds no secret. An attacker who can roll
//! back both the store and this directory defeats it; keep the state directory on a different
//! volume from the store where that matters (the daemon can also pin it in its own config).

use std::path::PathBuf;

/// The directory holding high-water marks, if one can be determined.
pub fn state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("BULWARK_STATE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("bulwark"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/bulwark"))
}

fn mark_path(store_uid: &[u8; 16]) -> Option<PathBuf> {
    state_dir().map(|d| d.join(format!("{}.generation", hex::encode(store_uid))))
}

/// The highest generation recorded for this store (0 when none).
pub fn load(store_uid: &[u8; 16]) -> u64 {
    mark_path(store_uid)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Records `generation` if it is higher than the recorded one. Best effort: a read-only home
/// directory must not make the token unusable, so failures are logged, not returned.
pub fn record(store_uid: &[u8; 16], generation: u64) {
    let Some(path) = mark_path(store_uid) else { return };
    if load(store_uid) >= generation {
        return;
    }
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, generation.to_string())?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::warn!(error = %e, "cannot record the store generation high-water mark");
    }
}
