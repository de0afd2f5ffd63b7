//! Start-up and shutdown: opens the store sealed, binds the mTLS listener (or takes over the one
//! the bootstrap service of an uninitialized daemon bound), serves gRPC until told to stop,
//! then wipes the keys.
//!
//! Each TCP connection's TLS handshake runs in its own task with a deadline, so a slow or
//! hostile client cannot stall the accept loop; only connections that completed the handshake
//! (with a valid client certificate) reach the gRPC server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bulwark_core::seal::QuorumPolicy;
use bulwark_core::Token;
use bulwark_proto::bootstrap::v1::bootstrap_server::BootstrapServer;
use bulwark_proto::p11::v1::token_server::TokenServer;
use bulwark_proto::v1::hsm_server::HsmServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::bootstrap::BootstrapService;
use crate::config::Config;
use crate::error::DaemonError;
use crate::listen::{AcceptBackoff, Admitted, ConnectionLimits, Gate, Guarded};
use crate::service::HsmService;
use crate::state::HsmState;

/// How long a graceful shutdown waits for open connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Opens the store (sealed) and the user database.
pub fn open_state(cfg: &Config, dev_mode: bool) -> Result<Arc<HsmState>, DaemonError> {
    let (token, policy, node, local) = open_token(cfg)?;
    if let Some(notice) = cfg.users.as_deref().and_then(crate::users::legacy_user_file_notice) {
        tracing::warn!("{notice}");
    }
    if cfg.max_login_failures == 0 {
        return Err(DaemonError::Config("max_login_failures must be at least 1".into()));
    }
    token.set_login_failure_limit(cfg.max_login_failures);
    let state = Arc::new(
        HsmState::new(
            token,
            policy,
            cfg.worker_count(),
            Duration::from_secs(cfg.session_ttl_secs.max(1)),
            dev_mode,
        )
        .with_approvals(cfg.approvals.clone())
        .with_cluster(node.clone(), local),
    );
    if let Some(n) = node {
        n.spawn(Arc::downgrade(&state))
            .map_err(|e| DaemonError::Server(format!("cannot start the lease thread: {e}")))?;
        crate::cluster_audit::spawn(n.clone(), Arc::downgrade(&state))
            .map_err(|e| DaemonError::Server(format!("cannot start the audit thread: {e}")))?;
    }
    Ok(state)
}

/// What [`open_token`] opens.
pub(crate) type Opened =
    (crate::store::NodeToken, QuorumPolicy, Option<Arc<crate::cluster::Node>>, std::path::PathBuf);

/// The token of the configured store, its unseal policy, the cluster node (PostgreSQL) and the
/// local path scratch files go beside.
pub(crate) fn open_token(cfg: &Config) -> Result<Opened, DaemonError> {
    use crate::config::StoreLocation;
    use crate::store::NodeStore;
    match cfg.store_location() {
        StoreLocation::File(path) => {
            bulwark_core::fsutil::check_store_path(path)?;
            let policy = QuorumPolicy::load(path)?;
            // As `Token::open(path)`: the store file, its audit log beside it.
            let store = bulwark_core::store::SqliteStore::open(path)?;
            let token = Token::open_store(NodeStore::Sqlite(store), path)?;
            Ok((token, policy, None, path.to_owned()))
        }
        StoreLocation::Postgres(url) => {
            let c = crate::cluster_open::node_config(cfg)?;
            let pg = Arc::new(crate::cluster_open::open_pg(url, c)?);
            let policy = QuorumPolicy::from_store(pg.as_ref())?;
            let local = crate::cluster_open::local_base(c, &pg)?;
            let token = Token::open_store(
                NodeStore::Pg { store: pg.clone(), local: local.clone() },
                &local,
            )?;
            let node = Arc::new(crate::cluster::Node::new(
                pg,
                c.node_id.clone(),
                c.endpoint.clone(),
                Duration::from_millis(c.lease_ms),
            ));
            Ok((token, policy, Some(node), local))
        }
    }
}

