//! A private PostgreSQL server for the tests: Debian's `postgresql` package (installed by
//! `scripts/test.sh`), `initdb` into a temporary directory, `pg_ctl start` on a free loopback
//! port with its Unix socket in that directory. Never a mock.
//!
//! One server per test binary, started on first use; every test gets its own database
//! ([`Db`], dropped when the test ends). `initdb` refuses to run as root, so as root the
//! server runs as the `postgres` user (`runuser`). A detached watcher stops the server and
//! removes the directory once the test process has exited (test binaries have no teardown
//! hook). When no PostgreSQL binaries exist at all, [`server`] returns `None` and the tests
//! print why they skip.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub struct PgServer {
    pub dir: PathBuf,
    pub port: u16,
    pub sock: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

/// The newest PostgreSQL (15 or later) server binaries on this machine.
fn find_bin() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("BULWARK_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut best: Option<(u32, PathBuf)> = None;
    for e in std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten() {
        let Ok(v) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let bin = e.path().join("bin");
        if v >= 15 && bin.join("initdb").exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, bin));
        }
    }
    best.map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgServer {
    /// Runs one of the server's programs (as `postgres` when we are root).
    fn run(&self, prog: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(prog);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args).stdin(Stdio::null()).output().unwrap()
    }

    fn start() -> Option<Self> {
        let Some(bin) = find_bin() else {
            eprintln!(
                "SKIPPED: no PostgreSQL 15+ server binaries (/usr/lib/postgresql/*/bin); \
                 scripts/test.sh installs them (apt-get install postgresql)"
            );
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("bulwark-pg-").tempdir().unwrap().keep();
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of the server directory to postgres failed");
        }
        let port = free_port();
        let s = Self { sock: dir.join("sock"), dir, port, bin, as_postgres };
        // The watcher first: whatever happens below, the directory goes when we exit.
        s.spawn_reaper();
        let data = s.dir.join("data");
        let out = s.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
             -c shared_buffers=32MB",
            s.port,
            s.sock.display()
        );
        let log = s.dir.join("server.log");
        let out = s.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // Host anti-rollback marks of the stores these tests create stay in the directory.
        std::env::set_var("BULWARK_STATE_DIR", s.dir.join("state"));
        Some(s)
    }

    /// Stops the server and removes its directory once this process has exited.
    fn spawn_reaper(&self) {
        let data = self.dir.join("data");
        let stop = format!(
            "{}{} -D {} -m immediate stop",
            if self.as_postgres { "runuser -u postgres -- " } else { "" },
            self.bin.join("pg_ctl").display(),
            data.display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        // Never waited for: it outlives this process on purpose (setsid makes it its own).
        #[allow(clippy::zombie_processes)]
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("setsid sh");
    }

    /// A key/value connection string over the Unix socket.
    pub fn url(&self, db: &str) -> String {
        format!("host={} port={} user=postgres dbname={db}", self.sock.display(), self.port)
    }

    /// A URL over TCP on loopback.
    pub fn tcp_url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn admin(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls).unwrap()
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }
}

static SERVER: OnceLock<Option<PgServer>> = OnceLock::new();

/// The server of this test binary, or `None` (the reason printed) when PostgreSQL is absent.
pub fn server() -> Option<&'static PgServer> {
    SERVER.get_or_init(PgServer::start).as_ref()
}

/// A database of its own for one test, dropped at the end.
pub struct Db {
    pub name: String,
    pub url: String,
    server: &'static PgServer,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl Db {
    pub fn new(server: &'static PgServer) -> Self {
        let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
        server.admin("postgres").batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        Self { url: server.url(&name), name, server }
    }

    /// A direct connection (for the attacker's SQL and for checks).
    pub fn client(&self) -> postgres::Client {
        self.server.admin(&self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.server.url("postgres"), postgres::NoTls)
        {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// `None` from [`server`]: the test returns early (the reason was printed once).
#[macro_export]
macro_rules! pg_or_skip {
    () => {
        match support::server() {
            Some(s) => s,
            None => {
                eprintln!("skipped: PostgreSQL is not installed");
                return;
            }
        }
    };
}
