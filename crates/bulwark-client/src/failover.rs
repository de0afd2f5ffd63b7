//! Endpoint lists and failover (cluster mode, docs/cluster.md): one gRPC "channel" over several
//! `bulwarkd` nodes of one cluster.
//!
//! `https://a:7443,https://b:7443,https://c:7443` names the nodes in order of preference. Calls
//! go to the current node (the first at start). When it cannot be reached, the connection
//! breaks, or it answers UNAVAILABLE (a node whose cluster lease lapsed, or that is shutting
//! down), the call is sent again to the next node, and so on once around the list; the node
//! that answered becomes the current one.
//!
//! **Sessions.** A login session lives on the node that made it (its bearer token is refused
//! by any other). When a call that carries a session moves to another node, the client logs in
//! there again with the credentials it logged in with (kept in zeroizing memory for the
//! client's lifetime) and sends the call with the new node's session; later calls with the old
//! session token are rewritten the same way. A login with a one-time code (TOTP) cannot be
//! repeated: such a session does not move, and the call fails as unauthenticated on the new
//! node. Session objects (PKCS#11 `CKA_TOKEN=false`) and prepared multi-part operations belong
//! to the node that held them and do not move.
//!
//! **Retries.** The request is buffered so that it can be sent again. A call whose connection
//! broke after the request was sent may have been executed by the first node: a retried
//! mutation can then report "exists" or "not found" for what the first attempt did. Reads and
//! key uses are safe to repeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bulwark_proto::v1::hsm_client::HsmClient;
use http_body_util::BodyExt as _;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt as _;
use zeroize::Zeroizing;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Login credentials, kept to log in again on another node.
struct Creds {
    user: String,
    password: Zeroizing<String>,
}

/// A session as the caller knows it, and the node session that stands for it now.
struct Moved {
    node: usize,
    bearer: Zeroizing<String>,
    creds: Option<Arc<Creds>>,
}

struct State {
    current: usize,
    channels: Vec<Option<Channel>>,
}

struct Shared {
    /// `None`: a fixed connection made elsewhere (the local Unix socket), never remade.
    endpoints: Vec<Option<Endpoint>>,
    names: Vec<String>,
    state: tokio::sync::Mutex<State>,
    /// Keyed by the bearer token the caller holds (the first node's).
    sessions: Mutex<HashMap<String, Moved>>,
}

/// The channel over an endpoint list (cheap to clone; clones share the current node).
#[derive(Clone)]
pub struct Failover(Arc<Shared>);

impl std::fmt::Debug for Failover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover").field("endpoints", &self.0.names).finish_non_exhaustive()
    }
}