/// A running daemon.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound HTTP (health/metrics) address, if configured.
    pub http: Option<SocketAddr>,
    /// The HSM state.
    pub state: Arc<HsmState>,
    stop: watch::Sender<bool>,
    join: JoinHandle<Result<(), DaemonError>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (for at most [`SHUTDOWN_GRACE`]), then
    /// seals (wipes keys).
    pub async fn shutdown(self) -> Result<(), DaemonError> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until the server ends; once a stop was requested, connections still open after
    /// [`SHUTDOWN_GRACE`] are closed. Then seals (wipes keys).
    pub async fn wait(mut self) -> Result<(), DaemonError> {
        let mut stop = self.stop.subscribe();
        let r = tokio::select! {
            r = &mut self.join => r.map_err(|e| DaemonError::Server(e.to_string())).and_then(|r| r),
            () = async {
                let _ = stop.wait_for(|v| *v).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("shutdown grace period over: closing the remaining connections");
                self.join.abort();
                Ok(())
            }
        };
        self.state.seal();
        if let Some(n) = self.state.cluster().cloned() {
            // Gives the lease up: other nodes stop waiting for this one at once.
            let _ = tokio::task::spawn_blocking(move || n.shutdown()).await;
        }
        r
    }

    /// A handle that stops the server.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// The TLS acceptor for `cfg.tls`: TLS 1.3, client certificate required.
pub(crate) fn tls_acceptor(cfg: &Config) -> Result<tokio_rustls::TlsAcceptor, DaemonError> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| DaemonError::file("read", p, e));
    let tls =
        crate::tls::server_config(&read(&cfg.tls.ca)?, &read(&cfg.tls.cert)?, &read(&cfg.tls.key)?)
            .map_err(DaemonError::Tls)?;
    Ok(tokio_rustls::TlsAcceptor::from(tls))
}

/// Binds `cfg.listen`.
pub(crate) async fn bind(cfg: &Config) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| DaemonError::Listen { addr: cfg.listen.to_string(), source })
}

/// Connections that completed the TLS handshake, for the gRPC server, each under its
/// listener's limit and deadlines.
pub(crate) type Incoming =
    ReceiverStream<std::io::Result<Guarded<tokio_rustls::server::TlsStream<TcpStream>>>>;

/// Accepts on `listener` until `stop` changes; each TLS handshake runs in its own task with a
/// deadline. At most `limits.max_connections` connections (handshaking or established) are
/// open at once; more are closed as soon as they are accepted. The task hands the listener
/// back when it ends, so that another server can take over the same socket (the bootstrap
/// service does, once the HSM is initialized).
pub(crate) fn spawn_accept(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> (Incoming, JoinHandle<TcpListener>) {
    let (tx, rx) = mpsc::channel(128);
    let gate = Gate::new("grpc-tls", limits);
    let join = tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            tokio::select! {
                // Stop first: a connection that arrives once the stop is set belongs to
                // whoever takes the listener over.
                biased;
                _ = stop.changed() => break,
                admitted = gate.next(&mut backoff, || listener.accept()) => {
                    let Admitted { conn: (tcp, peer), permit } = admitted;
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    let gate = gate.clone();
                    tokio::spawn(async move {
                        let deadline = gate.limits().handshake_timeout();
                        match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let s = Admitted { conn: s, permit }.guard(gate.limits());
                                let _ = tx.send(Ok::<_, std::io::Error>(s)).await;
                            }
                            Ok(Err(e)) => gate.handshake_failed(&peer, &e),
                            Err(_) => gate.handshake_failed(&peer, &"timed out"),
                        }
                    });
                }
            }
        }
        listener
    });
    (ReceiverStream::new(rx), join)
}

/// Binds `cfg.listen` and serves.
pub async fn start(cfg: &Config, state: Arc<HsmState>) -> Result<Running, DaemonError> {
    start_on(cfg, state, None).await
}

