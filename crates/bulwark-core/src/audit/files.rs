//! The files around an audit log that are not the log itself: the sequencer lease and the
//! opener registrations (advisory `flock` locks in a directory beside the log), and the
//! out-of-store high-water mark (rollback detection).
//!
//! **Sequencer lease.** Exactly one opener at a time may assign sequence numbers and chain
//! values (in memory, so that a bounded-class append costs no I/O): the one holding an
//! exclusive `flock` on `lease`. An opener that wants the lease first takes a shared lock on
//! `want`, so the holder can see (by failing to take `want` exclusively) that someone waits and
//! hand the lease over after writing what it has sequenced. `flock` locks belong to an open
//! file description, so two logs opened in one process contend like two processes, and the
//! kernel drops a dead process's locks.
//!
//! **Openers.** Every opener holds an exclusive lock on `<opener id>.opener` for its lifetime.
//! An opener row whose file can be locked by someone else belongs to a dead process (the
//! kernel released its lock): that is how the next opener tells an unclean end from a live
//! process, whatever the pid says (pids are reused).
//!
//! **Mark.** `$BULWARK_STATE_DIR/<log id>.audit` holds the largest log size this host knows to
//! be durable. It is written without fsync after each sync of the log (losing it only weakens
//! detection), mode 0600 in a 0700 directory. It holds no secret.
//!
//! Nothing here reads or writes records.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::error::{Error, Result};

fn io_err(what: &str, e: &std::io::Error) -> Error {
    Error::Store(format!("audit log: {what}: {}", e.kind()))
}

/// Creates `dir` (and parents) as 0700, and tightens it to 0700 if it exists with group or
/// other bits (best effort: it may belong to someone else).
pub(super) fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::metadata(dir)?;
        if meta.permissions().mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// The lock directory of log `log_id` whose file is `log_path`: beside the log, named by the
/// log id (not the file name), so that renaming a log (reinit) keeps its locks with it.
pub(super) fn lock_dir(log_path: &Path, log_id: &[u8; 16]) -> PathBuf {
    let parent = log_path.parent().unwrap_or_else(|| Path::new("."));
    parent.join(format!("bulwark-audit-{}.lock", hex::encode(log_id)))
}

/// The locks one open log holds or takes.
pub(super) struct Locks {
    dir: PathBuf,
    lease: File,
    want: File,
    opener: File,
    opener_path: PathBuf,
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Locks {
    /// Creates the lock directory if needed and registers opener `opener_id` (its lock file,
    /// locked exclusively for as long as this value lives).
    pub(super) fn open(dir: PathBuf, opener_id: &str) -> Result<Self> {
        private_dir(&dir).map_err(|e| io_err("cannot create the lock directory", &e))?;
        let lease =
            open_private(&dir.join("lease")).map_err(|e| io_err("cannot open the lease", &e))?;
        let want =
            open_private(&dir.join("want")).map_err(|e| io_err("cannot open the lease", &e))?;
        let opener_path = dir.join(format!("{opener_id}.opener"));
        let opener =
            open_private(&opener_path).map_err(|e| io_err("cannot create the opener lock", &e))?;
        flock(&opener, FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| Error::Internal("audit opener id collision"))?;
        Ok(Self { dir, lease, want, opener, opener_path })
    }

    /// Takes the sequencer lease, waiting for its holder to hand it over (the holder sees the
    /// shared lock on `want` and writes out what it has sequenced first).
    pub(super) fn acquire_lease(&self) -> Result<()> {
        let err = |_| Error::Store("audit log: cannot lock the sequencer lease".into());
        if flock(&self.lease, FlockOperation::NonBlockingLockExclusive).is_ok() {
            return Ok(());
        }
        flock(&self.want, FlockOperation::LockShared).map_err(err)?;
        let r = flock(&self.lease, FlockOperation::LockExclusive).map_err(err);
        let _ = flock(&self.want, FlockOperation::Unlock);
        r
    }

    /// Gives the lease up.
    pub(super) fn release_lease(&self) {
        let _ = flock(&self.lease, FlockOperation::Unlock);
    }

    /// Whether another opener is waiting for the lease (two system calls).
    pub(super) fn lease_wanted(&self) -> bool {
        match flock(&self.want, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = flock(&self.want, FlockOperation::Unlock);
                false
            }
            Err(_) => true,
        }
    }

