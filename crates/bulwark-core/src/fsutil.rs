//! Files that hold or guard secrets: creating them private, reading them only when they are
//! private, and refusing store paths an attacker could redirect.
//!
//! - Outputs that can hold secrets or wrapped keys (exports, decryptions, random bytes, share
//!   files) are created 0600 and never through a symbolic link: [`create_private`].
//! - Inputs that hold secrets (PIN files, passphrase files, share files) are refused when the
//!   group or others can access them, as ssh refuses an unprotected private key:
//!   [`read_private`].
//! - A store path that is a symbolic link (dangling or not) is refused: [`check_store_path`].
//!   A dangling link would let whoever controls its target decide where a new store lands.
//! - Private directories (the anti-rollback state) are created 0700: [`create_private_dir`].
//!
//! This module never logs a file's content.

use std::fs::{File, Permissions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Refuses a store path that is a symbolic link (dangling or not), or whose companion files
/// (`-wal`, `-shm`, `-journal`, `-audit` and its own companions) are. A missing path is fine
/// (init creates it).
///
/// # Errors
/// `ArgumentsBad` naming the problem.
pub fn check_store_path(path: &Path) -> Result<()> {
    let mut candidates = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal", "-audit", "-audit-wal", "-audit-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        candidates.push(p.into());
    }
    for p in candidates {
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            if m.file_type().is_symlink() {
                return Err(Error::ArgumentsBad(
                    "the store path (or one of its -wal/-shm/-audit files) is a symbolic link: \
                     refusing it; give the real path",
                ));
            }
            if m.is_dir() {
                return Err(Error::ArgumentsBad("the store path is a directory"));
            }
        }
    }
    Ok(())
}

/// Opens `path` for writing, created 0600 if new, else truncated if it is a regular file (its
/// mode is tightened to 0600 before anything is written). Never follows a symbolic link in the
/// last component, never opens a FIFO or device.
///
/// # Errors
/// The I/O error; `InvalidInput` for a symbolic link or anything but a regular file.
pub fn create_private(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        // NOFOLLOW: a symlink fails with ELOOP. NONBLOCK: a FIFO without a reader fails at
        // once instead of hanging (and one with a reader is refused below).
        .custom_flags(
            i32::try_from((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits())
                .unwrap_or(0),
        )
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                io::Error::new(io::ErrorKind::InvalidInput, "is a symbolic link: refusing it")
            } else {
                e
            }
        })?;
    let m = f.metadata()?;
    if !m.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "is not a regular file"));
    }
    if m.permissions().mode() & 0o777 != 0o600 {
        f.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// [`create_private`] and writes `data`, synced.
///
/// # Errors
/// As [`create_private`], and write errors.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = create_private(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Reads a file that holds a secret (a PIN, a passphrase, a share), refusing it when its mode
/// lets the group or others read or write it. The mode is checked on the opened file, so the
/// check and the read concern the same file.
///
/// # Errors
/// The I/O error; `PermissionDenied` with instructions for a file that is too open.
pub fn read_private(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut f = File::open(path)?;
    let mode = f.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} holds a secret but is accessible by others (mode {mode:04o}): \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    let mut out = Zeroizing::new(Vec::new());
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// Creates `dir` (and missing parents) with the last component 0700, or tightens an existing
/// directory to 0700. Refuses a symbolic link as the last component.
///
/// # Errors
/// The I/O error; `InvalidInput` for a symbolic link or a non-directory.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let m = std::fs::symlink_metadata(dir)?;
            if !m.is_dir() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "is not a directory"));
            }
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_outputs_are_0600_and_never_follow_links() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        write_private(&p, b"secret").unwrap();
        assert_eq!(mode(&p), 0o600);
        // An existing world-readable file is truncated and tightened.
        std::fs::write(&p, b"old old old").unwrap();
        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"new").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        // A symlink (to a victim file, or dangling) is refused and the target untouched.
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = d.path().join("link");
        symlink(&victim, &link).unwrap();
        assert_eq!(write_private(&link, b"x").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let dangling = d.path().join("dangling");
        symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(write_private(&dangling, b"x").is_err());
        assert!(!d.path().join("nowhere").exists());
        // A FIFO without a reader: refused at once, no hang.
        let fifo = d.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from(0o600)).unwrap();
        assert!(write_private(&fifo, b"x").is_err());
    }

    #[test]
    fn secret_inputs_must_be_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pin");
        std::fs::write(&p, b"1234").unwrap();
        for open in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&p, Permissions::from_mode(open)).unwrap();
            let e = read_private(&p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        std::fs::set_permissions(&p, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(&read_private(&p).unwrap()[..], b"1234");
        std::fs::set_permissions(&p, Permissions::from_mode(0o400)).unwrap();
        assert!(read_private(&p).is_ok());
    }

    #[test]
    fn symlinked_store_paths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("store.db");
        assert!(check_store_path(&store).is_ok());
        symlink(d.path().join("elsewhere.db"), &store).unwrap();
        assert!(matches!(check_store_path(&store), Err(Error::ArgumentsBad(_))));
        std::fs::remove_file(&store).unwrap();
        let audit = d.path().join("store.db-audit");
        symlink("/tmp/x", &audit).unwrap();
        assert!(check_store_path(&store).is_err());
    }

    #[test]
    fn private_dirs_are_0700() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/state");
        create_private_dir(&p).unwrap();
        assert_eq!(mode(&p), 0o700);
        std::fs::set_permissions(&p, Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&p).unwrap();
        assert_eq!(mode(&p), 0o700);
    }
}
