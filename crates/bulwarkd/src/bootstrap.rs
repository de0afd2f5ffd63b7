//! Uninitialized mode: a daemon whose configured store does not exist serves only the bootstrap
//! service (`proto/bulwark/bootstrap/v1/bootstrap.proto`) on its mTLS listener, until a client
//! initializes the HSM with `Initialize`; it then hands the listening socket over to the normal
//! service ([`crate::server::start_on`]), sealed, without a restart.
//!
//! `Initialize` creates the quorum store (as `bulwarkd init`) with the first security officer
//! inside it (users live in the store, under the master key), records `init` in the store's
//! audit log, and returns the share files to the caller, which encrypts each to its custodian. The shares are never written on
//! the HSM's host and never logged. Before initialization every other call is refused with
//! FAILED_PRECONDITION "not initialized"; after it, `Initialize` is refused with ALREADY_EXISTS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bulwark_core::audit::{Actor, AuditEvent};
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::seal::ShareFile;
use bulwark_core::token::{SecurityPolicy, TamperResponse};
use bulwark_proto::bootstrap::v1 as pb;
use bulwark_proto::bootstrap::v1::bootstrap_server::{Bootstrap, BootstrapServer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::DaemonError;
use crate::server::Running;
use bulwark_core::kernel::Role;
use bulwark_core::token::InitialUser;

/// The message of every call refused before initialization.
pub const NOT_INITIALIZED: &str = "not initialized";

/// The bootstrap service, before (`pending`) or after initialization.
#[derive(Clone, Debug)]
pub struct BootstrapService {
    pending: Option<Arc<Pending>>,
}

/// What `Initialize` needs, and the signal it raises when it is done.
#[derive(Debug)]
struct Pending {
    cfg: Config,
    /// Serializes `Initialize` calls; true once the store exists.
    done: Mutex<bool>,
    initialized: watch::Sender<bool>,
    /// Stops the bootstrap listener: set before the `Initialize` reply leaves, so that the
    /// caller's next connection waits for the normal service instead of reaching this one.
    stop: watch::Sender<bool>,
}

impl BootstrapService {
    /// The service of an initialized HSM: `Status` says so, `Initialize` is refused.
    pub fn initialized() -> Self {
        Self { pending: None }
    }

    fn is_initialized(&self) -> bool {
        // The watch, not the `done` lock: an `Initialize` in progress holds that for a while.
        self.pending.as_ref().is_none_or(|p| *p.initialized.borrow())
    }
}

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

#[tonic::async_trait]
impl Bootstrap for BootstrapService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(pb::StatusResponse {
            initialized: self.is_initialized(),
            version: version(),
        }))
    }

    async fn initialize(
        &self,
        req: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::InitializeResponse>, Status> {
        let Some(p) = self.pending.clone() else {
            return Err(Status::already_exists("the HSM is already initialized"));
        };
        let client = crate::service::client_id(&req);
        let mut r = req.into_inner();
        let params = Params::try_from(&r);
        // Moved (not copied) into a buffer that is wiped on drop.
        let password = Zeroizing::new(std::mem::take(&mut r.so_password));
        let params = params?;
        // Store creation, Argon2id and the share files' JSON: off the reactor.
        let resp = tokio::task::spawn_blocking(move || p.initialize(&params, &password, &client))
            .await
            .map_err(|_| Status::internal("internal error"))??;
        Ok(Response::new(resp))
    }
}

/// A checked `InitializeRequest` (without the password).
struct Params {
    label: String,
    shares: u8,
    threshold: u8,
    policy: SecurityPolicy,
    so_name: String,
}

impl TryFrom<&pb::InitializeRequest> for Params {
    type Error = Status;

