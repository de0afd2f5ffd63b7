//! Start-up and shutdown: opens the store sealed, binds the mTLS listener, serves gRPC until
//! told to stop, then wipes the keys.
//!
//! Each TCP connection's TLS handshake runs in its own task with a deadline, so a slow or
//! hostile client cannot stall the accept loop; only connections that completed the handshake
//! (with a valid client certificate) reach the gRPC server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bulwark_core::seal::QuorumPolicy;
use bulwark_core::Token;
use bulwark_proto::v1::hsm_server::HsmServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::Config;
use crate::service::HsmService;
use crate::state::HsmState;
use crate::users::Users;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the store (sealed) and the user database.
pub fn open_state(cfg: &Config, dev_mode: bool) -> Result<Arc<HsmState>, String> {
    let policy = QuorumPolicy::load(&cfg.store).map_err(|e| format!("store: {e}"))?;
    let token = Token::open(&cfg.store).map_err(|e| format!("store: {e}"))?;
    let users = Users::load(&cfg.users)?;
    Ok(Arc::new(HsmState::new(
        token,
        policy,
        users,
        cfg.worker_count(),
        Duration::from_secs(cfg.session_ttl_secs.max(1)),
        dev_mode,
    )))
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
    join: JoinHandle<Result<(), String>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, then seals (wipes keys).
    pub async fn shutdown(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        let r = self.join.await.map_err(|e| e.to_string())?;
        self.state.seal();
        r
    }

    /// Waits until the server ends.
    pub async fn wait(self) -> Result<(), String> {
        let r = self.join.await.map_err(|e| e.to_string())?;
        self.state.seal();
        r
    }

    /// A handle that stops the server.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Binds `cfg.listen` and serves.
pub async fn start(cfg: &Config, state: Arc<HsmState>) -> Result<Running, String> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {}", p.display(), e.kind()))
    };
    let tls = crate::tls::server_config(
        &read(&cfg.tls.ca)?,
        &read(&cfg.tls.cert)?,
        &read(&cfg.tls.key)?,
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, mut stop_rx) = watch::channel(false);
    let (tx, rx) = mpsc::channel(128);
    let mut accept_stop = stop_rx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = accept_stop.changed() => break,
                r = listener.accept() => {
                    let (tcp, peer) = match r {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let _ = tx.send(Ok::<_, std::io::Error>(s)).await;
                            }
                            Ok(Err(e)) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
                            Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    let http = match cfg.http_listen {
        Some(a) => Some(crate::metrics::serve_http(a, state.clone(), stop_rx.clone()).await?),
        None => None,
    };
    let svc = HsmServer::new(HsmService::new(state.clone()));
    let join = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(ReceiverStream::new(rx), async move {
                let _ = stop_rx.changed().await;
            })
            .await
            .map_err(|e| e.to_string())
    });
    tracing::info!(%addr, "listening (mTLS, TLS 1.3, client certificate required)");
    Ok(Running { addr, http, state, stop, join })
}
