//! The tamper-evident audit log (DESIGN.md §6, issue 5, issue 10).
//!
//! Every operation and administrative action, successful or refused, becomes one
//! [`AuditRecord`], sequenced and chained before the caller sees the result, and durable either
//! before the result ([`Durability::Durable`]: administration, key management, logins, every
//! refusal) or within a bounded window ([`Durability::Bounded`]: successful key uses; group
//! commit by a background flusher). Uses of a prepared key are counted ([`UseCounter`]) and
//! written as aggregated `use-count` records. Openers register themselves, so that a process
//! that dies with records in the window leaves an `unclean-shutdown` record behind it
//! ([`VerifyReport::unclean_shutdowns`]). Records are hash-chained (`chain[n] = SHA-256(chain[n-1] || canonical(n))`,
//! `chain[-1] = SHA-256("bulwark audit genesis v1" || log id)`) and are the leaves of an RFC 6962
//! Merkle tree. The HSM's audit key (Ed25519, sealed under the master key) signs
//! [`Checkpoint`]s over (log id, size, chain head, Merkle root, time); an exported log
//! ([`ExportLine`] JSON lines) is checked offline by [`verify_export`] with only the public key.
//!
//! This module never receives key material, plaintext or PINs: records hold names, numbers and
//! result codes only. Nothing here can change or delete a record once written.

mod cluster;
mod counter;
mod export;
mod files;
mod log;
pub mod merkle;
mod verify;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

pub use cluster::{
    cluster_line_json, global_genesis, is_cluster_export, step_node_chain, verify_cluster_export,
    ClusterLine, ClusterReport, ClusterVerifier, GlobalEntry, NodeHead, NodeSummary,
};
pub use counter::{UseCount, UseCounter, UseKey, USE_COUNT_OP};
pub use export::{line_json, lines_json as lines_to_json, ExportIter};
pub(crate) use log::log_path as log_path_for;
pub use log::{AuditLog, CheckpointPolicy, Proof, Window};
pub use verify::{
    parse_line, verify_export, verify_proof, verify_proof_record, UncleanShutdown, Verifier,
    VerifyReport,
};

use crate::error::{Error, Result};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// When an appended record must be on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Before the append returns (with every record sequenced before it).
    Durable,
    /// Sequenced and chained before the append returns; on disk within the log's
    /// [`Window`] (group commit by the flusher). The append never waits for a disk sync.
    Bounded,
}

/// The store policy for records of successful key uses (sign, verify, encrypt, decrypt,
/// (de)capsulate and their `C_*Init`). Refusals, administration and key management are always
/// durable whatever this says.
///
/// Serialized as `"durable"`, `"bounded"` or `"off"`; also reads the boolean of older
/// policies (`true` → `durable`, `false` → `off`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditKeyUse {
    /// Each key use is durable before its result returns (a disk sync per use, shared by
    /// concurrent callers).
    Durable,
    /// Each key use is chained before its result returns and durable within the window.
    #[default]
    Bounded,
    /// Successful key uses are not recorded.
    Off,
}

impl AuditKeyUse {
    /// The durability class of a successful key use's record, or `None` when it is not
    /// recorded.
    pub fn class(self) -> Option<Durability> {
        match self {
            Self::Durable => Some(Durability::Durable),
            Self::Bounded => Some(Durability::Bounded),
            Self::Off => None,
        }
    }

    /// The policy's name (`durable`, `bounded`, `off`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::Bounded => "bounded",
            Self::Off => "off",
        }
    }
}

impl From<bool> for AuditKeyUse {
    fn from(on: bool) -> Self {
        if on {
            Self::Durable
        } else {
            Self::Off
        }
    }
}

impl std::str::FromStr for AuditKeyUse {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "durable" | "on" | "true" => Ok(Self::Durable),
            "bounded" => Ok(Self::Bounded),
            "off" | "false" => Ok(Self::Off),
            _ => Err(Error::ArgumentsBad("audit key use is durable, bounded or off")),
        }
    }
}

