//! Shared pieces of the attack suite (`attack_store.rs`, `attack_gate.rs`): stores built with
//! cheap Argon2id costs, templates, the quorum unseal a daemon performs, principals, and the
//! host's anti-rollback marks (saved and restored so that every attack starts from the same
//! host state).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};

use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::kernel::{Caller, Grantee, Principal, Role};
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::seal::{Progress, QuorumPolicy, ShareFile, UnsealError, Unsealer};
use bulwark_core::secret::Pin;
use bulwark_core::token::{Credentials, InitOptions, InitialUser, SecurityPolicy};
use bulwark_core::{Error, Token};

/// Cheap Argon2id costs (the suite runs hundreds of unlocks).
pub const FAST: KdfParams = KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 };
/// The session id used for every call.
pub const S: u64 = 1;

pub fn so() -> Pin {
    Pin::new(b"so-pin-1234".to_vec())
}
pub fn user() -> Pin {
    Pin::new(b"user-pin-1234".to_vec())
}
pub fn user2() -> Pin {
    Pin::new(b"user-pin-5678".to_vec())
}

pub fn b(t: AttrType, v: bool) -> (AttrType, AttrValue) {
    (t, AttrValue::Bool(v))
}
pub fn label(l: &str) -> (AttrType, AttrValue) {
    (AttrType::Label, AttrValue::Bytes(l.as_bytes().to_vec()))
}
pub fn ulong(t: AttrType, v: u64) -> (AttrType, AttrValue) {
    (t, AttrValue::Ulong(v))
}
pub fn bytes(t: AttrType, v: &[u8]) -> (AttrType, AttrValue) {
    (t, AttrValue::Bytes(v.to_vec()))
}

pub fn gcm() -> Mechanism {
    Mechanism::AesGcm { iv: vec![1; 12], aad: vec![], tag_bits: 128 }
}

/// A 256-bit AES key with the given label, on the token (`token = true`) or in the session.
pub fn aes(t: &Token, l: &str, token: bool, extra: &[(AttrType, AttrValue)]) -> Result<u64, Error> {
    let mut tmpl = vec![b(AttrType::Token, token), label(l), ulong(AttrType::ValueLen, 32)];
    tmpl.extend_from_slice(extra);
    t.generate_key(KeyGenMechanism::AesKeyGen, &tmpl, S)
}

/// A P-256 key pair (public, private) with the given label.
pub fn ec_pair(
    t: &Token,
    l: &str,
    token: bool,
    private_extra: &[(AttrType, AttrValue)],
) -> Result<(u64, u64), Error> {
    let mut priv_t = vec![b(AttrType::Token, token), label(l), b(AttrType::Sign, true)];
    priv_t.extend_from_slice(private_extra);
    t.generate_key_pair(
        KeyGenMechanism::EcKeyPairGen,
        &[
            b(AttrType::Token, token),
            label(l),
            b(AttrType::Verify, true),
            bytes(AttrType::EcParams, Curve::P256.oid_der()),
        ],
        &priv_t,
        S,
    )
}

/// A token data object.
pub fn data_object(t: &Token, l: &str, private: bool) -> Result<u64, Error> {
    t.create_object(
        &[
            ulong(AttrType::Class, ObjectClass::Data.to_raw()),
            b(AttrType::Token, true),
            b(AttrType::Private, private),
            label(l),
            bytes(AttrType::Value, b"some data"),
        ],
        S,
    )
}

/// A known AES key imported from its value (`C_CreateObject`).
pub fn import_aes(
    t: &Token,
    l: &str,
    token: bool,
    value: &[u8; 32],
    extra: &[(AttrType, AttrValue)],
) -> Result<u64, Error> {
    let mut tmpl = vec![
        ulong(AttrType::Class, ObjectClass::SecretKey.to_raw()),
        ulong(AttrType::KeyType, 0x1f), // CKK_AES
        b(AttrType::Token, token),
        label(l),
        bytes(AttrType::Value, value),
    ];
    tmpl.extend_from_slice(extra);
    t.create_object(&tmpl, S)
}

pub fn is_integrity(e: &Error) -> bool {
    matches!(e, Error::Integrity(_) | Error::Rollback { .. }) && e.to_string().contains("integrity")
}

/// Asserts an integrity (or rollback) error whose message says "integrity".
#[track_caller]
pub fn assert_integrity<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) {
    match r {
        Err(e) if is_integrity(&e) => {}
        other => panic!("{what}: expected an integrity error, got {other:?}"),
    }
}

/// A PIN store with an SO and a user PIN and the given security policy.
pub fn pin_store(path: &Path, policy: SecurityPolicy) {
    let opts = InitOptions { kdf: FAST, policy };
    Token::init_with_options(path, "attack", &so(), Some(&user()), &opts).unwrap();
}

/// The first security officer of every quorum store of the suite.
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &[u8] = b"admin-password";

/// A quorum store (2 of 3 shares) created with its first security officer ([`ADMIN`]), as a
/// daemon's `init` makes it; returns the share files (JSON) of its custodians.
pub fn quorum_store(path: &Path, policy: &SecurityPolicy) -> Vec<String> {
    let admin = InitialUser {
        name: ADMIN.into(),
        role: Role::SecurityOfficer,
        password: zeroize::Zeroizing::new(ADMIN_PASSWORD.to_vec()),
    };
    let init =
        bulwark_core::seal::init_quorum_store_with_users(path, "attack-q", 3, 2, policy, &[admin])
            .unwrap();
    init.shares.iter().map(|s| ShareFile::new(&init, s, None, FAST).unwrap().to_json()).collect()
}

