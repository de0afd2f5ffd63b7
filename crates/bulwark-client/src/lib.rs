//! The remote client of `bulwarkd`: gRPC over mutually authenticated TLS, as a blocking API for
//! the CLI (and, later, the PKCS#11 module's remote slot).
//!
//! It holds no key material: only the TLS client identity, the session token and the data the
//! caller sends. Credentials come from files and the environment (see [`ClientConfig::from_env`]),
//! never from command-line arguments.

#![forbid(unsafe_code)]

mod admin;
mod bootstrap;
mod cluster;
mod cluster_audit;
mod destruction;
pub mod failover;
pub mod remote_hsm;
mod usepolicy;
mod versions;

use std::path::Path;

use bulwark_proto::v1::hsm_client::HsmClient;
use bulwark_proto::v1::{self as pb, SignatureFormat};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use failover::Failover;
use zeroize::Zeroizing;

pub use bootstrap::Initialized;
pub use bulwark_proto::bootstrap::v1 as bootstrap_v1;
pub use bulwark_proto::v1;
pub use bulwark_proto::Reason;
pub use tonic::Code;

/// What went wrong talking to the HSM.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HSM answered with an error status (message is the HSM's safe message).
    #[error("{message}")]
    Status {
        /// gRPC status code.
        code: Code,
        /// The HSM's message.
        message: String,
        /// Why, where the HSM says it in a form a program may act on.
        reason: Option<bulwark_proto::Reason>,
    },
    /// No connection (network, TLS handshake, certificate).
    #[error("cannot reach the HSM: {0}")]
    Connect(String),
    /// Bad client configuration.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The gRPC code, for status errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        if matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Cancelled) {
            if let Some(src) = std::error::Error::source(&s) {
                return ClientError::Connect(chain(src));
            }
        }
        // bulwarkd never answers CANCELLED itself: the connection was dropped, typically right
        // after a TLS handshake the HSM refused.
        if s.code() == Code::Cancelled {
            return ClientError::Connect(
                "connection closed by the HSM (is a valid client certificate configured?)".into(),
            );
        }
        ClientError::Status {
            code: s.code(),
            message: s.message().to_owned(),
            reason: bulwark_proto::reason(&s),
        }
    }
}

/// Result alias.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Where the HSM is and how to authenticate the TLS connection.
pub struct ClientConfig {
    /// `https://host:port`, or a comma-separated list of the nodes of a cluster, tried in
    /// order with failover ([`failover`]).
    pub endpoint: String,
    /// PEM of the CA that issued the server certificate.
    pub ca_pem: Vec<u8>,
    /// PEM client certificate chain (required by bulwarkd on TCP).
    pub cert_pem: Option<Vec<u8>>,
    /// PEM client private key.
    pub key_pem: Option<Zeroizing<Vec<u8>>>,
    /// TLS server name, when it differs from the endpoint's host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("client_cert", &self.cert_pem.is_some())
            .finish_non_exhaustive()
    }
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p)
        .map_err(|e| ClientError::Config(format!("cannot read {}: {}", p.display(), e.kind())))
}

