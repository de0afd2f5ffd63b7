//! High-water marks kept outside the store: a number per file that only grows (the store
//! generation of [`crate::rollback`], the durable audit log size of [`crate::audit`]).
//!
//! A mark is raised after every commit, so its write must cost next to nothing. Each mark file
//! is opened once per process and then overwritten in place under an exclusive `flock`: read
//! the current value, write the larger one at offset 0, no new file, no rename, no directory
//! change for the file system to journal. Readers take the shared lock, so they never see a
//! half-written number; several processes raising one mark keep it monotonic (each compares
//! under the lock). The file holds one line: the value as 20 zero-padded decimal digits, a
//! newline. Shorter files written by older versions (digits, no padding) read the same.
//!
//! A **sealed** mark (the store generation, [`crate::rollback`]) carries after the digits a
//! space and a 32-byte tag in hex that its writer computed over the value with a key only the
//! unlocked store has: the reader checks it, so a mark lowered by hand — the half of a rollback
//! attack that happens outside the store — is caught. The tag cannot tell a replayed older
//! copy of the same file from the current one; it only makes values impossible to invent.
//!
//! Not synced: the caller's own commit is durable before its mark is raised, so a mark never
//! runs ahead of what it guards (no false alarm after a power loss); a mark lost with the page
//! cache only weakens detection until the next raise.
//!
//! Opening a mark ([`load`], at every token or log open) re-opens it by path, so a process
//! notices a mark file that was deleted or replaced since it first opened it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::fs::{flock, FlockOperation};

/// Bytes of a mark: 20 digits (`u64::MAX` has 20) and a newline.
const WIDTH: usize = 21;
/// Bytes of a sealed mark: 20 digits, a space, 64 hex digits of tag, a newline.
const SEALED_WIDTH: usize = 86;

/// The tag of a sealed mark's value.
pub(crate) type Tag = [u8; 32];

/// What a mark file holds: its value and, for a sealed mark, the tag written with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    pub value: u64,
    pub tag: Option<Tag>,
}
/// Open marks kept per process; past this the cache starts over (test binaries open many
/// stores; a process serving a handful of stores never reaches it).
const MAX_OPEN: usize = 64;

/// The marks this process has open, by path.
static OPEN: Mutex<Option<HashMap<PathBuf, Arc<File>>>> = Mutex::new(None);

/// Opens (creating it 0600, in a 0700 directory) the mark at `path`; refuses a symbolic link
/// or anything but a regular file.
fn open(path: &Path) -> io::Result<File> {
    if let Some(d) = path.parent() {
        crate::fsutil::create_private_dir(d)?;
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(
            i32::try_from((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits())
                .unwrap_or(0),
        )
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "is not a regular file"));
    }
    Ok(f)
}

/// The open marks of this process, held while a mark is read or raised: `flock` excludes
/// other open files (other processes), not other threads using the same open file.
fn marks() -> MutexGuard<'static, Option<HashMap<PathBuf, Arc<File>>>> {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The open mark at `path` in `open_marks`, opened now when `fresh` or not open yet.
fn file(
    open_marks: &mut Option<HashMap<PathBuf, Arc<File>>>,
    path: &Path,
    fresh: bool,
) -> io::Result<Arc<File>> {
    let map = open_marks.get_or_insert_with(HashMap::new);
    if !fresh {
        if let Some(f) = map.get(path) {
            return Ok(f.clone());
        }
    }
    let f = Arc::new(open(path)?);
    if map.len() >= MAX_OPEN {
        map.clear();
    }
    map.insert(path.to_path_buf(), f.clone());
    Ok(f)
}

/// The line in `f` (value 0 for an empty or unreadable one) and the file's length; the caller
/// holds a lock on it.
fn read(f: &File) -> io::Result<(Line, usize)> {
    let mut buf = [0u8; 128];
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok((parse(&buf[..n]), n))
}

fn parse(bytes: &[u8]) -> Line {
    let text = std::str::from_utf8(bytes).unwrap_or_default().trim();
    let (digits, tag) = text.split_once(' ').unwrap_or((text, ""));
    let value = digits.parse().unwrap_or(0);
    let mut t = [0u8; 32];
    let tag = (hex::decode_to_slice(tag, &mut t).is_ok()).then_some(t);
    Line { value, tag }
}

/// The value of the mark at `path` (0 when there is none or it cannot be read), re-opened by
/// path (at a token's or a log's open).
pub(crate) fn load(path: &Path) -> u64 {
    read_mark(path, true).map_or(0, |l| l.value)
}

/// [`load`] through the file this process already has open, if any (checks made on every
/// write: other processes raise the same file, so their raises are seen).
pub(crate) fn peek(path: &Path) -> u64 {
    read_mark(path, false).map_or(0, |l| l.value)
}

/// The line of the mark at `path`, re-opened by path; `None` when there is no mark (or it
/// cannot be read).
pub(crate) fn load_line(path: &Path) -> Option<Line> {
    read_mark(path, true)
}

fn read_mark(path: &Path, fresh: bool) -> Option<Line> {
    let mut open_marks = marks();
    let cached = open_marks.as_ref().is_some_and(|m| m.contains_key(path));
    if (fresh || !cached) && !path.exists() {
        // Deleted since it was opened: the next raise creates it again.
        if let Some(m) = open_marks.as_mut() {
            m.remove(path);
        }
        return None;
    }
    let r = file(&mut open_marks, path, fresh).and_then(|f| {
        flock(&f, FlockOperation::LockShared)?;
        let v = read(&f);
        let _ = flock(&f, FlockOperation::Unlock);
        v
    });
    r.ok().map(|(l, _)| l)
}

