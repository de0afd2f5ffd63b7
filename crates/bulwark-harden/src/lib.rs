//! Process hardening for every Bulwark process that holds key material (the daemon, the CLI
//! and, where the host application allows, the embedded PKCS#11 module).
//!
//! - `RLIMIT_CORE` 0 and `PR_SET_DUMPABLE` 0: no core file, no `/proc/PID/mem` or ptrace
//!   access for other processes of the same user;
//! - `mlockall` when the memory-lock limit allows it, so key memory is never swapped;
//! - the `TracerPid` of `/proc/self/status`, which the caller may treat as a tamper signal.
//!
//! Everything goes through `rustix`'s safe wrappers, so this crate keeps the workspace's
//! `unsafe_code = "forbid"`. It must never fail the caller: each step reports what it did.

#![forbid(unsafe_code)]

use rustix::mm::{mlockall, MlockAllFlags};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Memory locking outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryLock {
    /// All current and future pages are locked.
    Locked,
    /// Not locked, with the reason (usually `RLIMIT_MEMLOCK` too small for this process).
    NotLocked(String),
}

/// What [`harden`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `RLIMIT_CORE` is 0.
    pub core_dumps_disabled: bool,
    /// `PR_SET_DUMPABLE` is 0.
    pub not_dumpable: bool,
    /// Whether memory is locked against swap.
    pub memory: MemoryLock,
    /// PID of a tracer attached to this process, if any.
    pub tracer: Option<u32>,
}

/// `RLIMIT_MEMLOCK` below which `mlockall(MCL_FUTURE)` is not attempted: later allocations
/// (Argon2id alone takes 19 MiB) would fail and abort the process.
const MIN_MEMLOCK_FOR_FUTURE: u64 = 1 << 30;

/// Applies every hardening step this host allows and reports the result.
pub fn harden() -> Report {
    let core_dumps_disabled =
        setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }).is_ok()
            || getrlimit(Resource::Core).current == Some(0);
    let not_dumpable = set_not_dumpable();
    let memory = lock_memory();
    Report { core_dumps_disabled, not_dumpable, memory, tracer: tracer_pid() }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_not_dumpable() -> bool {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable).is_ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_not_dumpable() -> bool {
    false
}

fn lock_memory() -> MemoryLock {
    let lim = getrlimit(Resource::Memlock).current;
    // `None` is RLIM_INFINITY.
    let enough = lim.is_none_or(|l| l >= MIN_MEMLOCK_FOR_FUTURE);
    if !enough {
        return MemoryLock::NotLocked(format!(
            "RLIMIT_MEMLOCK is {} KiB; raise it (e.g. LimitMEMLOCK=infinity) to lock key memory",
            lim.unwrap_or(0) / 1024
        ));
    }
    match mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE) {
        Ok(()) => MemoryLock::Locked,
        Err(e) => MemoryLock::NotLocked(format!("mlockall failed: {e}")),
    }
}

/// The PID of the process tracing this one (`TracerPid` in `/proc/self/status`), if any.
pub fn tracer_pid() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_tracer(&s)
}

fn parse_tracer(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracer_parsing() {
        assert_eq!(parse_tracer("Name:\tx\nTracerPid:\t0\n"), None);
        assert_eq!(parse_tracer("Name:\tx\nTracerPid:\t4242\nUid: 1\n"), Some(4242));
        assert_eq!(parse_tracer("garbage"), None);
    }

    #[test]
    fn harden_disables_core_dumps_and_dumpability() {
        // Runs in a child so the test process itself stays debuggable.
        if std::env::var_os("BULWARK_HARDEN_CHILD").is_some() {
            let r = harden();
            assert!(r.core_dumps_disabled, "{r:?}");
            assert!(r.not_dumpable, "{r:?}");
            assert_eq!(getrlimit(Resource::Core).current, Some(0));
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            assert!(status.contains("TracerPid:"));
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let o = std::process::Command::new(exe)
            .args(["--exact", "tests::harden_disables_core_dumps_and_dumpability", "--nocapture"])
            .env("BULWARK_HARDEN_CHILD", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
}