impl<'de> Deserialize<'de> for AuditKeyUse {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Bool(bool),
            Name(String),
        }
        match Repr::deserialize(d)? {
            Repr::Bool(b) => Ok(b.into()),
            Repr::Name(n) => match n.as_str() {
                "durable" => Ok(Self::Durable),
                "bounded" => Ok(Self::Bounded),
                "off" => Ok(Self::Off),
                _ => Err(serde::de::Error::unknown_variant(&n, &["durable", "bounded", "off"])),
            },
        }
    }
}

/// Who acts: an authenticated user (or nobody), the role it holds, and where it connects from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Actor {
    /// User name (`so`, `user`, a daemon account) or `-` when nobody is logged in.
    pub name: String,
    /// Role: `security-officer`, `crypto-user`, `auditor`, `public`...
    pub role: String,
    /// Client identity: process (embedded) or mTLS subject / peer address (daemon).
    pub client: String,
}

thread_local! {
    static CURRENT_ACTOR: std::cell::RefCell<Option<Actor>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `actor` as the identity recorded for every token operation it performs on
/// this thread. A front door that authenticates its own users (the daemon: password + mTLS
/// subject) wraps each request in this, so the token's records name the real user, role and
/// client instead of the token's own login state.
pub fn with_actor<T>(actor: Actor, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Actor>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT_ACTOR.with(|c| *c.borrow_mut() = prev);
        }
    }
    let prev = CURRENT_ACTOR.with(|c| c.borrow_mut().replace(actor));
    let _restore = Restore(prev);
    f()
}

/// The actor set by [`with_actor`] on this thread, if any.
pub fn current_actor() -> Option<Actor> {
    // `try_with`: a module's C_Finalize / C_CloseAllSessions may run from a process exit
    // handler after this thread's locals are gone; there is no front-door actor then.
    CURRENT_ACTOR.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// One event to record. The log assigns the sequence number.
#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    /// Who.
    pub actor: Actor,
    /// PKCS#11 session (0 when none).
    pub session: u64,
    /// Operation name (`login`, `sign`, `generate-key-pair`, `zeroize`...).
    pub op: &'static str,
    /// `CKM_*` value of the mechanism, if any.
    pub mechanism: Option<u64>,
    /// The object's unique id (hex), if any.
    pub object: String,
    /// The object's label, if any.
    pub label: String,
    /// `ok` or the error code ([`result_code`]).
    pub result: &'static str,
    /// Free-form, non-secret detail (a tamper reason, a byte count).
    pub detail: String,
}

/// One stored audit record, as exported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 0, without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// See [`Actor::name`].
    pub actor: String,
    /// See [`Actor::role`].
    pub role: String,
    /// See [`Actor::client`].
    pub client: String,
    /// PKCS#11 session (0 when none).
    pub session: u64,
    /// Operation name.
    pub op: String,
    /// `CKM_*` as `0x%08x`, or empty.
    pub mechanism: String,
    /// Object unique id (hex) or empty.
    pub object: String,
    /// Object label or empty.
    pub label: String,
    /// `ok` or an error code.
    pub result: String,
    /// Non-secret detail or empty.
    pub detail: String,
}

const RECORD_TAG: &[u8] = b"bulwark audit record v1";