    fn try_from(r: &pb::InitializeRequest) -> Result<Self, Status> {
        let (Ok(shares), Ok(threshold)) = (u8::try_from(r.shares), u8::try_from(r.threshold))
        else {
            return Err(Status::invalid_argument("quorum needs 2 <= threshold <= shares <= 255"));
        };
        if threshold < 2 || shares < threshold {
            return Err(Status::invalid_argument("quorum needs 2 <= threshold <= shares <= 255"));
        }
        bulwark_core::limits::check_token_label(&r.label)
            .map_err(|e| bulwark_proto::status_from_core(&e))?;
        crate::users::check_name(&r.so_name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if r.so_password.len() < 8 {
            return Err(Status::invalid_argument(
                "the security officer's password must be at least 8 bytes",
            ));
        }
        let d = SecurityPolicy::default();
        let pol = r.policy.clone().unwrap_or_default();
        let tamper_file = if pol.tamper_file.is_empty() {
            None
        } else if Path::new(&pol.tamper_file).is_absolute() {
            Some(pol.tamper_file.clone().into())
        } else {
            return Err(Status::invalid_argument(
                "tamper_file must be an absolute path on the HSM's host",
            ));
        };
        let policy = SecurityPolicy {
            tamper_response: match pol.tamper_response() {
                pb::TamperResponse::Unspecified | pb::TamperResponse::Alarm => {
                    TamperResponse::Alarm
                }
                pb::TamperResponse::Zeroize => TamperResponse::Zeroize,
            },
            tamper_file,
            tracer_is_tamper: pol.tracer_is_tamper,
            audit_key_use: if pol.audit_key_use_class.is_empty() {
                pol.audit_key_use.map_or(d.audit_key_use, Into::into)
            } else {
                pol.audit_key_use_class.parse().map_err(|e| bulwark_proto::status_from_core(&e))?
            },
            so_failure_limit: pol.so_failure_limit.unwrap_or(d.so_failure_limit),
            checkpoint_every_records: pol
                .checkpoint_every_records
                .unwrap_or(d.checkpoint_every_records),
            checkpoint_every_secs: pol.checkpoint_every_secs.unwrap_or(d.checkpoint_every_secs),
            // A network HSM: keys leave only under keys its security officer trusts.
            wrap_requires_trusted: true,
            require_token_iv: d.require_token_iv,
        };
        Ok(Self { label: r.label.clone(), shares, threshold, policy, so_name: r.so_name.clone() })
    }
}

impl Pending {
    /// Creates the store, the first security officer and the share files. Blocking.
    fn initialize(
        &self,
        p: &Params,
        so_password: &str,
        client: &str,
    ) -> Result<pb::InitializeResponse, Status> {
        let mut done = self.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *done || self.cfg.store.exists() {
            return Err(Status::already_exists("the HSM is already initialized"));
        }
        // A dangling symlink "does not exist" but would decide where the new store lands.
        bulwark_core::fsutil::check_store_path(&self.cfg.store)
            .map_err(|e| bulwark_proto::status_from_core(&e))?;
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "initialize: {what}");
            Status::internal(format!("cannot initialize the HSM: {what} (see the daemon's log)"))
        };
        {
            let file = &self.cfg.store;
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| internal("data directory", &e))?;
            }
        }
        let so = InitialUser {
            name: p.so_name.clone(),
            role: Role::SecurityOfficer,
            password: Zeroizing::new(so_password.as_bytes().to_vec()),
        };
        let init = bulwark_core::seal::init_quorum_store_with_users(
            &self.cfg.store,
            &p.label,
            p.shares,
            p.threshold,
            &p.policy,
            std::slice::from_ref(&so),
        )
        .map_err(|e| bulwark_proto::status_from_core(&e))?;
        // From here on a failure removes the new store: a half-made HSM whose shares nobody
        // received must not stay behind (a new Initialize can then run).
        let undo = |st: Status| {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = self.cfg.store.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
            st
        };
        let mut files = Vec::with_capacity(init.shares.len());
        for s in &init.shares {
            let f = ShareFile::new(&init, s, None, KdfParams::default())
                .map_err(|e| undo(bulwark_proto::status_from_core(&e)))?;
            files.push(f.to_json().into_bytes());
        }
        let store_id = hex::encode(init.store_uid);
        record_init(&self.cfg.store, p, client);
        *done = true;
        tracing::warn!(
            %store_id,
            label = %p.label,
            threshold = p.threshold,
            shares = p.shares,
            so = %p.so_name,
            %client,
            "HSM initialized over the network: the daemon now serves sealed"
        );
        self.stop.send_replace(true);
        self.initialized.send_replace(true);
        Ok(pb::InitializeResponse { store_id, share_files: files })
    }
}

/// Opens the new store once (which creates its audit log) and records `init` in it. A failure
/// is logged, not returned: the store exists and its shares must reach the caller.
fn record_init(store: &Path, p: &Params, client: &str) {
    let token = match bulwark_core::Token::open(store) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "initialize: cannot open the new store to record init");
            return;
        }
    };
    let Some(log) = token.audit_log() else {
        tracing::error!("initialize: the new store has no audit log; init is not recorded");
        return;
    };
    let ev = AuditEvent {
        actor: Actor { name: "-".into(), role: "bootstrap".into(), client: client.to_owned() },
        op: "init",
        result: "ok",
        detail: format!(
            "label {:?}, quorum {} of {}, first security officer {:?}, tamper response {}, \
             audit of key use {}",
            p.label,
            p.threshold,
            p.shares,
            p.so_name,
            match p.policy.tamper_response {
                TamperResponse::Zeroize => "zeroize",
                TamperResponse::Alarm => "alarm",
            },
            p.policy.audit_key_use.as_str(),
        ),
        ..AuditEvent::default()
    };
    if let Err(e) = log.append(&ev) {
        tracing::error!(error = %e, "initialize: cannot record init in the audit log");
    }
}

