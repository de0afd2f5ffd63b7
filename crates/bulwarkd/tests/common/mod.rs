//! Helpers shared by the daemon's integration tests: the real `bulwarkd` binary as a child
//! process, the dev directory's env files, and gRPC status checks. Each test binary uses a
//! subset.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use bulwark_client::{Client, ClientConfig, ClientError, Code};

/// A `bulwarkd` child process, killed on drop.
pub(crate) struct Daemon(pub(crate) Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bulwarkd --dev` on a free loopback port in `d/dev` (state in `d/state`) with
/// `extra` arguments, and waits until it listens. Returns the daemon and its dev directory.
pub(crate) fn spawn_dev(d: &Path, extra: &[&str]) -> (Daemon, PathBuf) {
    let (daemon, dir, _) = spawn_dev_with(d, extra, &[], Stdio::null());
    (daemon, dir)
}

/// [`spawn_dev`] with environment variables `env` and the daemon's stderr (its log) sent to
/// `stderr`; also returns what the daemon printed on stdout before it listened.
pub(crate) fn spawn_dev_with(
    d: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (Daemon, PathBuf, Vec<String>) {
    let dir = d.join("dev");
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_bulwarkd"))
            .args(["--dev", "--listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--dir")
            .arg(&dir)
            .env("BULWARK_STATE_DIR", d.join("state"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let stdout = daemon.0.stdout.take().unwrap();
    let mut printed = Vec::new();
    for l in BufReader::new(stdout).lines() {
        let l = l.unwrap();
        let done = l.starts_with("listening on ");
        printed.push(l);
        if done {
            return (daemon, dir, printed);
        }
    }
    panic!("daemon did not start: {printed:?}");
}

/// The value of `export KEY=...` in the env file `file` of a dev directory.
pub(crate) fn env_value(dir: &Path, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("export {key}=")).map(|v| v.trim_matches('\'').to_owned())
        })
        .unwrap()
}

/// A connection with the TLS identity of env file `env` (not logged in).
pub(crate) fn connect_as(dir: &Path, env: &str) -> Client {
    let cfg = ClientConfig::from_files(
        &env_value(dir, env, "BULWARK_ENDPOINT"),
        Path::new(&env_value(dir, env, "BULWARK_CA_CERT")),
        Some(Path::new(&env_value(dir, env, "BULWARK_CLIENT_CERT"))),
        Some(Path::new(&env_value(dir, env, "BULWARK_CLIENT_KEY"))),
    )
    .unwrap();
    Client::connect(&cfg).unwrap()
}

/// [`connect_as`], logged in as the env file's user.
pub(crate) fn login_as(dir: &Path, env: &str) -> Client {
    let mut c = connect_as(dir, env);
    c.login(&env_value(dir, env, "BULWARK_USER"), &env_value(dir, env, "BULWARK_PASSWORD"))
        .unwrap();
    c
}

/// The status of a call that must fail.
pub(crate) fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (Code, String) {
    match r {
        Err(ClientError::Status { code, message, .. }) => (code, message),
        other => panic!("expected a status error, got {other:?}"),
    }
}
