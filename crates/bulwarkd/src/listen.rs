//! What every listener of the daemon shares: a cap on concurrent connections, deadlines for a
//! connection that does not speak (TLS handshake, first bytes, then idle), back-off when
//! `accept` itself fails, and log lines that cannot flood.
//!
//! The attack this answers: raw TCP connections that never start TLS, and TLS connections that
//! never send an HTTP/2 frame, held file descriptors until the process ran out of them; the
//! accept loop then failed with `EMFILE` in a tight loop and wrote millions of log lines.
//! Here each listener admits at most `max_connections` at once (one semaphore permit per
//! connection, taken before the handshake and released when the connection closes), refuses
//! the rest by closing them at once, sleeps with exponential back-off when `accept` fails for
//! lack of resources, and writes at most one line per kind of event every [`LOG_INTERVAL`]
//! with the count of the ones it held back.
//!
//! This module never reads what a connection carries; it only times and counts it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::error::DaemonError;

/// How often a rate-limited event may write a log line.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The first pause after a failed `accept`; it doubles on each further failure.
const BACKOFF_START: Duration = Duration::from_millis(5);
/// The longest pause after a failed `accept`.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Concurrent HTTP/2 streams per gRPC connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Largest HTTP/2 header list a client may send (gRPC metadata is small: a session token, a
/// request id).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Connection limits and deadlines, the same for every listener (each listener counts its own
/// connections). Configuration: the `[connections]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Connections open at once on one listener; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Time a TCP connection has to complete its TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Time a connection has, once accepted (after the TLS handshake where there is one), to
    /// send its first bytes (the HTTP/2 preface, an HTTP/1 request line); HTTP/1 request
    /// headers must also be complete within it.
    pub header_timeout_secs: u64,
    /// A connection from which nothing arrived for this long is closed. gRPC listeners ping
    /// idle HTTP/2 clients well within it, so a live client's connection stays open.
    pub idle_timeout_secs: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout_secs: 10,
            header_timeout_secs: 10,
            idle_timeout_secs: 300,
        }
    }
}

impl ConnectionLimits {
    /// Checks the values (all at least 1).
    pub fn validate(&self) -> Result<(), DaemonError> {
        if self.max_connections == 0 {
            return Err(DaemonError::Config(
                "connections.max_connections must be at least 1".into(),
            ));
        }
        if self.handshake_timeout_secs == 0
            || self.header_timeout_secs == 0
            || self.idle_timeout_secs == 0
        {
            return Err(DaemonError::Config(
                "connection timeouts must be at least 1 second".into(),
            ));
        }
        Ok(())
    }

    /// TLS handshake deadline.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }

    /// First-bytes and HTTP/1 header deadline.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs.max(1))
    }

    /// Idle deadline.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }

    /// HTTP/2 keep-alive: a ping after a third of the idle timeout without traffic, answered
    /// within another third, so that a live client is never idle long enough to be closed and
    /// a dead one is closed by hyper before the idle deadline.
    fn keepalive(&self) -> (Duration, Duration) {
        let third = (self.idle_timeout() / 3).max(Duration::from_secs(1));
        (third, third.min(Duration::from_secs(20)))
    }

    /// Applies `BULWARKD_MAX_CONNECTIONS`, `BULWARKD_HANDSHAKE_TIMEOUT_SECS`,
    /// `BULWARKD_HEADER_TIMEOUT_SECS` and `BULWARKD_IDLE_TIMEOUT_SECS`.
    pub fn apply_env(&mut self) -> Result<(), DaemonError> {
        fn num<T: std::str::FromStr>(k: &str, to: &mut T) -> Result<(), DaemonError> {
            if let Some(v) = std::env::var(k).ok().filter(|v| !v.is_empty()) {
                *to = v.parse().map_err(|_| DaemonError::Config(format!("{k}: not a number")))?;
            }
            Ok(())
        }
        num("BULWARKD_MAX_CONNECTIONS", &mut self.max_connections)?;
        num("BULWARKD_HANDSHAKE_TIMEOUT_SECS", &mut self.handshake_timeout_secs)?;
        num("BULWARKD_HEADER_TIMEOUT_SECS", &mut self.header_timeout_secs)?;
        num("BULWARKD_IDLE_TIMEOUT_SECS", &mut self.idle_timeout_secs)?;
        self.validate()
    }

    /// A gRPC server with these limits: HTTP/2 keep-alive pings within the idle timeout, a cap
    /// on streams per connection and on header size.
    pub(crate) fn grpc_server(&self) -> tonic::transport::Server {
        let (interval, timeout) = self.keepalive();
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(interval))
            .http2_keepalive_timeout(Some(timeout))
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .http2_max_header_list_size(MAX_HEADER_LIST)
    }
}

