//! The anti-rollback high-water mark: the highest store generation this host has seen, kept
//! outside the store so that replacing the store file with an older copy is noticed by the next
//! process that opens it.
//!
//! The mark lives in `$BULWARK_STATE_DIR`, else `$XDG_STATE_HOME/bulwark`, else
//! `~/.local/state/bulwark`, one file per store id. It holds no secret. An attacker who can roll
//! back both the store and this directory defeats it; keep the state directory on a different
//! volume from the store where that matters (the daemon can also pin it in its own config).
//! The directory is created 0700 and each mark 0600.

use std::path::{Path, PathBuf};

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

fn mark_path(dir: &Path, store_uid: &[u8; 16]) -> PathBuf {
    dir.join(format!("{}.generation", hex::encode(store_uid)))
}

/// The highest generation recorded for this store (0 when none).
pub fn load(store_uid: &[u8; 16]) -> u64 {
    state_dir().map_or(0, |d| load_in(&d, store_uid))
}

fn load_in(dir: &Path, store_uid: &[u8; 16]) -> u64 {
    crate::mark::load(&mark_path(dir, store_uid))
}

/// Records `generation` if it is higher than the recorded one. Best effort: a read-only home
/// directory must not make the token unusable, so failures are logged, not returned.
///
/// Not synced, written in place ([`crate::mark`]): the store's own commit is durable before
/// its generation is recorded, so a mark never runs ahead of the store (no false rollback
/// alarm after a power loss); a mark lost with the page cache only weakens detection until
/// the next write.
pub fn record(store_uid: &[u8; 16], generation: u64) {
    if let Some(d) = state_dir() {
        record_in(&d, store_uid, generation);
    }
}

/// Re-bases the mark: records `generation` even when it is lower than the recorded one, and
/// notes the rebase beside the mark (`<store id>.rebased`: the previous mark, the new one and
/// the time). Only for an audited, authorized reset of the baseline (a restore that replaced
/// the store's contents, see `Token::restore_with_options`); best effort like [`record`].
pub fn rebase(store_uid: &[u8; 16], generation: u64) {
    let Some(d) = state_dir() else { return };
    let before = load_in(&d, store_uid);
    write_in(&d, store_uid, generation, true);
    let note = format!(
        "previous {before} new {generation} at {}\n",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs())
    );
    let path = d.join(format!("{}.rebased", hex::encode(store_uid)));
    let appended = (|| -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        f.write_all(note.as_bytes())
    })();
    if let Err(e) = appended {
        tracing::warn!(error = %e, "cannot note the anti-rollback rebase");
    }
    tracing::warn!(previous = before, generation, "anti-rollback baseline re-based");
}

fn record_in(dir: &Path, store_uid: &[u8; 16], generation: u64) {
    write_in(dir, store_uid, generation, false);
}

fn write_in(dir: &Path, store_uid: &[u8; 16], generation: u64, force: bool) {
    let path = mark_path(dir, store_uid);
    let r = if force {
        crate::mark::set(&path, generation)
    } else {
        crate::mark::raise(&path, generation)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "cannot record the store generation high-water mark");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn marks_are_private() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let uid = [7u8; 16];
        super::record_in(&dir, &uid, 5);
        assert_eq!(super::load_in(&dir, &uid), 5);
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(format!("{}.generation", hex::encode(uid)))), 0o600);
        // A mark only grows, unless re-based.
        super::record_in(&dir, &uid, 3);
        assert_eq!(super::load_in(&dir, &uid), 5);
        super::write_in(&dir, &uid, 3, true);
        assert_eq!(super::load_in(&dir, &uid), 3);
    }
}