    /// Whether opener `id` (registered on `host` with `pid`) is gone: its lock file can be
    /// locked (the kernel released a dead process's lock), or the file is missing and no
    /// process has its pid. Another host's openers are never judged (no shared locks). When
    /// it is gone, the returned guard keeps its lock file locked (and removes it on drop) so
    /// that no other opener reports the same death while this one records it.
    pub(super) fn dead_opener(&self, id: &str, host: &str, pid: u64) -> Option<DeadOpener> {
        if host != hostname() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.dir.join(format!("{id}.opener"));
        match OpenOptions::new().read(true).open(&path) {
            Ok(f) => flock(&f, FlockOperation::NonBlockingLockExclusive)
                .ok()
                .map(|()| DeadOpener { _file: Some(f), path: Some(path) }),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let alive = Path::new(&format!("/proc/{pid}")).exists();
                (!alive).then_some(DeadOpener { _file: None, path: None })
            }
            Err(_) => None,
        }
    }

    /// Ends this opener's registration: unlocks and removes its lock file.
    pub(super) fn unregister(&self) {
        let _ = std::fs::remove_file(&self.opener_path);
        let _ = flock(&self.opener, FlockOperation::Unlock);
    }
}

/// A dead opener's lock file, held locked while its death is recorded.
pub(super) struct DeadOpener {
    _file: Option<File>,
    path: Option<PathBuf>,
}

impl Drop for DeadOpener {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// This host's name (for opener registrations; `-` when unknown).
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

fn mark_path(log_id: &[u8; 16]) -> Option<PathBuf> {
    crate::rollback::state_dir().map(|d| d.join(format!("{}.audit", hex::encode(log_id))))
}

/// The largest durable size recorded for log `log_id` on this host (0 when none).
pub(super) fn load_mark(log_id: &[u8; 16]) -> u64 {
    mark_path(log_id).map_or(0, |p| crate::mark::load(&p))
}

/// [`load_mark`] through the mark file this process has open (checks on every write).
pub(super) fn peek_mark(log_id: &[u8; 16]) -> u64 {
    mark_path(log_id).map_or(0, |p| crate::mark::peek(&p))
}

/// Records `size` as durable for log `log_id` if it is larger than the recorded one, in place
/// and without fsync ([`crate::mark`]: a lost mark only weakens detection); best effort,
/// failures are logged.
pub(super) fn record_mark(log_id: &[u8; 16], size: u64) {
    let Some(path) = mark_path(log_id) else { return };
    if let Err(e) = crate::mark::raise(&path, size) {
        tracing::warn!(error = %e, "cannot record the audit high-water mark");
    }
}

/// The inode of `path` (to notice a log file replaced under an open log).
pub(super) fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::many_single_char_names)] // openers a, b, c in lock directory d
    fn a_live_opener_is_never_taken_for_dead_and_a_closed_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("locks");
        let a = Locks::open(d.clone(), "aa").unwrap();
        let b = Locks::open(d.clone(), "bb").unwrap();
        let host = hostname();
        // `a` is alive (its lock is held by another open file description, same process).
        assert!(b.dead_opener("aa", &host, u64::from(std::process::id())).is_none());
        // Another host's opener is never judged.
        assert!(b.dead_opener("cc", "elsewhere", 1).is_none());
        // A registered opener whose process is gone: lock released, file left behind.
        drop(a);
        let dead = b.dead_opener("aa", &host, u64::from(std::process::id()));
        assert!(dead.is_some());
        // While its death is being recorded, nobody else sees it as dead.
        let c = Locks::open(d.clone(), "cc").unwrap();
        assert!(c.dead_opener("aa", &host, u64::from(std::process::id())).is_none());
        drop(dead);
        assert!(!d.join("aa.opener").exists());
        // The lease: exclusive, and a waiter is visible to the holder.
        b.acquire_lease().unwrap();
        assert!(!b.lease_wanted());
        let t = std::thread::spawn(move || {
            c.acquire_lease().unwrap();
            c.release_lease();
        });
        while !b.lease_wanted() {
            std::thread::yield_now();
        }
        b.release_lease();
        t.join().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
            let m = std::fs::metadata(d.join("bb.opener")).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600);
        }
    }
}