/// Splits a comma-separated endpoint list (blanks ignored).
pub fn split_endpoints(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

impl Failover {
    /// A channel over `endpoints` (already configured: TLS, timeouts), tried in order.
    ///
    /// # Panics
    /// If `endpoints` is empty.
    pub fn new(endpoints: Vec<Endpoint>, names: Vec<String>) -> Self {
        assert!(!endpoints.is_empty(), "an endpoint list is never empty");
        let n = endpoints.len();
        Self(Arc::new(Shared {
            endpoints: endpoints.into_iter().map(Some).collect(),
            names,
            state: tokio::sync::Mutex::new(State { current: 0, channels: vec![None; n] }),
            sessions: Mutex::new(HashMap::new()),
        }))
    }

    /// One fixed connection (the daemon's local socket): no list, no reconnection.
    pub fn fixed(channel: Channel, name: String) -> Self {
        Self(Arc::new(Shared {
            endpoints: vec![None],
            names: vec![name],
            state: tokio::sync::Mutex::new(State { current: 0, channels: vec![Some(channel)] }),
            sessions: Mutex::new(HashMap::new()),
        }))
    }

    async fn connect_one(&self, i: usize) -> Result<Channel, BoxError> {
        match &self.0.endpoints[i] {
            Some(ep) => Ok(ep.connect().await?),
            None => self.0.state.lock().await.channels[i]
                .clone()
                .ok_or_else(|| "the connection is closed".into()),
        }
    }

    /// Connects to the first node that answers (trying each once); returns its index.
    ///
    /// # Errors
    /// The last connection error when no node can be reached.
    pub async fn connect(&self) -> Result<usize, BoxError> {
        let n = self.0.endpoints.len();
        let start = self.0.state.lock().await.current;
        let mut last = None;
        for step in 0..n {
            let i = (start + step) % n;
            match self.connect_one(i).await {
                Ok(ch) => {
                    let mut st = self.0.state.lock().await;
                    st.channels[i] = Some(ch);
                    st.current = i;
                    return Ok(i);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| "no endpoint".into()))
    }

    /// The endpoint calls go to now.
    pub async fn current_endpoint(&self) -> String {
        let i = self.0.state.lock().await.current;
        self.0.names[i].clone()
    }

    /// Records a login made through this channel (`bearer` is what the caller will send), so
    /// that it can be repeated on another node. `password` is kept in zeroizing memory; with a
    /// one-time code the session does not move (see the module documentation).
    pub fn remember_login(&self, bearer: &str, user: &str, password: &str, one_time_code: bool) {
        let node = self.0.state.try_lock().map_or(0, |s| s.current);
        let creds = (!one_time_code).then(|| {
            Arc::new(Creds { user: user.to_owned(), password: Zeroizing::new(password.to_owned()) })
        });
        let mut s = self.0.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.insert(
            bearer.to_owned(),
            Moved { node, bearer: Zeroizing::new(bearer.to_owned()), creds },
        );
    }

    /// Forgets a session (logout).
    pub fn forget_login(&self, bearer: &str) {
        self.0.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(bearer);
    }

    async fn channel(&self, i: usize) -> Result<Channel, BoxError> {
        if let Some(c) = self.0.state.lock().await.channels[i].clone() {
            return Ok(c);
        }
        let ch = self.connect_one(i).await?;
        self.0.state.lock().await.channels[i] = Some(ch.clone());
        Ok(ch)
    }

    /// The bearer token to send on node `i` for the caller's `bearer` (logging in there again
    /// when the session was made on another node).
    async fn bearer_on(&self, i: usize, ch: &Channel, bearer: &str) -> Option<Zeroizing<String>> {
        let (node, cur, creds) = {
            let s = self.0.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let m = s.get(bearer)?;
            (m.node, m.bearer.clone(), m.creds.clone())
        };
        if node == i {
            return Some(cur);
        }
        let creds = creds?;
        let req = bulwark_proto::v1::LoginRequest {
            user: creds.user.clone(),
            password: creds.password.to_string(),
            otp: String::new(),
        };
        let resp = HsmClient::new(ch.clone()).login(req).await.ok()?.into_inner();
        let fresh = Zeroizing::new(resp.session);
        let mut s = self.0.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = s.get_mut(bearer) {
            m.node = i;
            m.bearer.clone_from(&fresh);
        }
        Some(fresh)
    }

    async fn call_inner(self, req: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        let (parts, body) = req.into_parts();
        let data = body.collect().await?.to_bytes();
        let caller_bearer = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|b| Zeroizing::new(b.to_owned()));
        let n = self.0.endpoints.len();
        let start = self.0.state.lock().await.current;
        let mut last_err: Option<BoxError> = None;
        let mut last_resp = None;
        for step in 0..n {
            let i = (start + step) % n;
            let ch = match self.channel(i).await {
                Ok(c) => c,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let mut b = http::Request::builder()
                .method(parts.method.clone())
                .uri(parts.uri.clone())
                .version(parts.version);
            if let Some(h) = b.headers_mut() {
                h.clone_from(&parts.headers);
                if let Some(orig) = &caller_bearer {
                    if let Some(now) = self.bearer_on(i, &ch, orig).await {
                        if let Ok(v) = http::HeaderValue::try_from(format!("Bearer {}", &*now)) {
                            h.insert("authorization", v);
                        }
                    }
                }
            }
            let req = b.body(Body::new(http_body_util::Full::new(data.clone())))?;
            match ch.oneshot(req).await {
                Ok(resp) => {
                    // Trailers-only UNAVAILABLE (14): this node does not serve now.
                    let unavailable = resp.headers().get("grpc-status").is_some_and(|v| v == "14");
                    if unavailable && step + 1 < n {
                        last_resp = Some(resp);
                        continue;
                    }
                    self.0.state.lock().await.current = i;
                    return Ok(resp);
                }
                Err(e) => {
                    // The connection is gone: reconnect next time (a fixed one stays).
                    if self.0.endpoints[i].is_some() {
                        self.0.state.lock().await.channels[i] = None;
                    }
                    last_err = Some(Box::new(e));
                }
            }
        }
        match (last_resp, last_err) {
            (Some(r), _) => Ok(r),
            (None, Some(e)) => Err(e),
            (None, None) => Err("no endpoint".into()),
        }
    }
}

impl tower::Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.clone().call_inner(req))
    }
}

#[cfg(test)]
mod tests {
    use super::split_endpoints;

    #[test]
    fn endpoint_lists_split_on_commas() {
        assert_eq!(split_endpoints("https://a:1"), vec!["https://a:1"]);
        assert_eq!(
            split_endpoints(" https://a:1, https://b:2,,https://c:3 "),
            vec!["https://a:1", "https://b:2", "https://c:3"]
        );
        assert!(split_endpoints(" , ").is_empty());
    }
}