/// A log line that is written at most once per [`LOG_INTERVAL`]; the next line says how many
/// events were held back meanwhile.
#[derive(Debug, Default)]
pub(crate) struct RateLimitedLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    /// Counts one event; returns `Some(held_back)` when a line may be written now (the number
    /// of events since the last line that were not logged), `None` otherwise.
    pub(crate) fn event(&self) -> Option<u64> {
        self.event_at(Instant::now())
    }

    fn event_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => {
                s.1 += 1;
                None
            }
            _ => {
                let held = s.1;
                *s = (Some(now), 0);
                Some(held)
            }
        }
    }
}

/// Exponential back-off for a failing `accept`.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self { next: BACKOFF_START }
    }
}

impl AcceptBackoff {
    /// The pause before the next `accept` after `e`: none for an error that concerns only the
    /// one connection (it was reset before it was accepted), else the current back-off, which
    /// then doubles (up to [`BACKOFF_MAX`]). Running out of file descriptors (`EMFILE`,
    /// `ENFILE`) or memory leaves the pending connection in the queue, so retrying at once
    /// would spin.
    pub(crate) fn on_error(&mut self, e: &io::Error) -> Option<Duration> {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
        ) {
            return None;
        }
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        Some(d)
    }

    /// An `accept` succeeded: the next failure starts from the shortest pause again.
    pub(crate) fn on_success(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// The shared state of one listener: its connection permits and its rate-limited logs.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    name: &'static str,
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    logs: Arc<Logs>,
}

#[derive(Debug, Default)]
struct Logs {
    accept: RateLimitedLog,
    full: RateLimitedLog,
    handshake: RateLimitedLog,
}

impl Gate {
    /// A gate for the listener `name` (used in log lines).
    pub(crate) fn new(name: &'static str, limits: ConnectionLimits) -> Self {
        Self {
            name,
            limits,
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            logs: Arc::default(),
        }
    }

    /// The limits.
    pub(crate) fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Waits for the next connection on `accept`, pausing after failures (see
    /// [`AcceptBackoff`]) and refusing (closing) connections beyond the limit. Cancel-safe.
    pub(crate) async fn next<T, F, Fut>(
        &self,
        backoff: &mut AcceptBackoff,
        mut accept: F,
    ) -> Admitted<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<T>>,
    {
        loop {
            match accept().await {
                Ok(conn) => {
                    backoff.on_success();
                    if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                        return Admitted { conn, permit };
                    }
                    drop(conn);
                    if let Some(held) = self.logs.full.event() {
                        tracing::warn!(
                            listener = self.name,
                            max_connections = self.limits.max_connections,
                            refused_since_last_line = held + 1,
                            "connection limit reached: closing new connections"
                        );
                    }
                }
                Err(e) => {
                    let pause = backoff.on_error(&e);
                    if let Some(held) = self.logs.accept.event() {
                        tracing::warn!(
                            listener = self.name,
                            error = %e,
                            errors_since_last_line = held + 1,
                            "accept failed"
                        );
                    }
                    if let Some(d) = pause {
                        tokio::time::sleep(d).await;
                    }
                }
            }
        }
    }

    /// Logs a failed or timed-out TLS handshake (rate-limited).
    pub(crate) fn handshake_failed(
        &self,
        peer: &dyn std::fmt::Display,
        why: &dyn std::fmt::Display,
    ) {
        if let Some(held) = self.logs.handshake.event() {
            tracing::warn!(
                listener = self.name,
                %peer,
                error = %why,
                failures_since_last_line = held + 1,
                "TLS handshake refused or timed out"
            );
        }
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.limits.max_connections - self.permits.available_permits()
    }
}

/// An accepted connection and its place under the listener's limit.
#[derive(Debug)]
pub(crate) struct Admitted<T> {
    /// The connection.
    pub(crate) conn: T,
    /// Released when the connection is dropped.
    pub(crate) permit: OwnedSemaphorePermit,
}

impl<T> Admitted<T> {
    /// The connection under its deadlines: first bytes within the header timeout, then
    /// nothing-received for at most the idle timeout.
    pub(crate) fn guard(self, limits: &ConnectionLimits) -> Guarded<T> {
        Guarded::new(self.conn, self.permit, limits)
    }
}

/// A connection that holds its listener permit and fails with `TimedOut` once nothing has
/// arrived for too long: the header timeout until the first bytes, then the idle timeout. The
/// server then drops it, which closes the socket and frees the permit.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    timer: Pin<Box<Sleep>>,
    last_read: Instant,
    limit: Duration,
    idle: Duration,
    spoke: bool,
}

impl<S> Guarded<S> {
    fn new(inner: S, permit: OwnedSemaphorePermit, limits: &ConnectionLimits) -> Self {
        let now = Instant::now();
        Self {
            inner,
            _permit: permit,
            timer: Box::pin(tokio::time::sleep_until(now + limits.header_timeout())),
            last_read: now,
            limit: limits.header_timeout(),
            idle: limits.idle_timeout(),
            spoke: false,
        }
    }