fn put(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

impl AuditRecord {
    /// Builds the record for `ev` at position `seq`.
    pub fn from_event(seq: u64, time_ms: u64, ev: &AuditEvent) -> Self {
        Self {
            seq,
            time_ms,
            actor: ev.actor.name.clone(),
            role: ev.actor.role.clone(),
            client: ev.actor.client.clone(),
            session: ev.session,
            op: ev.op.to_owned(),
            mechanism: ev.mechanism.map(|m| format!("0x{m:08x}")).unwrap_or_default(),
            object: ev.object.clone(),
            label: ev.label.clone(),
            result: ev.result.to_owned(),
            detail: ev.detail.clone(),
        }
    }

    /// Where `seq` sits in [`AuditRecord::canonical`] (right after the domain tag): the log
    /// encodes a record before it takes the sequencer lock and writes the number in place.
    pub(crate) const SEQ_OFFSET: usize = RECORD_TAG.len();

    /// The canonical encoding that is hashed: a domain tag, then every field in a fixed
    /// order, numbers as 8 bytes big-endian, strings length-prefixed.
    pub fn canonical(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(RECORD_TAG);
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.time_ms.to_be_bytes());
        put(&mut b, &self.actor);
        put(&mut b, &self.role);
        put(&mut b, &self.client);
        b.extend_from_slice(&self.session.to_be_bytes());
        put(&mut b, &self.op);
        put(&mut b, &self.mechanism);
        put(&mut b, &self.object);
        put(&mut b, &self.label);
        put(&mut b, &self.result);
        put(&mut b, &self.detail);
        b
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u64(&mut self) -> Option<u64> {
        let (h, t) = self.0.split_at_checked(8)?;
        self.0 = t;
        Some(u64::from_be_bytes(h.try_into().ok()?))
    }

    fn s(&mut self) -> Option<String> {
        let n = usize::try_from(self.u64()?).ok()?;
        let (h, t) = self.0.split_at_checked(n)?;
        self.0 = t;
        String::from_utf8(h.to_vec()).ok()
    }
}

impl AuditRecord {
    /// Decodes [`AuditRecord::canonical`]'s output; `None` when malformed.
    pub fn from_canonical(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b.strip_prefix(RECORD_TAG)?);
        let rec = Self {
            seq: r.u64()?,
            time_ms: r.u64()?,
            actor: r.s()?,
            role: r.s()?,
            client: r.s()?,
            session: r.u64()?,
            op: r.s()?,
            mechanism: r.s()?,
            object: r.s()?,
            label: r.s()?,
            result: r.s()?,
            detail: r.s()?,
        };
        r.0.is_empty().then_some(rec)
    }
}

/// The chain value before the first record of log `log_id`.
pub fn genesis(log_id: &[u8; 16]) -> Hash {
    let mut c = digest::Context::new(&digest::SHA256);
    c.update(b"bulwark audit genesis v1");
    c.update(log_id);
    let mut h = [0u8; 32];
    h.copy_from_slice(c.finish().as_ref());
    h
}

/// `SHA-256(prev || canonical)`.
pub fn chain_next(prev: &Hash, canonical: &[u8]) -> Hash {
    let mut c = digest::Context::new(&digest::SHA256);
    c.update(prev);
    c.update(canonical);
    let mut h = [0u8; 32];
    h.copy_from_slice(c.finish().as_ref());
    h
}

/// A signed statement: "log `log_id` had `size` records with this chain head and Merkle root
/// at `time_ms`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Hex store id the log belongs to.
    pub log_id: String,
    /// Number of records covered (records `0..size`).
    pub size: u64,
    /// Hex chain value after record `size - 1`.
    pub chain: String,
    /// Hex RFC 6962 Merkle root over records `0..size`.
    pub root: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Hex Ed25519 signature over [`Checkpoint::signed_bytes`].
    pub signature: String,
}

impl Checkpoint {
    /// What the audit key signs.
    pub fn signed_bytes(
        log_id: &[u8; 16],
        size: u64,
        chain: &Hash,
        root: &Hash,
        time_ms: u64,
    ) -> Vec<u8> {
        let mut b = b"bulwark audit checkpoint v1".to_vec();
        b.extend_from_slice(log_id);
        b.extend_from_slice(&size.to_be_bytes());
        b.extend_from_slice(chain);
        b.extend_from_slice(root);
        b.extend_from_slice(&time_ms.to_be_bytes());
        b
    }

    /// Checks the signature with a raw Ed25519 public key.
    pub fn verify_signature(&self, public_key: &[u8]) -> bool {
        let parse = || -> Option<Vec<u8>> {
            let id: [u8; 16] = hex::decode(&self.log_id).ok()?.try_into().ok()?;
            let chain: Hash = hex::decode(&self.chain).ok()?.try_into().ok()?;
            let root: Hash = hex::decode(&self.root).ok()?.try_into().ok()?;
            Some(Self::signed_bytes(&id, self.size, &chain, &root, self.time_ms))
        };
        let (Some(msg), Ok(sig)) = (parse(), hex::decode(&self.signature)) else { return false };
        signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(&msg, &sig)
            .is_ok()
    }
}