/// Refuses every call of the service `S` names with FAILED_PRECONDITION "not initialized"
/// (instead of UNIMPLEMENTED, which would read as "wrong server").
#[derive(Clone, Copy, Debug, Default)]
struct Refuse<S>(std::marker::PhantomData<S>);

/// A service name, for [`Refuse`].
trait Named {
    const NAME: &'static str;
}

#[derive(Clone, Copy, Debug, Default)]
struct HsmName;
impl Named for HsmName {
    const NAME: &'static str = bulwark_proto::v1::hsm_server::SERVICE_NAME;
}

#[derive(Clone, Copy, Debug, Default)]
struct TokenName;
impl Named for TokenName {
    const NAME: &'static str = bulwark_proto::p11::v1::token_server::SERVICE_NAME;
}

impl<S: Named> tonic::server::NamedService for Refuse<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Refuse<S> {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: tonic::codegen::http::Request<B>) -> Self::Future {
        let st = bulwark_proto::with_reason(
            Status::failed_precondition(NOT_INITIALIZED),
            bulwark_proto::Reason::NotInitialized,
        );
        std::future::ready(Ok(st.into_http()))
    }
}

/// An uninitialized daemon serving the bootstrap service.
#[derive(Debug)]
pub struct Uninitialized {
    /// The bound address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    initialized: watch::Receiver<bool>,
    server: JoinHandle<Result<(), DaemonError>>,
    accept: JoinHandle<TcpListener>,
}

/// Binds `cfg.listen` and serves the bootstrap service (mTLS, client certificate required).
pub async fn start(cfg: &Config) -> Result<Uninitialized, DaemonError> {
    let acceptor = crate::server::tls_acceptor(cfg)?;
    let listener = crate::server::bind(cfg).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen { addr: cfg.listen.to_string(), source })?;
    let (stop, stop_rx) = watch::channel(false);
    let (incoming, accept) =
        crate::server::spawn_accept(listener, acceptor, cfg.connections, stop_rx.clone());
    let (initialized_tx, initialized) = watch::channel(false);
    let svc = BootstrapService {
        pending: Some(Arc::new(Pending {
            cfg: cfg.clone(),
            done: Mutex::new(false),
            initialized: initialized_tx,
            stop: stop.clone(),
        })),
    };
    let mut server_stop = stop_rx;
    let limits = cfg.connections;
    let server = tokio::spawn(async move {
        limits
            .grpc_server()
            .add_service(
                BootstrapServer::new(svc)
                    .max_decoding_message_size(bulwark_core::limits::MAX_MESSAGE),
            )
            .add_service(Refuse::<HsmName>::default())
            .add_service(Refuse::<TokenName>::default())
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = server_stop.wait_for(|v| *v).await;
            })
            .await
            .map_err(|e| DaemonError::Server(e.to_string()))
    });
    tracing::warn!(
        %addr,
        store = %cfg.store.display(),
        "NOT INITIALIZED: no store; serving only the bootstrap service (mTLS) until \
         `bulwark --endpoint URL init ...` initializes this HSM"
    );
    Ok(Uninitialized { addr, stop, initialized, server, accept })
}

