//! The external tamper signal: SIGUSR1 to the real `bulwarkd` process applies the store's
//! tamper response — `alarm` refuses key service (audited) until the security officer clears
//! it; `zeroize` destroys every key and seals the daemon for good.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_client::Code;
use common::{code, login_as, spawn_dev, Daemon};

fn start(d: &Path, response: &str) -> (Daemon, std::path::PathBuf) {
    spawn_dev(d, &["--dev-tamper-response", response])
}

fn usr1(d: &Daemon) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(d.0.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::USR1).unwrap();
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigusr1_raises_the_alarm_until_the_security_officer_clears_it() {
    let d = tempfile::tempdir().unwrap();
    let (daemon, dir) = start(d.path(), "alarm");
    let crypto = login_as(&dir, "officer.env");
    crypto.generate_key("ec-p256", "k", false).unwrap();
    crypto.sign("k", "", b"before", true).unwrap();
    usr1(&daemon);
    let so = login_as(&dir, "so.env");
    wait_for("the alarm", || !so.status().unwrap().tamper_alarm.is_empty());
    assert!(so.status().unwrap().tamper_alarm.contains("SIGUSR1"));
    let (c, m) = code(crypto.sign("k", "", b"during", true));
    assert_eq!(c, Code::FailedPrecondition, "{m}");
    assert!(m.contains("tamper alarm"), "{m}");
    // Only the security officer clears it.
    assert_eq!(code(crypto.clear_tamper()).0, Code::PermissionDenied);
    so.clear_tamper().unwrap();
    assert!(so.status().unwrap().tamper_alarm.is_empty());
    crypto.sign("k", "", b"after", true).unwrap();
    // The signal, the refusal and the clearing are in the audit log.
    let log = so.audit_export(0).unwrap().join("\n");
    for needle in ["SIGUSR1", "tamper-clear"] {
        assert!(log.contains(needle), "no {needle} in the audit log");
    }
    assert!(daemon_alive(&daemon));
}

fn daemon_alive(d: &Daemon) -> bool {
    Path::new(&format!("/proc/{}", d.0.id())).exists()
}

#[test]
fn sigusr1_zeroizes_when_the_policy_says_so() {
    let d = tempfile::tempdir().unwrap();
    let (daemon, dir) = start(d.path(), "zeroize");
    let crypto = login_as(&dir, "officer.env");
    crypto.generate_key("aes-256", "k", false).unwrap();
    crypto.encrypt("k", b"before").unwrap();
    let so = login_as(&dir, "so.env");
    usr1(&daemon);
    wait_for("zeroization", || so.status().unwrap().zeroized);
    let st = so.status().unwrap();
    assert!(st.sealed);
    assert_eq!(code(crypto.encrypt("k", b"after")).0, Code::FailedPrecondition);
    let share = std::fs::read(dir.join("shares").join("share-1.json")).unwrap();
    assert_eq!(code(so.unseal(&share)).0, Code::FailedPrecondition);
    assert!(daemon_alive(&daemon));
}
