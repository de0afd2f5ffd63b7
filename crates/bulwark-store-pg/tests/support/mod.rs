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

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use bulwark_store_pg::devserver::DevPg;

/// The server of the tests (the crate's own dev server, in a temporary directory removed when
/// the test process has exited).
pub struct PgServer(DevPg);

impl std::ops::Deref for PgServer {
    type Target = DevPg;
    fn deref(&self) -> &DevPg {
        &self.0
    }
}

impl PgServer {
    fn start() -> Option<Self> {
        let dir = tempfile::Builder::new().prefix("bulwark-pg-").tempdir().unwrap().keep();
        let Some(s) = DevPg::start(&dir, true).unwrap() else {
            eprintln!(
                "SKIPPED: no PostgreSQL 15+ server binaries (/usr/lib/postgresql/*/bin); \
                 scripts/test.sh installs them (apt-get install postgresql)"
            );
            return None;
        };
        std::fs::create_dir_all(s.dir.join("state")).unwrap();
        // Host anti-rollback marks of the stores these tests create stay in the directory.
        std::env::set_var("BULWARK_STATE_DIR", s.dir.join("state"));
        Some(Self(s))
    }

    pub fn admin(&self, db: &str) -> postgres::Client {
        self.0.admin(db).unwrap()
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
