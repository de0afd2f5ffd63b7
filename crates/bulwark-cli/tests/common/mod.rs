//! The embedded-store environment the CLI integration tests share: a fresh store in a
//! temporary directory (SO and user PINs in the environment, never on the command line), and the
//! `bulwark` binary run against it.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub(crate) const SO_PIN: &str = "so-secret-1234";
pub(crate) const PIN: &str = "user-pin-5678";

pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
}

impl Env {
    /// A new directory with an initialized store `store.db`.
    pub(crate) fn new() -> Self {
        let e = Self { dir: tempfile::tempdir().unwrap() };
        e.ok(&["init", "--label", "test"]);
        e
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// Runs `bulwark ARGS` on `store`.
    pub(crate) fn run_on(&self, store: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .env("BULWARK_STORE", store)
            .env("BULWARK_SO_PIN", SO_PIN)
            .env("BULWARK_PIN", PIN)
            .env("BULWARK_STATE_DIR", self.dir.path().join("state"))
            .stdin(Stdio::null())
            .args(args)
            .output()
            .unwrap()
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.run_on(&self.path("store.db"), args)
    }

    /// Runs `bulwark ARGS`, which must succeed; its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs `bulwark ARGS`, which must fail with one line on stderr containing `needle`.
    pub(crate) fn fails(&self, args: &[&str], needle: &str) -> String {
        let o = self.run(args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.to_lowercase().contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        err
    }
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
