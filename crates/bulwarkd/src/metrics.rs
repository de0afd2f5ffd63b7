//! Prometheus metrics and the small HTTP surface (`/health`, `/status`, `/metrics`).
//!
//! Counters are per operation and result (`ok` or the gRPC code name); latencies go into one
//! fixed-bucket histogram per operation. Nothing here carries a user name, a key label or any
//! data: metrics are safe to expose to a monitoring system without authentication, which is why
//! the HTTP listener is plain HTTP and meant for loopback or a management network.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::DaemonError;
use crate::listen::{AcceptBackoff, Admitted, ConnectionLimits, Gate};
use crate::state::HsmState;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Operation counters and latency histograms.
#[derive(Default)]
pub struct Metrics {
    ops: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The Prometheus-style name of a gRPC code.
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code;
    match c {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::Unauthenticated => "unauthenticated",
        Code::FailedPrecondition => "failed_precondition",
        Code::DataLoss => "data_loss",
        Code::Unavailable => "unavailable",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        _ => "other",
    }
}

impl Metrics {
    /// Records one operation.
    pub fn observe(&self, op: &'static str, result: &'static str, elapsed: Duration) {
        *lock(&self.ops).entry((op, result)).or_insert(0) += 1;
        let secs = elapsed.as_secs_f64();
        let mut l = lock(&self.latency);
        let h = l.entry(op).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self, sealed: bool, progress: u8) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP bulwark_sealed 1 while the HSM is sealed.");
        let _ = writeln!(out, "# TYPE bulwark_sealed gauge");
        let _ = writeln!(out, "bulwark_sealed {}", u8::from(sealed));
        let _ = writeln!(out, "# HELP bulwark_unseal_progress Valid shares presented so far.");
        let _ = writeln!(out, "# TYPE bulwark_unseal_progress gauge");
        let _ = writeln!(out, "bulwark_unseal_progress {progress}");
        let _ = writeln!(out, "# HELP bulwark_operations_total Operations by type and result.");
        let _ = writeln!(out, "# TYPE bulwark_operations_total counter");
        for ((op, result), n) in lock(&self.ops).iter() {
            let _ =
                writeln!(out, "bulwark_operations_total{{op=\"{op}\",result=\"{result}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP bulwark_operation_seconds Operation latency in the daemon.");
        let _ = writeln!(out, "# TYPE bulwark_operation_seconds histogram");
        for (op, h) in lock(&self.latency).iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "bulwark_operation_seconds_bucket{{op=\"{op}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "bulwark_operation_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "bulwark_operation_seconds_sum{{op=\"{op}\"}} {}", h.sum);
            let _ = writeln!(out, "bulwark_operation_seconds_count{{op=\"{op}\"}} {}", h.count);
        }
        out
    }
}

/// Serves `/health`, `/status` and `/metrics` on `addr` until `stop` fires; returns the bound
/// address. HTTP/1 only, under `limits` (connection cap, header and idle deadlines).
pub async fn serve_http(
    addr: SocketAddr,
    state: Arc<HsmState>,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
) -> Result<SocketAddr, DaemonError> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr: addr.to_string(), source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen { addr: addr.to_string(), source })?;
    let (s1, s2, s3) = (state.clone(), state.clone(), state);
    let app = axum::Router::new()
        .route(
            "/health",
            get(move || async move {
                let ok = bulwark_core::crypto::Provider::get().is_ok_and(|p| p.check().is_ok());
                let sealed = s1.is_sealed();
                let body = if !ok {
                    "error state"
                } else if sealed {
                    "sealed"
                } else {
                    "ok"
                };
                // Sealed is healthy for a liveness probe but not ready to serve keys.
                let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (code, body)
            }),
        )
        .route(
            "/status",
            get(move || async move {
                let (progress, threshold, shares) = s2.unseal_progress();
                let v = serde_json::json!({
                    "sealed": s2.is_sealed(),
                    "unseal_progress": progress,
                    "unseal_threshold": threshold,
                    "unseal_shares": shares,
                    "version": env!("CARGO_PKG_VERSION"),
                });
                ([(header::CONTENT_TYPE, "application/json")], v.to_string())
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                let (progress, _, _) = s3.unseal_progress();
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    s3.metrics.render(s3.is_sealed(), progress)
                        + &s3.cluster().map(|n| n.render_metrics()).unwrap_or_default(),
                )
            }),
        );
    tokio::spawn(serve_connections(listener, app, limits, stop));
    tracing::info!(addr = %bound, "HTTP health/status/metrics listening (plain HTTP)");
    Ok(bound)
}

/// The HTTP accept loop: at most `limits.max_connections` connections, each with hyper's
/// header-read deadline and the idle deadline of [`crate::listen::Guarded`].
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let gate = Gate::new("http", limits);
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            admitted = gate.next(&mut backoff, || listener.accept()) => {
                let admitted = Admitted { conn: admitted.conn.0, permit: admitted.permit };
                let io = hyper_util::rt::TokioIo::new(admitted.guard(&limits));
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(limits.header_timeout())
                        .max_buf_size(64 * 1024);
                    let conn = builder.serve_connection(io, svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        }
    }
}
