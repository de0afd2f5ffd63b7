//! A private PostgreSQL server for tests and for `bulwarkd --dev --nodes N` (NOT FOR
//! PRODUCTION): Debian's `postgresql` package binaries (`/usr/lib/postgresql/<v>/bin`, 15 or
//! later; `BULWARK_PG_BIN` names another directory), `initdb` into a directory of ours,
//! `pg_ctl start` on a free loopback port with its Unix socket in that directory, `trust`
//! authentication (only the socket and loopback are listened on). Never a mock.
//!
//! `initdb` refuses to run as root, so as root the server's programs run as the `postgres`
//! user (`runuser`) and the server directory is handed to that user. A detached watcher stops
//! the server (and, for a temporary directory, removes it) once the process that started it has
//! exited, whatever way it ended: test binaries have no teardown hook, and a dev cluster killed
//! with SIGKILL must not leave a server behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running private server.
#[derive(Debug)]
pub struct DevPg {
    /// The server directory (`data/`, `sock/`, `server.log`).
    pub dir: PathBuf,
    /// The loopback TCP port.
    pub port: u16,
    /// The directory of the Unix socket.
    pub sock: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

/// The newest PostgreSQL (15 or later) server binaries on this machine: `BULWARK_PG_BIN`, else
/// `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("BULWARK_PG_BIN").filter(|d| !d.is_empty()) {
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
    rustix::process::geteuid().is_root()
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn out_text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

impl DevPg {
    /// Runs one of the server's programs (as `postgres` when we are root).
    fn run(&self, prog: &str, args: &[&str]) -> Result<std::process::Output, String> {
        let exe = self.bin.join(prog);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args).stdin(Stdio::null()).output().map_err(|e| format!("{prog}: {e}"))
    }

    /// Starts a server in `dir` (created if needed): `initdb` unless `dir/data` already holds a
    /// cluster, then `pg_ctl start` on a free loopback port. When `temporary`, the watcher also
    /// removes `dir` after this process exits. `Ok(None)` when no PostgreSQL 15+ binaries exist.
    ///
    /// # Errors
    /// The failing step and its output.
    pub fn start(dir: &Path, temporary: bool) -> Result<Option<Self>, String> {
        let Some(bin) = find_bin() else { return Ok(None) };
        let as_postgres = is_root();
        std::fs::create_dir_all(dir.join("sock")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
        if as_postgres {
            // The server user must reach its directory: ancestors that others cannot enter
            // (a 0700 temporary directory) get search permission only (no listing, no reading).
            use std::os::unix::fs::PermissionsExt;
            for a in dir.ancestors().skip(1) {
                if let Ok(m) = std::fs::metadata(a) {
                    let mode = m.permissions().mode();
                    if mode & 0o001 == 0 {
                        let _ = std::fs::set_permissions(
                            a,
                            std::fs::Permissions::from_mode((mode & 0o7777) | 0o001),
                        );
                    }
                }
            }
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err("chown of the server directory to postgres failed".into());
            }
        }
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let s = Self { sock: dir.join("sock"), dir, port, bin, as_postgres };
        // The watcher first: whatever happens below, the server goes when we exit.
        s.spawn_reaper(temporary)?;
        let data = s.dir.join("data");
        let data_s = data.to_str().ok_or("non-UTF-8 directory")?;
        if !data.join("PG_VERSION").exists() {
            let out = s.run(
                "initdb",
                &[
                    "-D",
                    data_s,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
            )?;
            if !out.status.success() {
                return Err(format!("initdb: {}", out_text(&out)));
            }
        }
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
                data_s,
                "-l",
                log.to_str().ok_or("non-UTF-8 directory")?,
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start: {}\n{}",
                out_text(&out),
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        Ok(Some(s))
    }

    /// Stops the server (fast shutdown: open connections are closed).
    pub fn stop(&self) {
        let data = self.dir.join("data");
        if let Some(d) = data.to_str() {
            let _ = self.run("pg_ctl", &["-D", d, "-m", "fast", "-w", "stop"]);
        }
    }

    /// Stops the server and removes its directory once this process has exited.
    fn spawn_reaper(&self, remove: bool) -> Result<(), String> {
        let data = self.dir.join("data");
        let stop = format!(
            "{}'{}' -D '{}' -m immediate stop",
            if self.as_postgres { "runuser -u postgres -- " } else { "" },
            self.bin.join("pg_ctl").display(),
            data.display()
        );
        let rm = if remove { format!("; rm -rf '{}'", self.dir.display()) } else { String::new() };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1{rm}",
            pid = std::process::id(),
        );
        // Never waited for: it outlives this process on purpose (setsid makes it its own).
        #[allow(clippy::zombie_processes)]
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("setsid sh: {e}"))?;
        Ok(())
    }

    /// A key/value connection string over the Unix socket.
    pub fn url(&self, db: &str) -> String {
        format!("host={} port={} user=postgres dbname={db}", self.sock.display(), self.port)
    }

    /// A URL over TCP on loopback.
    pub fn tcp_url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A direct (superuser) connection to database `db`.
    ///
    /// # Errors
    /// The connection error.
    pub fn admin(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(&self.url(db), postgres::NoTls)
    }

    /// Creates database `name` unless it exists.
    ///
    /// # Errors
    /// The server's message.
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err("database names are [A-Za-z0-9_]".into());
        }
        let mut c = self.admin("postgres").map_err(|e| e.to_string())?;
        let n = c
            .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
            .and_then(|r| r.try_get::<_, i64>(0))
            .map_err(|e| e.to_string())?;
        if n == 0 {
            c.batch_execute(&format!("CREATE DATABASE {name}")).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The server's binary directory.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Whether the server's programs run as the `postgres` user (we are root).
    pub fn runs_as_postgres(&self) -> bool {
        self.as_postgres
    }
}