/// Raises the mark at `path` to `value` (no change when it already is at least `value`).
///
/// # Errors
/// The I/O error (callers log it: a mark is best effort, a read-only state directory must not
/// make a token unusable).
pub(crate) fn raise(path: &Path, value: u64) -> io::Result<()> {
    write(path, value, false, None)
}

/// [`raise`] for a sealed mark: the line written carries `tag(value)`. A mark already at
/// `value` but without a tag is written again, sealed.
///
/// # Errors
/// As [`raise`].
pub(crate) fn raise_sealed(path: &Path, value: u64, tag: &dyn Fn(u64) -> Tag) -> io::Result<()> {
    write(path, value, false, Some(tag))
}

/// Sets the mark at `path` to `value`, lower or not: only for an audited, authorized reset of
/// the baseline (a restore that replaced a store's contents).
///
/// # Errors
/// As [`raise`].
pub(crate) fn set(path: &Path, value: u64, tag: Option<&dyn Fn(u64) -> Tag>) -> io::Result<()> {
    write(path, value, true, tag)
}

fn write(path: &Path, value: u64, lower: bool, tag: Option<&dyn Fn(u64) -> Tag>) -> io::Result<()> {
    let mut open_marks = marks();
    let f = file(&mut open_marks, path, false)?;
    flock(&f, FlockOperation::LockExclusive)?;
    let r = (|| {
        let (current, len) = read(&f)?;
        let reseal = tag.is_some() && current.value == value && current.tag.is_none();
        if current.value >= value && !lower && !reseal {
            return Ok(());
        }
        let (line, width) = match tag {
            Some(t) => (format!("{value:020} {}\n", hex::encode(t(value))), SEALED_WIDTH),
            None => (format!("{value:020}\n"), WIDTH),
        };
        debug_assert_eq!(line.len(), width);
        f.write_all_at(line.as_bytes(), 0)?;
        if len > width {
            f.set_len(width as u64)?;
        }
        Ok(())
    })();
    let _ = flock(&f, FlockOperation::Unlock);
    r
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::{load, raise};

    #[test]
    fn a_mark_only_grows_and_reads_old_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("marks/x.generation");
        assert_eq!(load(&p), 0);
        raise(&p, 12).unwrap();
        assert_eq!(load(&p), 12);
        raise(&p, 7).unwrap();
        assert_eq!(load(&p), 12);
        super::set(&p, 7, None).unwrap();
        assert_eq!(load(&p), 7);
        raise(&p, 12).unwrap();
        raise(&p, u64::MAX).unwrap();
        assert_eq!(load(&p), u64::MAX);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{}\n", u64::MAX));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);

        // A mark written by an older version (unpadded digits), then raised in place.
        let q = d.path().join("marks/old.audit");
        std::fs::write(&q, "4096").unwrap();
        assert_eq!(load(&q), 4096);
        raise(&q, 5000).unwrap();
        assert_eq!(std::fs::read_to_string(&q).unwrap(), "00000000000000005000\n");
    }

    #[test]
    fn sealed_marks_carry_their_tag() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.generation");
        let tag = |v: u64| {
            let mut t = [0xA5u8; 32];
            t[..8].copy_from_slice(&v.to_be_bytes());
            t
        };
        assert_eq!(super::load_line(&p), None);
        super::raise_sealed(&p, 41, &tag).unwrap();
        assert_eq!(super::load_line(&p), Some(super::Line { value: 41, tag: Some(tag(41)) }));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), super::SEALED_WIDTH as u64);
        // Lower: no change; higher: the tag follows the value.
        super::raise_sealed(&p, 40, &tag).unwrap();
        assert_eq!(load(&p), 41);
        super::raise_sealed(&p, 42, &tag).unwrap();
        assert_eq!(super::load_line(&p).unwrap().tag, Some(tag(42)));
        // An unsealed line of the same value (written by hand) is sealed again by the next raise.
        std::fs::write(&p, "42\n").unwrap();
        assert_eq!(super::load_line(&p), Some(super::Line { value: 42, tag: None }));
        super::raise_sealed(&p, 42, &tag).unwrap();
        assert_eq!(super::load_line(&p).unwrap().tag, Some(tag(42)));
        // Setting a lower value (a rebase) writes the shorter line and no stale bytes.
        super::set(&p, 3, None).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "00000000000000000003\n");
    }

    #[test]
    fn a_replaced_mark_is_noticed_at_the_next_load() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m");
        raise(&p, 10).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(load(&p), 0);
        raise(&p, 11).unwrap();
        // Raised in the file that now exists, not in the deleted one still open.
        assert_eq!(load(&p), 11);
    }

    #[test]
    fn parallel_raises_leave_the_largest() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m");
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let p = &p;
                s.spawn(move || {
                    for i in 0..200 {
                        raise(p, t * 1000 + i).unwrap();
                        assert!(load(p) >= t * 1000 + i);
                    }
                });
            }
        });
        assert_eq!(load(&p), 7199);
    }

    #[test]
    fn a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "1").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(raise(&link, 5).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "1");
    }
}