impl Uninitialized {
    /// Serves until a client initializes the HSM, then stops the bootstrap server (letting the
    /// `Initialize` call finish) and returns the listening socket for the normal service; or
    /// until `shutdown` resolves (None).
    pub async fn wait(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<Option<TcpListener>, DaemonError> {
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
        let tamper = async {
            if let Some(s) = usr1.as_mut() {
                while s.recv().await.is_some() {
                    tracing::warn!(
                        "SIGUSR1 (tamper signal) while not initialized: no store, nothing to protect"
                    );
                }
            }
            std::future::pending::<()>().await;
        };
        let initialized = tokio::select! {
            r = self.initialized.wait_for(|v| *v) => r.is_ok(),
            () = shutdown => false,
            () = tamper => false,
        };
        let _ = self.stop.send(true);
        // The graceful shutdown finishes in-flight calls (the Initialize reply); a client that
        // keeps its connection open past the grace period is cut off.
        if let Ok(r) = tokio::time::timeout(crate::server::SHUTDOWN_GRACE, &mut self.server).await {
            r.map_err(|e| DaemonError::Server(e.to_string())).and_then(|r| r)?;
        } else {
            tracing::warn!("bootstrap: closing the remaining connections");
            self.server.abort();
        }
        let listener = self.accept.await.map_err(|e| DaemonError::Server(e.to_string()))?;
        Ok(initialized.then_some(listener))
    }
}

/// Runs the daemon for `cfg`: while the store does not exist, the bootstrap service (until a
/// client initializes the HSM, or `shutdown` resolves: then None); then the normal service,
/// sealed, on the same socket. `listening` is told each bound address and whether the HSM is
/// initialized there.
pub async fn start_daemon(
    cfg: &Config,
    shutdown: impl std::future::Future<Output = ()>,
    mut listening: impl FnMut(SocketAddr, bool),
) -> Result<Option<Running>, DaemonError> {
    let listener = if cfg.store.exists()
        || matches!(cfg.store_location(), crate::config::StoreLocation::Postgres(_))
    {
        // A PostgreSQL store is created with `bulwarkd init` (no remote initialization).
        None
    } else {
        let boot = start(cfg).await?;
        listening(boot.addr, false);
        match boot.wait(shutdown).await? {
            Some(l) => Some(l),
            None => return Ok(None),
        }
    };
    let state = crate::server::open_state(cfg, false)?;
    if let Some(pid) = bulwark_harden::tracer_pid() {
        state.tracer_attached(pid);
    }
    tracing::info!(
        "HSM is sealed: present {} unseal share(s) with `bulwark unseal`",
        state.unseal_progress().1
    );
    let running = crate::server::start_on(cfg, state, listener).await?;
    listening(running.addr, true);
    Ok(Some(running))
}

/// [`start_daemon`] on its own runtime, for tests of tools that are not async. Stops on drop.
#[derive(Debug)]
pub struct DaemonThread {
    /// The bound address (the same before and after initialization).
    pub addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), DaemonError>>>,
}

impl DaemonThread {
    /// Starts a daemon for `cfg` and waits until it listens.
    pub fn start(cfg: Config) -> Result<Self, DaemonError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| DaemonError::Server(e.to_string()))?;
        let (stop, stop_rx) = watch::channel(false);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let mut stop_boot = stop_rx.clone();
        let mut stop_serve = stop_rx;
        let task = rt.spawn(async move {
            let shutdown = async move {
                let _ = stop_boot.wait_for(|v| *v).await;
            };
            let listening = move |a: SocketAddr, _: bool| {
                let _ = addr_tx.send(a);
            };
            let Some(running) = start_daemon(&cfg, shutdown, listening).await? else {
                return Ok(());
            };
            let _ = stop_serve.wait_for(|v| *v).await;
            running.shutdown().await
        });
        match addr_rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(addr) => Ok(Self { addr, rt: Some(rt), stop, task: Some(task) }),
            Err(_) => Err(rt
                .block_on(task)
                .map_err(|e| DaemonError::Server(e.to_string()))
                .and_then(|r| r)
                .err()
                .unwrap_or_else(|| DaemonError::Server("the daemon did not start".into()))),
        }
    }
}

impl Drop for DaemonThread {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let (Some(rt), Some(task)) = (self.rt.take(), self.task.take()) {
            let _ = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), task).await
            });
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> pb::InitializeRequest {
        pb::InitializeRequest {
            label: "hsm".into(),
            shares: 3,
            threshold: 2,
            policy: None,
            so_name: "so1".into(),
            so_password: "password-1".into(),
        }
    }

    #[test]
    fn requests_are_checked_before_anything_is_created() {
        let p = Params::try_from(&req()).unwrap();
        assert_eq!((p.shares, p.threshold), (3, 2));
        // Absent optional policy fields take bulwarkd init's defaults.
        assert_eq!(p.policy.audit_key_use, SecurityPolicy::default().audit_key_use);
        assert_eq!(p.policy.so_failure_limit, SecurityPolicy::default().so_failure_limit);
        let bad = [
            pb::InitializeRequest { shares: 300, ..req() },
            pb::InitializeRequest { threshold: 1, ..req() },
            pb::InitializeRequest { threshold: 4, ..req() },
            pb::InitializeRequest { label: String::new(), ..req() },
            pb::InitializeRequest { so_name: String::new(), ..req() },
            pb::InitializeRequest { so_password: "short".into(), ..req() },
            pb::InitializeRequest {
                policy: Some(pb::SecurityPolicy {
                    tamper_file: "relative/file".into(),
                    ..Default::default()
                }),
                ..req()
            },
        ];
        for r in &bad {
            let e = Params::try_from(r).err().unwrap();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(!e.message().contains("password-1"));
        }
    }
}