/// One line of an exported log (JSON lines): a header, then records in order with the signed
/// checkpoints placed right after the record that completes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExportLine {
    /// First line: where this export starts.
    Header {
        /// Format version (1).
        version: u32,
        /// Hex store id.
        log_id: String,
        /// Sequence number of the first exported record.
        since: u64,
        /// Hex chain value before record `since` (the genesis value when `since` is 0).
        prev_chain: String,
        /// Hex Merkle frontier of records `0..since` (not authenticated by itself: the final
        /// checkpoint covers it).
        frontier: Vec<String>,
    },
    /// One record and the chain value after it.
    Record {
        /// The record.
        #[serde(flatten)]
        record: AuditRecord,
        /// Hex chain value after this record, as the HSM stored it.
        chain: String,
    },
    /// A signed checkpoint.
    Checkpoint(Checkpoint),
}

/// The HSM's audit signing key (Ed25519). Never exported; lives sealed under the master key.
pub struct AuditSigner {
    kp: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSigner(Ed25519, public {})", hex::encode(self.public_key()))
    }
}

impl AuditSigner {
    /// A fresh key; returns it and its PKCS#8 document (to be sealed by the caller).
    pub fn generate() -> Result<(Self, crate::secret::SecretBytes)> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| Error::CryptoFailed)?;
        let der = crate::secret::SecretBytes::from_slice(doc.as_ref());
        Ok((Self::from_pkcs8(der.expose_secret())?, der))
    }

    /// Loads a key from its PKCS#8 document.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self> {
        let kp = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map_err(|_| Error::Integrity("audit key does not parse"))?;
        Ok(Self { kp })
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.kp.public_key().as_ref().to_vec()
    }

    /// Signs a checkpoint.
    pub fn sign_checkpoint(
        &self,
        log_id: &[u8; 16],
        size: u64,
        chain: &Hash,
        root: &Hash,
        time_ms: u64,
    ) -> Checkpoint {
        let sig = self.kp.sign(&Checkpoint::signed_bytes(log_id, size, chain, root, time_ms));
        Checkpoint {
            log_id: hex::encode(log_id),
            size,
            chain: hex::encode(chain),
            root: hex::encode(root),
            time_ms,
            signature: hex::encode(sig.as_ref()),
        }
    }
}

const ED25519_SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo) of a raw Ed25519 public key.
pub fn public_key_pem(raw: &[u8]) -> String {
    use base64::Engine as _;
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END PUBLIC KEY-----\n");
    s
}

/// The raw Ed25519 public key from [`public_key_pem`]'s output.
pub fn public_key_from_pem(pem: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| Error::ArgumentsBad("public key is not PEM"))?;
    match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(raw) if raw.len() == 32 => Ok(raw.to_vec()),
        _ => Err(Error::ArgumentsBad("public key is not an Ed25519 SubjectPublicKeyInfo")),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The stable result code recorded for an outcome: `ok`, or a short name per error kind.
pub fn result_code<T>(r: &Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => error_code(e),
    }
}