/// Serves on `listener` (already bound, e.g. by the bootstrap service), or binds `cfg.listen`.
pub async fn start_on(
    cfg: &Config,
    state: Arc<HsmState>,
    listener: Option<TcpListener>,
) -> Result<Running, DaemonError> {
    let acceptor = tls_acceptor(cfg)?;
    let listener = match listener {
        Some(l) => l,
        None => bind(cfg).await?,
    };
    let addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen { addr: cfg.listen.to_string(), source })?;
    if let Some(n) = state.cluster() {
        n.set_endpoint_if_empty(format!("https://{addr}"));
    }
    let (stop, mut stop_rx) = watch::channel(false);
    let limits = cfg.connections;
    let (incoming, _accept) = spawn_accept(listener, acceptor, limits, stop_rx.clone());
    let http = match cfg.http_listen {
        Some(a) => {
            Some(crate::metrics::serve_http(a, state.clone(), limits, stop_rx.clone()).await?)
        }
        None => None,
    };
    // One PKCS#11 service (and session-object registry) for both listeners.
    let p11 = crate::p11::TokenService::new(state.clone());
    if let Some(path) = &cfg.unix_socket {
        serve_unix(path, state.clone(), p11.clone(), limits, stop_rx.clone())?;
    }
    let svc = HsmServer::new(HsmService::new(state.clone()))
        .max_decoding_message_size(bulwark_core::limits::MAX_MESSAGE);
    let p11_svc =
        TokenServer::new(p11).max_decoding_message_size(bulwark_core::limits::MAX_MESSAGE);
    let join = tokio::spawn(async move {
        limits
            .grpc_server()
            .add_service(svc)
            .add_service(p11_svc)
            .add_service(
                BootstrapServer::new(BootstrapService::initialized())
                    .max_decoding_message_size(bulwark_core::limits::MAX_MESSAGE),
            )
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.changed().await;
            })
            .await
            .map_err(|e| DaemonError::Server(e.to_string()))
    });
    tracing::info!(%addr, "listening (mTLS, TLS 1.3, client certificate required)");
    Ok(Running { addr, http, state, stop, join })
}

/// The local admin listener: the same service on a Unix socket created 0600 (only the daemon's
/// user can connect; no TLS is needed on a socket nobody else can open).
fn serve_unix(
    path: &std::path::Path,
    state: Arc<HsmState>,
    p11: crate::p11::TokenService,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DaemonError::file("create", dir, e))?;
    }
    // A stale socket from a previous run; refuse to remove anything that is not a socket.
    if let Ok(m) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            return Err(DaemonError::Config(format!(
                "unix_socket: {} exists and is not a socket",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| DaemonError::file("remove", path, e))?;
    }
    // Bind inside a fresh 0700 directory, tighten the socket to 0600, then move it into place:
    // nobody else can connect between bind and chmod.
    let parent = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    let private = parent.join(format!(".bulwarkd-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(|e| DaemonError::file("create", &private, e))?;
    }
    let tmp = private.join("s");
    let listener = tokio::net::UnixListener::bind(&tmp)
        .map_err(|source| DaemonError::Listen { addr: path.display().to_string(), source })?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| DaemonError::file("create", path, e))?;
    let _ = std::fs::remove_dir(&private);
    let svc = HsmServer::new(HsmService::new(state))
        .max_decoding_message_size(bulwark_core::limits::MAX_MESSAGE);
    let p11_svc =
        TokenServer::new(p11).max_decoding_message_size(bulwark_core::limits::MAX_MESSAGE);
    let shown = path.display().to_string();
    // The socket is 0600, but a local process of the daemon's user can still open many
    // connections: the same limits and deadlines as on TCP.
    let (tx, rx) = mpsc::channel(128);
    let gate = Gate::new("unix", limits);
    let mut accept_stop = stop.clone();
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            tokio::select! {
                biased;
                _ = accept_stop.changed() => break,
                admitted = gate.next(&mut backoff, || listener.accept()) => {
                    let admitted = Admitted { conn: admitted.conn.0, permit: admitted.permit };
                    if tx.send(Ok::<_, std::io::Error>(admitted.guard(gate.limits()))).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        let r = limits
            .grpc_server()
            .add_service(svc)
            .add_service(p11_svc)
            .add_service(
                BootstrapServer::new(BootstrapService::initialized())
                    .max_decoding_message_size(bulwark_core::limits::MAX_MESSAGE),
            )
            .serve_with_incoming_shutdown(ReceiverStream::new(rx), async move {
                let _ = stop.changed().await;
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "unix socket listener ended");
        }
    });
    tracing::info!(path = %shown, "local admin listener (unix socket, 0600)");
    Ok(())
}