/// Why an unseal did not complete.
#[derive(Debug)]
pub enum UnsealFail {
    /// The token (or the store) refused: an integrity error, a rollback, ...
    Core(Error),
    /// A share was refused (not issued for this store as it now reads).
    Share(String),
    /// Every share was accepted but the threshold was not reached.
    Incomplete,
}

impl UnsealFail {
    pub fn is_integrity(&self) -> bool {
        matches!(self, UnsealFail::Core(e) if is_integrity(e))
    }
}

/// Unseals `t` the way the daemon does (`bulwarkd/src/state.rs`): the store's quorum policy,
/// one share at a time, then [`Token::unseal`] with the reconstructed keys.
pub fn unseal(t: &Token, path: &Path, shares: &[String]) -> Result<(), UnsealFail> {
    let policy = QuorumPolicy::load(path).map_err(UnsealFail::Core)?;
    let mut u = Unsealer::new(policy);
    let mut refused = None;
    for json in shares {
        let share = ShareFile::parse(json.as_bytes()).unwrap().share(None).unwrap();
        match u.submit(share) {
            Ok(Progress::Pending { .. }) => {}
            Ok(Progress::Complete(keys)) => {
                let (vault, ik) = *keys;
                return t.unseal(vault, ik).map_err(UnsealFail::Core);
            }
            Err(UnsealError::Core(e)) => return Err(UnsealFail::Core(e)),
            // The custodians go on with the next share, as they would at a daemon.
            Err(e) => refused = Some(e.to_string()),
        }
    }
    Err(refused.map_or(UnsealFail::Incomplete, UnsealFail::Share))
}

/// Opens and unseals a quorum store.
pub fn open_unsealed(path: &Path, shares: &[String]) -> Token {
    let t = Token::open(path).unwrap();
    unseal(&t, path, shares).unwrap();
    t
}

/// A front-door caller for `p` acting in login `login`.
pub fn caller(p: &Principal, login: u64) -> Caller {
    Caller { principal: p.clone(), login, client: format!("attack-test login {login}") }
}

/// The host's anti-rollback marks of one store (generation and audit-log size), as files in
/// the state directory. Every attack on a copy of a store may advance them (failed logins are
/// audited); restoring them gives each attack the host state of the original store.
pub struct Marks {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Marks {
    pub fn save(store_uid: &[u8; 16]) -> Self {
        let dir = bulwark_core::rollback::state_dir().expect("a state directory");
        let files = ["generation", "audit"]
            .iter()
            .map(|ext| {
                let p = dir.join(format!("{}.{ext}", hex::encode(store_uid)));
                let v = std::fs::read(&p).ok();
                (p, v)
            })
            .collect();
        Self { files }
    }

    pub fn restore(&self) {
        for (p, v) in &self.files {
            match v {
                Some(v) => std::fs::write(p, v).unwrap(),
                None => {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

/// The store id of a store file.
pub fn store_uid(path: &Path) -> [u8; 16] {
    let c = rusqlite::Connection::open(path).unwrap();
    let v: Vec<u8> =
        c.query_row("SELECT v FROM meta WHERE k = 'store_uid'", [], |r| r.get(0)).unwrap();
    v.try_into().unwrap()
}

/// Folds the WAL into the store file (no connection may be open in this process).
pub fn checkpoint(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
}

/// Copies a store and its companions (`-audit`, `-wal`, `-shm`, ...) from `from` to `to`
/// (file names are kept relative to the store's name).
pub fn copy_store(from: &Path, to: &Path) {
    let from_dir = from.parent().unwrap();
    let name = from.file_name().unwrap().to_string_lossy().into_owned();
    let to_name = to.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    for e in std::fs::read_dir(from_dir).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = n.strip_prefix(&name) {
            std::fs::copy(e.path(), to.parent().unwrap().join(format!("{to_name}{rest}"))).unwrap();
        }
    }
}

/// One RFC 6238 code (SHA-1, 6 digits, 30 s steps) for `step`, computed independently of the
/// token.
pub fn totp_code(secret: &[u8], step: u64) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let m = mac.as_ref();
    let off = usize::from(m[m.len() - 1] & 0x0f);
    let bin = (u32::from(m[off]) & 0x7f) << 24
        | u32::from(m[off + 1]) << 16
        | u32::from(m[off + 2]) << 8
        | u32::from(m[off + 3]);
    format!("{:06}", bin % 1_000_000)
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The security officer a quorum store was created with, authenticated.
pub fn admin(t: &Token) -> Principal {
    t.authenticate(&Credentials {
        name: ADMIN,
        password: ADMIN_PASSWORD,
        totp: None,
        cert_sha256: None,
    })
    .unwrap()
}

/// A grant to one user, by name.
pub fn to(name: &str) -> Grantee {
    Grantee::User(name.to_owned())
}

/// A crypto officer of a quorum store (`keeper`, created by [`ADMIN`] on first use),
/// authenticated.
pub fn keeper(t: &Token) -> Principal {
    let so = admin(t);
    bulwark_core::kernel::as_caller(caller(&so, 0), || {
        match t.create_user("keeper", Role::CryptoOfficer, b"keeper-password", None) {
            Ok(_) | Err(Error::Exists(_)) => {}
            Err(e) => panic!("keeper: {e:?}"),
        }
    });
    t.authenticate(&Credentials {
        name: "keeper",
        password: b"keeper-password",
        totp: None,
        cert_sha256: None,
    })
    .unwrap()
}