    fn received(&mut self) {
        self.last_read = Instant::now();
        if !self.spoke {
            self.spoke = true;
            self.limit = self.idle;
        }
    }

    /// Ready(err) once the deadline passed; the timer is moved forward lazily (only when it
    /// fires), so a busy connection costs no timer updates.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_read + self.limit;
            if due > Instant::now() {
                self.timer.as_mut().reset(due);
                continue;
            }
            let what =
                if self.spoke { "idle timeout" } else { "no request within the header timeout" };
            return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            // A peer that reads nothing blocks writes: the same deadline applies.
            Poll::Pending => self.poll_deadline(cx).map(Err),
            r @ Poll::Ready(_) => r,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.poll_deadline(cx).map(Err),
            r @ Poll::Ready(_) => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.poll_deadline(cx).map(Err),
            r @ Poll::Ready(_) => r,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn log_lines_are_rate_limited_and_count_what_they_held_back() {
        let log = RateLimitedLog::default();
        let t0 = Instant::now();
        assert_eq!(log.event_at(t0), Some(0));
        let mut lines = 1;
        for i in 1..1_000_000u32 {
            if log.event_at(t0 + Duration::from_micros(u64::from(i))).is_some() {
                lines += 1;
            }
        }
        assert_eq!(lines, 1, "a million events within a second write one line");
        assert_eq!(log.event_at(t0 + LOG_INTERVAL), Some(999_999));
        assert_eq!(log.event_at(t0 + LOG_INTERVAL + Duration::from_secs(1)), None);
    }

    #[test]
    fn accept_backoff_grows_to_its_cap_and_resets() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let mut pauses = Vec::new();
        for _ in 0..12 {
            pauses.push(b.on_error(&emfile).expect("EMFILE pauses"));
        }
        assert_eq!(pauses[0], BACKOFF_START);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), BACKOFF_MAX);
        assert_eq!(b.on_error(&io::Error::from(io::ErrorKind::ConnectionAborted)), None);
        b.on_success();
        assert_eq!(b.on_error(&emfile), Some(BACKOFF_START));
    }

    /// An `accept` that fails with EMFILE forever: the gate sleeps between attempts instead of
    /// spinning, and logs one line.
    #[tokio::test(start_paused = true)]
    async fn failing_accept_does_not_spin() {
        let gate = Gate::new("test", ConnectionLimits::default());
        let calls = std::sync::atomic::AtomicU32::new(0);
        let mut backoff = AcceptBackoff::default();
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            gate.next(&mut backoff, || {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { Err::<(), _>(io::Error::from_raw_os_error(24)) }
            }),
        )
        .await;
        assert!(r.is_err(), "never accepts");
        let n = calls.load(std::sync::atomic::Ordering::Relaxed);
        // 5 ms, 10, 20, ... 640 ms, then 1 s each: about a dozen attempts in 5 s.
        assert!((5..=20).contains(&n), "{n} accept attempts in 5 s");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_and_permits_come_back() {
        let limits = ConnectionLimits { max_connections: 2, ..ConnectionLimits::default() };
        let gate = Gate::new("test", limits);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut backoff = AcceptBackoff::default();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let a = gate.next(&mut backoff, || l.accept()).await;
        let b = gate.next(&mut backoff, || l.accept()).await;
        assert_eq!(gate.open(), 2);
        // The third is accepted and closed; the gate waits for a fourth.
        let pending = tokio::time::timeout(
            Duration::from_millis(300),
            gate.next(&mut backoff, || l.accept()),
        )
        .await;
        assert!(pending.is_err());
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), clients[2].read(&mut byte))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0, "the third connection is closed");
        drop(a);
        assert_eq!(gate.open(), 1);
        drop(b);
        assert_eq!(gate.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_time_out_and_talking_ones_do_not() {
        let limits = ConnectionLimits {
            header_timeout_secs: 2,
            idle_timeout_secs: 5,
            ..ConnectionLimits::default()
        };
        let sem = Arc::new(Semaphore::new(4));
        // Never says anything: closed after the header timeout.
        let (_peer, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(server, sem.clone().try_acquire_owned().unwrap(), &limits);
        let t0 = Instant::now();
        let mut buf = [0u8; 8];
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t0.elapsed().as_secs(), 2);
        drop(g);
        assert_eq!(sem.available_permits(), 4, "a closed connection frees its permit");
        // Speaks every 4 s (under the 5 s idle timeout) for a while, then stops.
        let (mut peer, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(server, sem.clone().try_acquire_owned().unwrap(), &limits);
        let talker = tokio::spawn(async move {
            for _ in 0..5 {
                peer.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            peer
        });
        let t0 = Instant::now();
        let mut got = 0;
        let e = loop {
            match g.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(got, 5);
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // Last byte at 16 s, closed 5 s later.
        assert_eq!(t0.elapsed().as_secs(), 21);
        drop(g);
        assert_eq!(sem.available_permits(), 4);
        drop(talker);
    }
}
