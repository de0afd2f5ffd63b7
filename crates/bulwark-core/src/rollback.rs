//! The anti-rollback high-water mark: the highest store generation this host has seen, kept
//! outside the store so that replacing the store file with an older copy is noticed by the next
//! process that opens it.
//!
//! The mark lives in `$BULWARK_STATE_DIR`, else `$XDG_STATE_HOME/bulwark`, else
//! `~/.local/state/bulwark`, one file per store id. It holds no secret. The mark is **sealed**:
//! written with a tag that only the unlocked store can compute ([`crate::mark`]), and checked at
//! every whole-store verification, so a mark lowered or written by hand is tamper evidence, not
//! a new baseline. An attacker who can roll back both the store and this directory to copies
//! of the same moment still defeats it (a tag cannot tell an old copy from the current one);
//! keep the state directory on a different volume from the store where that matters (a cluster
//! node keeps it in its own `data_dir`). The directory is created 0700 and each mark 0600.

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

/// The highest generation recorded for this store (0 when none). Not checked: see [`sealed`].
pub fn load(store_uid: &[u8; 16]) -> u64 {
    state_dir().map_or(0, |d| load_in(&d, store_uid))
}

/// The recorded generation and the tag written with it, re-read from the file; `None` when
/// there is no mark (or no state directory).
pub(crate) fn sealed(store_uid: &[u8; 16]) -> Option<crate::mark::Line> {
    state_dir().and_then(|d| crate::mark::load_line(&mark_path(&d, store_uid)))
}

/// Whether this host holds a mark for the store (a non-empty one).
pub fn exists(store_uid: &[u8; 16]) -> bool {
    sealed(store_uid).is_some_and(|m| m.value > 0)
}

/// Computes the tag of a mark value (the caller holds the unlocked store's keys).
pub(crate) type Sealer<'a> = &'a dyn Fn(u64) -> crate::mark::Tag;

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
pub(crate) fn record(store_uid: &[u8; 16], generation: u64, seal: Sealer<'_>) {
    if let Some(d) = state_dir() {
        write_in(&d, store_uid, generation, false, Some(seal));
    }
}

/// Re-bases the mark: records `generation` even when it is lower than the recorded one, and
/// notes the rebase beside the mark (`<store id>.rebased`: the previous mark, the new one and
/// the time). Only for an audited, authorized reset of the baseline (a restore that replaced
/// the store's contents, see `Token::restore_with_options`); best effort like [`record`].
pub(crate) fn rebase(store_uid: &[u8; 16], generation: u64, seal: Sealer<'_>) {
    let Some(d) = state_dir() else { return };
    let before = load_in(&d, store_uid);
    write_in(&d, store_uid, generation, true, Some(seal));
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

fn write_in(
    dir: &Path,
    store_uid: &[u8; 16],
    generation: u64,
    force: bool,
    seal: Option<Sealer<'_>>,
) {
    let path = mark_path(dir, store_uid);
    let r = match (force, seal) {
        (true, seal) => crate::mark::set(&path, generation, seal),
        (false, Some(seal)) => crate::mark::raise_sealed(&path, generation, seal),
        (false, None) => crate::mark::raise(&path, generation),
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
        let seal = |v: u64| [v as u8; 32];
        super::write_in(&dir, &uid, 5, false, Some(&seal));
        assert_eq!(super::load_in(&dir, &uid), 5);
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(format!("{}.generation", hex::encode(uid)))), 0o600);
        // A mark only grows, unless re-based.
        super::write_in(&dir, &uid, 3, false, Some(&seal));
        assert_eq!(super::load_in(&dir, &uid), 5);
        super::write_in(&dir, &uid, 3, true, Some(&seal));
        assert_eq!(super::load_in(&dir, &uid), 3);
    }
}