/// The stable code of one error (no payload: codes never carry caller data).
pub fn error_code(e: &Error) -> &'static str {
    match e {
        Error::ArgumentsBad(_) => "arguments-bad",
        Error::AttributeTypeInvalid(_) => "attribute-type-invalid",
        Error::AttributeValueInvalid(_) => "attribute-value-invalid",
        Error::AttributeReadOnly(_) => "attribute-read-only",
        Error::AttributeSensitive(_) => "attribute-sensitive",
        Error::TemplateIncomplete(_) => "template-incomplete",
        Error::TemplateInconsistent(_) => "template-inconsistent",
        Error::MechanismInvalid(_) => "mechanism-invalid",
        Error::MechanismParamInvalid(_) => "mechanism-param-invalid",
        Error::KeyTypeInconsistent => "key-type-inconsistent",
        Error::KeyFunctionNotPermitted(_) => "key-function-not-permitted",
        Error::UsageLimit(_) => "usage-limit",
        Error::UseApprovalRequired(_) => "use-approval-required",
        Error::KeyUnextractable(_) => "key-unextractable",
        Error::KeySizeRange => "key-size-range",
        Error::KeyInvalid => "key-invalid",
        Error::ObjectHandleInvalid => "object-handle-invalid",
        Error::NotFound(_) => "not-found",
        Error::Ambiguous(_) => "ambiguous",
        Error::Exists(_) => "exists",
        Error::DataLenRange => "data-len-range",
        Error::EncryptedDataInvalid => "encrypted-data-invalid",
        Error::EncryptedDataLenRange => "encrypted-data-len-range",
        Error::WrappedKeyInvalid => "wrapped-key-invalid",
        Error::SignatureInvalid => "signature-invalid",
        Error::SignatureLenRange => "signature-len-range",
        Error::ActionProhibited(_) => "action-prohibited",
        Error::PinIncorrect => "pin-incorrect",
        Error::PinLocked => "pin-locked",
        Error::PinLenRange { .. } => "pin-len-range",
        Error::UserNotLoggedIn => "user-not-logged-in",
        Error::UserAlreadyLoggedIn => "user-already-logged-in",
        Error::AnotherUserLoggedIn => "another-user-logged-in",
        Error::UserPinNotInitialized => "user-pin-not-initialized",
        Error::NotInitialized(_) => "not-initialized",
        Error::AlreadyInitialized(_) => "already-initialized",
        Error::Zeroized => "zeroized",
        Error::TamperAlarm(_) => "tamper-alarm",
        Error::Integrity(_) => "integrity",
        Error::Rollback { .. } => "rollback",
        Error::SchemaUnsupported(_) => "schema-unsupported",
        Error::Store(_) => "store-error",
        Error::ErrorState(_) => "error-state",
        Error::CryptoFailed => "crypto-failed",
        Error::NotSupported(_) => "not-supported",
        Error::BufferTooSmall => "buffer-too-small",
        Error::Internal(_) => "internal-error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_checkpoint_signature() {
        let (s, _der) = AuditSigner::generate().unwrap();
        let pk = s.public_key();
        assert_eq!(public_key_from_pem(&public_key_pem(&pk)).unwrap(), pk);
        let cp = s.sign_checkpoint(&[3; 16], 5, &[1; 32], &[2; 32], 77);
        assert!(cp.verify_signature(&pk));
        let mut bad = cp.clone();
        bad.size = 6;
        assert!(!bad.verify_signature(&pk));
        let mut bad = cp;
        bad.time_ms += 1;
        assert!(!bad.verify_signature(&pk));
    }

    #[test]
    fn audit_key_use_reads_old_booleans_and_new_names() {
        let p: AuditKeyUse = serde_json::from_str("true").unwrap();
        assert_eq!(p, AuditKeyUse::Durable);
        let p: AuditKeyUse = serde_json::from_str("false").unwrap();
        assert_eq!(p, AuditKeyUse::Off);
        for v in [AuditKeyUse::Durable, AuditKeyUse::Bounded, AuditKeyUse::Off] {
            let j = serde_json::to_string(&v).unwrap();
            assert_eq!(j, format!("\"{}\"", v.as_str()));
            assert_eq!(serde_json::from_str::<AuditKeyUse>(&j).unwrap(), v);
            assert_eq!(v.as_str().parse::<AuditKeyUse>().unwrap(), v);
        }
        assert!(serde_json::from_str::<AuditKeyUse>("\"sometimes\"").is_err());
        assert_eq!(AuditKeyUse::default(), AuditKeyUse::Bounded);
        assert_eq!(AuditKeyUse::Off.class(), None);
    }

    #[test]
    fn canonical_encoding_separates_fields() {
        let mut a = AuditRecord::from_event(0, 1, &AuditEvent::default());
        a.actor = "ab".into();
        let mut b = a.clone();
        b.actor = "a".into();
        b.role = "b".into();
        assert_ne!(a.canonical(), b.canonical());
        assert_eq!(AuditRecord::from_canonical(&a.canonical()), Some(a.clone()));
        let mut c = a.canonical();
        c.push(0);
        assert_eq!(AuditRecord::from_canonical(&c), None);
        assert_eq!(AuditRecord::from_canonical(&a.canonical()[..40]), None);
    }
}
