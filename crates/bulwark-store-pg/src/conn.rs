//! Connections: the TLS policy, and a small pool of synchronous clients.
//!
//! **TLS.** A plain connection is allowed only to a Unix socket or a loopback address (tests,
//! a database on the same host). Any other host needs TLS, through rustls with the aws-lc-rs
//! provider and the CA certificates given in [`PgTls::Rustls`]; then TLS is *required*
//! (`sslmode=require` is forced, so a server or an attacker in the path cannot downgrade the
//! connection to plain text) and the server certificate is verified against those CAs and the
//! host name. A URL that asks for TLS while none is configured is refused rather than silently
//! connected in the clear. Not done yet: client certificates (mutual TLS to the database),
//! certificate revocation, `sslmode=verify-*` spelled in the URL (the verification above is
//! always on when TLS is configured).
//!
//! **Pool.** At most `size` connections are opened, lazily; a caller waits for a free one. A
//! connection that broke is dropped and replaced on the next demand, so a restarted (or
//! failed-over, with a multi-host URL and `target_session_attrs=read-write`) server is used
//! again without restarting the process. Statements are prepared once per connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};

use bulwark_core::{Error, Result};
use postgres::config::{Host, SslMode};
use postgres::{Client, GenericClient, Statement};

use crate::db_err;

/// Runs blocking database work `f`. The synchronous client drives each connection with a
/// runtime of its own and cannot do so on a thread that is driving an async runtime: called
/// from a worker of a multi-threaded tokio runtime (a daemon handler that did not move to the
/// blocking pool), the work is moved off the worker first (`block_in_place`); anywhere else it
/// simply runs.
pub(crate) fn offload<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// How connections to the database are protected.
#[derive(Clone)]
pub enum PgTls {
    /// No TLS: only Unix sockets and loopback addresses are accepted.
    Disabled,
    /// TLS (rustls), required, with the server verified against this configuration's roots.
    Rustls(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgTls::Disabled => f.write_str("Disabled"),
            PgTls::Rustls(_) => f.write_str("Rustls"),
        }
    }
}

impl PgTls {
    /// TLS verifying the server against the CA certificates of a PEM file.
    ///
    /// # Errors
    /// `Store` when the file cannot be read or holds no usable certificate.
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|_| Error::Store("CA file: malformed PEM".into()))?;
            roots.add(cert).map_err(|_| Error::Store("CA file: unusable certificate".into()))?;
        }
        if roots.is_empty() {
            return Err(Error::Store("CA file: no certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| Error::Internal("TLS configuration"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(PgTls::Rustls(Arc::new(config)))
    }
}

/// Whether a host is local enough for a plain connection.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
        }
    }
}

/// Checks the URL against the TLS policy and returns the configuration to connect with.
pub(crate) fn configure(url: &str, tls: &PgTls) -> Result<postgres::Config> {
    // The parser's message may quote the URL (and so a password): not passed on.
    let mut cfg: postgres::Config =
        url.parse().map_err(|_| Error::ArgumentsBad("malformed PostgreSQL connection URL"))?;
    match tls {
        PgTls::Disabled => {
            if cfg.get_ssl_mode() == SslMode::Require {
                return Err(Error::ArgumentsBad(
                    "the URL requires TLS but no TLS configuration (CA certificates) was given",
                ));
            }
            let addrs_local = cfg.get_hostaddrs().iter().all(IpAddr::is_loopback);
            let hosts_local = cfg.get_hosts().iter().all(is_local);
            if !(hosts_local && addrs_local) {
                return Err(Error::ArgumentsBad(
                    "a PostgreSQL server that is not on a Unix socket or loopback needs TLS",
                ));
            }
            cfg.ssl_mode(SslMode::Disable);
        }
        PgTls::Rustls(_) => {
            if cfg.get_hosts().iter().any(|h| matches!(h, Host::Unix(_))) {
                return Err(Error::ArgumentsBad("TLS is not used over Unix sockets"));
            }
            cfg.ssl_mode(SslMode::Require);
        }
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(std::time::Duration::from_secs(10));
    }
    Ok(cfg)
}

/// One pooled connection and its prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) stmts: Stmts,
}

/// Prepared statements of one connection, by SQL text.
#[derive(Default)]
pub(crate) struct Stmts(HashMap<&'static str, Statement>);

impl Stmts {
    /// The statement for `sql`, prepared on first use (on `c`, the connection or a
    /// transaction on it: prepared statements outlive transactions).
    pub(crate) fn get(
        &mut self,
        c: &mut impl GenericClient,
        sql: &'static str,
    ) -> Result<Statement> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = c.prepare(sql).map_err(|e| db_err(&e))?;
        self.0.insert(sql, s.clone());
        Ok(s)
    }
}

struct Slots {
    idle: Vec<Conn>,
    open: usize,
}

/// The pool.
pub(crate) struct Pool {
    cfg: postgres::Config,
    tls: PgTls,
    size: usize,
    slots: Mutex<Slots>,
    freed: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the configuration: it may hold a password.
        f.debug_struct("Pool").field("size", &self.size).finish_non_exhaustive()
    }
}

/// A connection taken from the pool; goes back on drop (unless it broke).
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().unwrap_or_else(|| unreachable!("a lease holds its connection"))
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!("a lease holds its connection"))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut s = self.pool.lock();
        if conn.client.is_closed() {
            s.open -= 1;
            drop(s);
            // Closing a client blocks on its runtime.
            offload(|| drop(conn));
        } else {
            s.idle.push(conn);
            drop(s);
        }
        self.pool.freed.notify_one();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.lock().idle);
        offload(|| drop(idle));
    }
}

impl Pool {
    pub(crate) fn new(cfg: postgres::Config, tls: PgTls, size: usize) -> Self {
        Self {
            cfg,
            tls,
            size: size.max(1),
            slots: Mutex::new(Slots { idle: Vec::new(), open: 0 }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new connection outside the pool's count (the change listener's own).
    pub(crate) fn connect(&self) -> Result<Conn> {
        offload(|| self.connect_here())
    }

    fn connect_here(&self) -> Result<Conn> {
        let client = match &self.tls {
            PgTls::Disabled => self.cfg.connect(postgres::NoTls),
            PgTls::Rustls(c) => {
                self.cfg.connect(tokio_postgres_rustls::MakeRustlsConnect::new(c.as_ref().clone()))
            }
        }
        .map_err(|e| db_err(&e))?;
        Ok(Conn { client, stmts: Stmts::default() })
    }

    /// A connection: an idle one, a new one while fewer than `size` are open, or the next
    /// one freed.
    pub(crate) fn get(&self) -> Result<Lease<'_>> {
        let mut s = self.lock();
        loop {
            while let Some(c) = s.idle.pop() {
                if c.client.is_closed() {
                    s.open -= 1;
                    continue;
                }
                return Ok(Lease { pool: self, conn: Some(c) });
            }
            if s.open < self.size {
                s.open += 1;
                drop(s);
                return match self.connect() {
                    Ok(c) => Ok(Lease { pool: self, conn: Some(c) }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            s = self.freed.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}