impl ClientConfig {
    /// From files.
    pub fn from_files(
        endpoint: &str,
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self> {
        Ok(Self {
            endpoint: endpoint.to_owned(),
            ca_pem: read(ca)?,
            cert_pem: cert.map(read).transpose()?,
            key_pem: key.map(read).transpose()?.map(Zeroizing::new),
            server_name: std::env::var("BULWARK_TLS_SERVER_NAME").ok().filter(|s| !s.is_empty()),
        })
    }

    /// From `BULWARK_CA_CERT`, `BULWARK_CLIENT_CERT`, `BULWARK_CLIENT_KEY` (paths) for
    /// `endpoint`.
    pub fn from_env(endpoint: &str) -> Result<Self> {
        let path =
            |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        let ca = path("BULWARK_CA_CERT").ok_or_else(|| {
            ClientError::Config("set BULWARK_CA_CERT to the HSM's CA certificate".into())
        })?;
        Self::from_files(
            endpoint,
            &ca,
            path("BULWARK_CLIENT_CERT").as_deref(),
            path("BULWARK_CLIENT_KEY").as_deref(),
        )
    }
}

/// A connection to one HSM, with an optional login session.
pub struct Client {
    rt: tokio::runtime::Runtime,
    inner: HsmClient<Failover>,
    /// The connection, for the other services (bootstrap).
    channel: Failover,
    session: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("logged_in", &self.session.is_some()).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects (TCP + TLS). A missing or rejected client certificate shows up here or on the
    /// first call, as [`ClientError::Connect`].
    pub fn connect(cfg: &ClientConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cfg.ca_pem));
        match (&cfg.cert_pem, &cfg.key_pem) {
            (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(c, &k[..])),
            (None, None) => {}
            _ => return Err(ClientError::Config(
                "a client certificate needs its key (BULWARK_CLIENT_CERT and BULWARK_CLIENT_KEY)"
                    .into(),
            )),
        }
        if let Some(n) = &cfg.server_name {
            tls = tls.domain_name(n.clone());
        }
        let names = failover::split_endpoints(&cfg.endpoint);
        if names.is_empty() {
            return Err(ClientError::Config("no endpoint given".into()));
        }
        let mut eps = Vec::with_capacity(names.len());
        for name in &names {
            let ep = Endpoint::from_shared(name.clone())
                .map_err(|_| ClientError::Config(format!("bad endpoint {name:?}")))?
                .tls_config(tls.clone())
                .map_err(|e| ClientError::Config(chain(&e)))?
                .connect_timeout(std::time::Duration::from_secs(10));
            eps.push(ep);
        }
        let channel = Failover::new(eps, names);
        rt.block_on(channel.connect()).map_err(|e| ClientError::Connect(chain(e.as_ref())))?;
        Ok(Self { rt, inner: HsmClient::new(channel.clone()), channel, session: None })
    }

    /// The endpoint calls go to now (the first of the list that answered).
    pub fn current_endpoint(&self) -> String {
        self.rt.block_on(self.channel.current_endpoint())
    }

    /// Connects to the daemon's local admin socket (no TLS: the socket is 0600, so only the
    /// daemon's own user can open it).
    pub fn connect_unix(path: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let path = path.to_owned();
        // The URI is required by the API but unused: the connector below ignores it.
        let ep = Endpoint::from_static("http://localhost");
        let channel = rt
            .block_on(ep.connect_with_connector(tower::service_fn(
                move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        let s = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                    }
                },
            )))
            .map_err(|e| ClientError::Connect(chain(&e)))?;
        let channel = Failover::fixed(channel, "unix socket".into());
        Ok(Self { rt, inner: HsmClient::new(channel.clone()), channel, session: None })
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(s) = &self.session {
            if let Ok(v) = MetadataValue::try_from(format!("Bearer {}", s.as_str())) {
                r.metadata_mut().insert("authorization", v);
            }
        }
        // Per-use quorum approvals set for this thread travel with every request.
        if let Some(a) = bulwark_core::token::current_use_approvals() {
            let m = pb::UseApprovals {
                request_id: a.request_id,
                not_after: a.not_after,
                approvals: a
                    .approvals
                    .into_iter()
                    .map(|x| pb::Approval { approver: x.approver, signature: x.signature })
                    .collect(),
            };
            r.metadata_mut().insert_bin(
                bulwark_proto::USE_APPROVALS_METADATA,
                tonic::metadata::MetadataValue::from_bytes(&bulwark_proto::encode_use_approvals(
                    &m,
                )),
            );
        }
        r
    }

    /// Logs in; returns the role.
    pub fn login(&mut self, user: &str, password: &str) -> Result<String> {
        self.login_with_otp(user, password, "")
    }

    /// Logs in with a TOTP code (users enrolled with a second factor); returns the role.
    pub fn login_with_otp(&mut self, user: &str, password: &str, otp: &str) -> Result<String> {
        let r = self.req(pb::LoginRequest {
            user: user.into(),
            password: password.into(),
            otp: otp.into(),
        });
        let mut c = self.inner.clone();
        let resp = self.rt.block_on(c.login(r))?.into_inner();
        // Kept so that the session can follow a failover to another node.
        self.channel.remember_login(&resp.session, user, password, !otp.is_empty());
        self.session = Some(Zeroizing::new(resp.session.clone()));
        Ok(resp.role.clone())
    }

    /// The bearer token of the current session (for tools that hand a session to another
    /// connection of the same client identity; the daemon refuses it over any other).
    pub fn session_token(&self) -> Option<Zeroizing<String>> {
        self.session.clone()
    }

    /// Uses `token` as this connection's session (see [`Client::session_token`]).
    pub fn set_session_token(&mut self, token: &str) {
        self.session = Some(Zeroizing::new(token.to_owned()));
    }

    /// Ends the session.
    pub fn logout(&mut self) -> Result<()> {
        let r = self.req(pb::LogoutRequest {});
        let mut c = self.inner.clone();
        self.rt.block_on(c.logout(r))?;
        if let Some(s) = self.session.take() {
            self.channel.forget_login(&s);
        }
        Ok(())
    }

    /// Seal state and token status.
    pub fn status(&self) -> Result<pb::StatusResponse> {
        let mut c = self.inner.clone();
        Ok(self.rt.block_on(c.status(self.req(pb::StatusRequest {})))?.into_inner())
    }

    /// Presents one (decrypted) share file.
    pub fn unseal(&self, share_file: &[u8]) -> Result<pb::UnsealResponse> {
        let mut c = self.inner.clone();
        let r = self.req(pb::UnsealRequest { share: share_file.to_vec() });
        Ok(self.rt.block_on(c.unseal(r))?.into_inner())
    }

    /// Seals the HSM (security officer).
    pub fn seal(&self) -> Result<()> {
        let mut c = self.inner.clone();
        self.rt.block_on(c.seal(self.req(pb::SealRequest {})))?;
        Ok(())
    }

    /// Generates a key.
    pub fn generate_key(
        &self,
        key_type: &str,
        label: &str,
        extractable: bool,
    ) -> Result<pb::KeyInfo> {
        self.generate_key_with_dates(key_type, label, extractable, [0; 3])
    }

    /// Generates a key with lifecycle dates (activation, protect-stop, deactivation; Unix
    /// seconds, 0 for none), set in the same write that stores it.
    pub fn generate_key_with_dates(
        &self,
        key_type: &str,
        label: &str,
        extractable: bool,
        dates: [u64; 3],
    ) -> Result<pb::KeyInfo> {
        let mut c = self.inner.clone();
        let r = self.req(pb::GenerateKeyRequest {
            key_type: key_type.into(),
            label: label.into(),
            extractable,
            activation_date: dates[0],
            protect_stop_date: dates[1],
            deactivation_date: dates[2],
        });
        Ok(self.rt.block_on(c.generate_key(r))?.into_inner())
    }

    /// Lists keys.
    pub fn list_keys(&self) -> Result<Vec<pb::KeyInfo>> {
        let mut c = self.inner.clone();
        Ok(self.rt.block_on(c.list_keys(self.req(pb::ListKeysRequest {})))?.into_inner().keys)
    }

    /// One key.
    pub fn show_key(&self, label: &str) -> Result<pb::KeyInfo> {
        let mut c = self.inner.clone();
        Ok(self
            .rt
            .block_on(c.show_key(self.req(pb::KeyName { label: label.into(), key_version: 0 })))?
            .into_inner())
    }

    /// The lifecycle state and dates of a key's objects.
    pub fn key_state(&self, label: &str) -> Result<pb::KeyStateResponse> {
        let mut c = self.inner.clone();
        let r = self.req(pb::KeyName { label: label.into(), key_version: 0 });
        Ok(self.rt.block_on(c.key_state(r))?.into_inner())
    }

    /// A lifecycle transition (`activate`, `suspend`, `resume`, `deactivate`, `compromise`)
    /// or, with an empty `transition`, new dates (Unix seconds, 0: unchanged).
    pub fn change_key_state(
        &self,
        label: &str,
        transition: &str,
        dates: [u64; 3],
    ) -> Result<pb::KeyStateResponse> {
        let mut c = self.inner.clone();
        let r = self.req(pb::ChangeKeyStateRequest {
            label: label.into(),
            transition: transition.into(),
            activation_date: dates[0],
            protect_stop_date: dates[1],
            deactivation_date: dates[2],
        });
        Ok(self.rt.block_on(c.change_key_state(r))?.into_inner())
    }

    /// Destroys a key; returns the number of objects destroyed.
    pub fn destroy_key(&self, label: &str) -> Result<u32> {
        let mut c = self.inner.clone();
        let r = self.req(pb::KeyName { label: label.into(), key_version: 0 });
        Ok(self.rt.block_on(c.destroy_key(r))?.into_inner().destroyed)
    }

    /// The public key as SPKI PEM.
    pub fn public_key(&self, label: &str) -> Result<String> {
        let mut c = self.inner.clone();
        let r = self.req(pb::KeyName { label: label.into(), key_version: 0 });
        Ok(self.rt.block_on(c.public_key(r))?.into_inner().pem)
    }

    /// Signs `data` (ECDSA as DER when `der`).
    pub fn sign(&self, key: &str, mechanism: &str, data: &[u8], der: bool) -> Result<Vec<u8>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::SignRequest {
            key: key.into(),
            mechanism: mechanism.into(),
            data: data.to_vec(),
            format: fmt(der).into(),
            key_version: 0,
        });
        Ok(self.rt.block_on(c.sign(r))?.into_inner().signature)
    }

    /// Signs many messages with one key.
    pub fn batch_sign(
        &self,
        key: &str,
        mechanism: &str,
        data: Vec<Vec<u8>>,
        der: bool,
    ) -> Result<Vec<Vec<u8>>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::BatchSignRequest {
            key: key.into(),
            mechanism: mechanism.into(),
            data,
            format: fmt(der).into(),
            key_version: 0,
        });
        Ok(self.rt.block_on(c.batch_sign(r))?.into_inner().signatures)
    }

    /// Verifies; `Ok(false)` for a signature that does not verify.
    pub fn verify(
        &self,
        key: &str,
        mechanism: &str,
        data: &[u8],
        sig: &[u8],
        der: bool,
    ) -> Result<bool> {
        self.verify_noting_state(key, mechanism, data, sig, der).map(|(v, _)| v)
    }

    /// [`Client::verify`], with the key's lifecycle state when it is not active
    /// (`deactivated`, `compromised`; empty for an active key).
    pub fn verify_noting_state(
        &self,
        key: &str,
        mechanism: &str,
        data: &[u8],
        sig: &[u8],
        der: bool,
    ) -> Result<(bool, String)> {
        let mut c = self.inner.clone();
        let r = self.req(pb::VerifyRequest {
            key: key.into(),
            mechanism: mechanism.into(),
            data: data.to_vec(),
            signature: sig.to_vec(),
            format: fmt(der).into(),
            key_version: 0,
        });
        let r = self.rt.block_on(c.verify(r))?.into_inner();
        Ok((r.valid, r.key_state))
    }

    /// AES-GCM encryption (BWK1 format).
    pub fn encrypt(&self, key: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut c = self.inner.clone();
        let r = self.req(pb::EncryptRequest {
            key: key.into(),
            plaintext: plaintext.to_vec(),
            key_version: 0,
        });
        Ok(self.rt.block_on(c.encrypt(r))?.into_inner().ciphertext)
    }

    /// Decrypts a BWK1 ciphertext.
    pub fn decrypt(&self, key: &str, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.decrypt_noting_state(key, ciphertext).map(|(p, _)| p)
    }

    /// [`Client::decrypt`], with the key's lifecycle state when it is not active.
    pub fn decrypt_noting_state(
        &self,
        key: &str,
        ciphertext: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, String)> {
        let mut c = self.inner.clone();
        let r = self.req(pb::DecryptRequest {
            key: key.into(),
            ciphertext: ciphertext.to_vec(),
            key_version: 0,
        });
        let r = self.rt.block_on(c.decrypt(r))?.into_inner();
        Ok((Zeroizing::new(r.plaintext), r.key_state))
    }

    /// Creates a user (security officer); with `totp`, returns the otpauth URI and base32
    /// secret to hand to the user once.
    pub fn create_user(
        &self,
        name: &str,
        role: &str,
        password: &str,
        totp: bool,
    ) -> Result<pb::CreateUserResponse> {
        self.create_user_bound(name, role, password, totp, "")
    }

    /// [`Client::create_user`], binding the user to a client certificate (SHA-256 of its DER,
    /// hex; see [`cert_sha256_of_pem`]).
    pub fn create_user_bound(
        &self,
        name: &str,
        role: &str,
        password: &str,
        totp: bool,
        client_cert_sha256: &str,
    ) -> Result<pb::CreateUserResponse> {
        let mut c = self.inner.clone();
        let r = self.req(pb::CreateUserRequest {
            name: name.into(),
            role: role.into(),
            password: password.into(),
            totp,
            client_cert_sha256: client_cert_sha256.into(),
            ..pb::CreateUserRequest::default()
        });
        Ok(self.rt.block_on(c.create_user(r))?.into_inner())
    }

    /// Creates a user with a complete request (quorum approvals included).
    pub fn create_user_request(&self, r: pb::CreateUserRequest) -> Result<pb::CreateUserResponse> {
        let mut c = self.inner.clone();
        Ok(self.rt.block_on(c.create_user(self.req(r)))?.into_inner())
    }

    /// Deletes a user with a complete request (quorum approvals included).
    pub fn delete_user_request(&self, r: pb::DeleteUserRequest) -> Result<()> {
        let mut c = self.inner.clone();
        self.rt.block_on(c.delete_user(self.req(r)))?;
        Ok(())
    }

    /// Deletes a user and ends its sessions (security officer).
    pub fn delete_user(&self, name: &str) -> Result<()> {
        let mut c = self.inner.clone();
        self.rt.block_on(c.delete_user(
            self.req(pb::DeleteUserRequest { name: name.into(), ..Default::default() }),
        ))?;
        Ok(())
    }

    /// Clears a user's failed-login count (security officer).
    pub fn unlock_user(&self, name: &str) -> Result<()> {
        let mut c = self.inner.clone();
        self.rt.block_on(c.unlock_user(self.req(pb::UnlockUserRequest { name: name.into() })))?;
        Ok(())
    }

    /// Lists users (security officer).
    pub fn list_users(&self) -> Result<Vec<pb::UserInfo>> {
        let mut c = self.inner.clone();
        Ok(self.rt.block_on(c.list_users(self.req(pb::ListUsersRequest {})))?.into_inner().users)
    }

    /// Replaces a key's access list (crypto officer): `(principal, operations)` pairs, with
    /// principals `user:NAME` or `role:ROLE`.
    pub fn set_key_access(&self, label: &str, grants: &[(&str, &[&str])]) -> Result<()> {
        let mut c = self.inner.clone();
        let r = self.req(pb::SetKeyAccessRequest {
            label: label.into(),
            grants: grants
                .iter()
                .map(|(p, ops)| pb::KeyGrant {
                    principal: (*p).to_owned(),
                    operations: ops.iter().map(|o| (*o).to_owned()).collect(),
                })
                .collect(),
        });
        self.rt.block_on(c.set_key_access(r))?;
        Ok(())
    }

    /// Marks the keys labelled `label` CKA_TRUSTED or not (security officer); returns how
    /// many key objects changed.
    pub fn set_key_trusted(&self, label: &str, trusted: bool) -> Result<u32> {
        let mut c = self.inner.clone();
        let r = self.req(pb::SetKeyTrustedRequest { label: label.into(), trusted });
        Ok(self.rt.block_on(c.set_key_trusted(r))?.into_inner().objects)
    }

    /// Random bytes from the HSM.
    pub fn random(&self, n: u32) -> Result<Vec<u8>> {
        let mut c = self.inner.clone();
        Ok(self.rt.block_on(c.random(self.req(pb::RandomRequest { length: n })))?.into_inner().data)
    }
}

/// SHA-256 (hex) of the first certificate in a PEM file: the value that binds a user to it.
pub fn cert_sha256_of_pem(pem: &[u8]) -> Result<String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| ClientError::Config("no certificate in the PEM file".into()))?
        .map_err(|e| ClientError::Config(format!("certificate: {e}")))?;
    let d = bulwark_core::crypto::Provider::get()
        .and_then(|p| p.digest(bulwark_core::mechanism::DigestAlg::Sha256, der.as_ref()))
        .map_err(|e| ClientError::Config(e.to_string()))?;
    Ok(d.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

fn fmt(der: bool) -> SignatureFormat {
    if der {
        SignatureFormat::Der
    } else {
        SignatureFormat::Raw
    }
}
