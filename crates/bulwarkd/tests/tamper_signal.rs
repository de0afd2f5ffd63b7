//! The external tamper signal: SIGUSR1 to the real `bulwarkd` process applies the store's
//! tamper response — `alarm` refuses key service (audited) until the security officer clears
//! it; `zeroize` destroys every key and seals the daemon for good.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulwark_client::{Client, ClientConfig, ClientError, Code};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_value(dir: &Path, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("export {key}=")).map(|v| v.trim_matches('\'').to_owned())
        })
        .unwrap()
}

fn client(dir: &Path, env: &str) -> Client {
    let cfg = ClientConfig::from_files(
        &env_value(dir, env, "BULWARK_ENDPOINT"),
        Path::new(&env_value(dir, env, "BULWARK_CA_CERT")),
        Some(Path::new(&env_value(dir, env, "BULWARK_CLIENT_CERT"))),
        Some(Path::new(&env_value(dir, env, "BULWARK_CLIENT_KEY"))),
    )
    .unwrap();
    let mut c = Client::connect(&cfg).unwrap();
    c.login(&env_value(dir, env, "BULWARK_USER"), &env_value(dir, env, "BULWARK_PASSWORD"))
        .unwrap();
    c
}

fn start(d: &Path, response: &str) -> (Daemon, std::path::PathBuf) {
    let dir = d.join("dev");
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_bulwarkd"))
            .args(["--dev", "--listen", "127.0.0.1:0", "--dev-tamper-response", response, "--dir"])
            .arg(&dir)
            .env("BULWARK_STATE_DIR", d.join("state"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = daemon.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    assert!(lines.any(|l| l.unwrap().starts_with("listening on ")), "daemon started");
    (daemon, dir)
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

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (Code, String) {
    match r {
        Err(ClientError::Status { code, message }) => (code, message),
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[test]
fn sigusr1_raises_the_alarm_until_the_security_officer_clears_it() {
    let d = tempfile::tempdir().unwrap();
    let (daemon, dir) = start(d.path(), "alarm");
    let crypto = client(&dir, "officer.env");
    crypto.generate_key("ec-p256", "k", false).unwrap();
    crypto.sign("k", "", b"before", true).unwrap();
    usr1(&daemon);
    let so = client(&dir, "so.env");
    wait_for("the alarm", || !so.status().unwrap().tamper_alarm.is_empty());
    assert!(so.status().unwrap().tamper_alarm.contains("SIGUSR1"));
    let (c, m) = code(crypto.sign("k", "", b"during", true));
    assert_eq!(c, Code::FailedPrecondition);
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
    let crypto = client(&dir, "officer.env");
    crypto.generate_key("aes-256", "k", false).unwrap();
    crypto.encrypt("k", b"before").unwrap();
    let so = client(&dir, "so.env");
    usr1(&daemon);
    wait_for("zeroization", || so.status().unwrap().zeroized);
    let st = so.status().unwrap();
    assert!(st.sealed);
    assert_eq!(code(crypto.encrypt("k", b"after")).0, Code::FailedPrecondition);
    let share = std::fs::read(dir.join("shares").join("share-1.json")).unwrap();
    assert_eq!(code(so.unseal(&share)).0, Code::FailedPrecondition);
    assert!(daemon_alive(&daemon));
}
