//! The `quorum` unlock policy (DESIGN.md §3): the master key is wrapped only under an unseal
//! key, and the unseal key exists only as M-of-N Shamir shares (GF(256), vsss-rs) held by
//! custodians.
//!
//! ```text
//!   unseal key (256 bit) ──Shamir M-of-N──> share 1 .. share N     (custodians; never stored)
//!   unseal key ──AES-256-GCM(aad = store id)──> wrapped MK        (keyslot row 2 of the store)
//!   SHA-256(store id || share i)                                   (keyslot row 2, `salt` column)
//! ```
//!
//! The store keeps a digest of every share it issued, so a presented share is checked on its
//! own, before any combination: a forged share, a share of another store or a share presented
//! twice is refused and does not count towards the threshold. The digests reveal nothing: each
//! share is 32 uniformly random bytes plus its index.
//!
//! A share file may be encrypted to its custodian's passphrase (Argon2id + AES-256-GCM); that
//! happens on the custodian's side ([`ShareFile::decrypt`]), so the HSM only ever sees the share.
//!
//! This module never logs, prints or returns the unseal key, the master key or a share except
//! inside [`Share`] (zeroized on drop, redacted `Debug`).

use std::convert::Infallible;
use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::Provider;
use crate::error::{Error, Result};
use crate::hierarchy::{IntegrityKeys, KdfParams, MasterKey, Vault};
use crate::store::{KeyslotRow, SqliteStore, Store};

/// The store's `policy` value for this unlock policy.
pub const QUORUM_POLICY: &str = "quorum";
/// The keyslot row (`user_type`) that holds the master key wrapped under the unseal key.
pub const QUORUM_SLOT: u8 = 2;
/// Most shares a store can issue (GF(256) identifiers).
pub const MAX_SHARES: u8 = 255;
const SHARE_FORMAT: &str = "bulwark-share-v1";
const KEY_LEN: usize = 32;

/// One unseal share: its index (1..=N) and 32 share bytes. Zeroized on drop; not `Clone`.
pub struct Share(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(index {}, [REDACTED])", self.index())
    }
}

impl Share {
    /// The share's index (its Shamir identifier).
    pub fn index(&self) -> u8 {
        self.0.first().copied().unwrap_or(0)
    }

    /// The raw share (index byte then value bytes).
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    fn from_slice(b: &[u8]) -> Self {
        Self(Zeroizing::new(b.to_vec()))
    }
}

/// Why a presented share was refused. None of these count towards the threshold.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// The share file cannot be parsed.
    #[error("malformed share")]
    Malformed,
    /// The share belongs to another store.
    #[error("share belongs to another store")]
    WrongStore,
    /// The share was not issued for this store (forged or corrupted).
    #[error("share is not valid for this store")]
    Invalid,
    /// A share with this index was already presented in this unseal attempt.
    #[error("share {0} was already presented")]
    Repeated(u8),
    /// The HSM is not sealed.
    #[error("not sealed")]
    NotSealed,
    /// A core failure (store, integrity, self-test state).
    #[error(transparent)]
    Core(#[from] Error),
}

/// An RNG for vsss-rs backed by the provider's (health-tested) RNG. A failure is remembered and
/// turned into an error after the split, so no share made from a failed RNG is ever used.
pub(crate) struct ProviderRng {
    p: &'static Provider,
    failed: bool,
}

impl ProviderRng {
    /// An RNG drawing from `p`.
    pub(crate) fn new(p: &'static Provider) -> Self {
        Self { p, failed: false }
    }

    /// Whether any draw failed (then nothing made from it may be used).
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }
}

impl rand_core::TryRng for ProviderRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        if self.p.random(dst).is_err() {
            self.failed = true;
            dst.fill(0);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for ProviderRng {}

fn share_digest(store_uid: &[u8; 16], share: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"bulwark unseal share v1");
    ctx.update(store_uid);
    ctx.update(share);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn slot_aad(store_uid: &[u8; 16]) -> Vec<u8> {
    let mut aad = b"bulwark quorum keyslot v1".to_vec();
    aad.extend_from_slice(store_uid);
    aad
}

fn aead(key: &[u8]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key).map(LessSafeKey::new).map_err(|_| Error::Internal("aead"))
}

fn seal_with(key: &[u8], nonce: [u8; NONCE_LEN], aad: &[u8], pt: &[u8]) -> Result<Vec<u8>> {
    let mut buf = pt.to_vec();
    aead(key)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| Error::CryptoFailed)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    buf.zeroize();
    Ok(out)
}

fn open_with(key: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
    let mut buf = Zeroizing::new(sealed[NONCE_LEN..].to_vec());
    let n = aead(key)
        .ok()?
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .ok()?
        .len();
    buf.truncate(n);
    Some(buf)
}

fn rand_array<const N: usize>(p: &Provider) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    p.random(&mut b)?;
    Ok(b)
}

/// What [`init_quorum_store`] hands back: the store id and the N shares, to be written to the
/// custodians' share files and then dropped.
#[derive(Debug)]
pub struct QuorumInit {
    /// The new store's id.
    pub store_uid: [u8; 16],
    /// Shares needed to unseal.
    pub threshold: u8,
    /// The shares, index 1..=N.
    pub shares: Vec<Share>,
}

/// Creates a store with the `quorum` unlock policy: a fresh master key wrapped only under a
/// fresh unseal key, split into `total` shares of which `threshold` unseal.
pub fn init_quorum_store(path: &Path, label: &str, total: u8, threshold: u8) -> Result<QuorumInit> {
    init_quorum_store_with(path, label, total, threshold, &crate::token::SecurityPolicy::default())
}

/// [`init_quorum_store`] with a security policy (tamper response, audit of key use, ...),
/// stored under the master key's integrity MAC like a PIN store's.
pub fn init_quorum_store_with(
    path: &Path,
    label: &str,
    total: u8,
    threshold: u8,
    policy: &crate::token::SecurityPolicy,
) -> Result<QuorumInit> {
    init_quorum_store_with_users(path, label, total, threshold, policy, &[])
}

/// [`init_quorum_store_with`], creating `users` (the first security officer) in the same
/// initialization: users live in the store, under the master key, from the start.
pub fn init_quorum_store_with_users(
    path: &Path,
    label: &str,
    total: u8,
    threshold: u8,
    policy: &crate::token::SecurityPolicy,
    users: &[crate::token::InitialUser],
) -> Result<QuorumInit> {
    let create = |uid: [u8; 16], unlock: &str| SqliteStore::create(path, uid, unlock);
    init_quorum_store_on(create, path, label, total, threshold, policy, users)
}

/// [`init_quorum_store_with_users`] on any [`Store`]: `create` writes the
/// new store's header (store id, unlock policy) and returns the store, once every argument
/// has been checked; the audit log is the local file `<audit_base>-audit` (see
/// [`crate::Token::open_store`]).
pub fn init_quorum_store_on<S: Store>(
    create: impl FnOnce([u8; 16], &str) -> Result<S>,
    audit_base: &Path,
    label: &str,
    total: u8,
    threshold: u8,
    policy: &crate::token::SecurityPolicy,
    users: &[crate::token::InitialUser],
) -> Result<QuorumInit> {
    if label.is_empty() || label.len() > 32 {
        return Err(Error::ArgumentsBad("token label must be 1 to 32 bytes"));
    }
    if threshold < 2 || total < threshold {
        return Err(Error::ArgumentsBad("quorum needs 2 <= threshold <= shares <= 255"));
    }
    let p = Provider::get()?;
    let store_uid: [u8; 16] = rand_array(p)?;
    let mut mk_bytes = Zeroizing::new(rand_array::<KEY_LEN>(p)?);
    let unseal_key = Zeroizing::new(rand_array::<KEY_LEN>(p)?);
    let wrapped = seal_with(&unseal_key[..], rand_array(p)?, &slot_aad(&store_uid), &mk_bytes[..])?;
    let mut rng = ProviderRng { p, failed: false };
    let mut raw = vsss_rs::Gf256::split_bytes(
        usize::from(threshold),
        usize::from(total),
        &unseal_key[..],
        &mut rng,
    )
    .map_err(|_| Error::Internal("secret sharing failed"))?;
    let shares: Vec<Share> = raw.iter().map(|s| Share::from_slice(s)).collect();
    for s in &mut raw {
        s.zeroize();
    }
    if rng.failed {
        return Err(Error::Internal("random source failed during secret sharing"));
    }
    let mut digests = Vec::with_capacity(shares.len() * 32);
    for s in &shares {
        digests.extend_from_slice(&share_digest(&store_uid, s.expose_secret()));
    }
    let mk = MasterKey::from_random(*mk_bytes);
    mk_bytes.zeroize();
    let vault = Vault::new(mk, store_uid);
    // The quorum keyslot reuses the keyslot row: `salt` holds the share digests, `m_cost` the
    // threshold, `t_cost` the share count (no KDF runs for this slot; `p_cost` is 0).
    let slot = KeyslotRow {
        user_type: QUORUM_SLOT,
        salt: digests,
        m_cost: u32::from(threshold),
        t_cost: u32::from(total),
        p_cost: 0,
        wrapped_mk: wrapped,
        mac: Vec::new(),
    };
    crate::limits::check_token_label(label)?;
    let store = create(store_uid, QUORUM_POLICY)?;
    crate::token::create_in(store, audit_base, store_uid, label, &[slot], vault, policy, users)?;
    Ok(QuorumInit { store_uid, threshold, shares })
}

/// The quorum parameters of a store, read while sealed (nothing secret).
#[derive(Clone, Debug)]
pub struct QuorumPolicy {
    /// Store id.
    pub store_uid: [u8; 16],
    /// Shares needed.
    pub threshold: u8,
    /// Shares issued.
    pub total: u8,
    digests: Vec<[u8; 32]>,
    wrapped_mk: Vec<u8>,
}

impl QuorumPolicy {
    /// Reads the policy of the store at `path`; refuses a store of another policy.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_store(&SqliteStore::open(path)?)
    }

    /// Reads the policy of an open store (any [`Store`]); refuses a
    /// store of another policy.
    pub fn from_store<S: Store>(store: &S) -> Result<Self> {
        let meta = store.header()?;
        if meta.zeroized {
            return Err(Error::Zeroized);
        }
        if meta.policy != QUORUM_POLICY {
            return Err(Error::ArgumentsBad("store does not use the quorum unlock policy"));
        }
        let row = store.keyslot(QUORUM_SLOT)?.ok_or(Error::Integrity("quorum keyslot missing"))?;
        let threshold = u8::try_from(row.m_cost).ok();
        let total = u8::try_from(row.t_cost).ok();
        let (Some(threshold), Some(total)) = (threshold, total) else {
            return Err(Error::Integrity("quorum keyslot parameters invalid"));
        };
        if threshold < 2 || total < threshold || row.salt.len() != usize::from(total) * 32 {
            return Err(Error::Integrity("quorum keyslot parameters invalid"));
        }
        let digests = row
            .salt
            .chunks_exact(32)
            .map(|c| {
                let mut d = [0u8; 32];
                d.copy_from_slice(c);
                d
            })
            .collect();
        Ok(Self {
            store_uid: meta.store_uid,
            threshold,
            total,
            digests,
            wrapped_mk: row.wrapped_mk,
        })
    }

    /// Checks one share on its own: right length, issued for this store. Constant time over the
    /// digest list.
    fn check(&self, share: &Share) -> Result<(), UnsealError> {
        if share.expose_secret().len() != KEY_LEN + 1 || share.index() == 0 {
            return Err(UnsealError::Invalid);
        }
        let d = share_digest(&self.store_uid, share.expose_secret());
        let mut hit = subtle::Choice::from(0);
        for known in &self.digests {
            hit |= known.ct_eq(&d);
        }
        if bool::from(hit) {
            Ok(())
        } else {
            Err(UnsealError::Invalid)
        }
    }
}

/// Unseal progress after a share was accepted.
#[derive(Debug)]
pub enum Progress {
    /// More shares are needed.
    Pending {
        /// Distinct valid shares so far.
        have: u8,
        /// Shares needed.
        need: u8,
    },
    /// The threshold was reached: the master key and integrity keys, for
    /// [`crate::Token::unseal`].
    Complete(Box<(Vault, IntegrityKeys)>),
}

/// Collects shares for one unseal attempt.
#[derive(Debug)]
pub struct Unsealer {
    policy: QuorumPolicy,
    shares: Vec<Share>,
}

impl Unsealer {
    /// A fresh attempt under `policy`.
    pub fn new(policy: QuorumPolicy) -> Self {
        Self { policy, shares: Vec::new() }
    }

    /// The policy.
    pub fn policy(&self) -> &QuorumPolicy {
        &self.policy
    }

    /// Distinct valid shares so far.
    pub fn progress(&self) -> u8 {
        self.shares.len() as u8
    }

    /// Forgets the shares presented so far.
    pub fn reset(&mut self) {
        self.shares.clear();
    }

    /// Presents one share. A refused share does not count and leaves the attempt as it was.
    pub fn submit(&mut self, share: Share) -> Result<Progress, UnsealError> {
        self.policy.check(&share)?;
        if self.shares.iter().any(|s| s.index() == share.index()) {
            return Err(UnsealError::Repeated(share.index()));
        }
        self.shares.push(share);
        let have = self.progress();
        if have < self.policy.threshold {
            return Ok(Progress::Pending { have, need: self.policy.threshold });
        }
        let raw: Vec<Vec<u8>> = self.shares.iter().map(|s| s.expose_secret().to_vec()).collect();
        self.shares.clear();
        let combined = vsss_rs::Gf256::combine_bytes(&raw[..]);
        for mut r in raw {
            r.zeroize();
        }
        let key = Zeroizing::new(combined.map_err(|_| UnsealError::Invalid)?);
        let mk = open_with(&key, &slot_aad(&self.policy.store_uid), &self.policy.wrapped_mk)
            // Every share matched a digest, so this is a corrupted keyslot, not a bad share.
            .ok_or(Error::Integrity("quorum keyslot does not authenticate"))?;
        let bytes: [u8; KEY_LEN] =
            mk[..].try_into().map_err(|_| Error::Integrity("quorum keyslot malformed"))?;
        let vault = Vault::new(MasterKey::from_random(bytes), self.policy.store_uid);
        let ik = vault.integrity_keys()?;
        Ok(Progress::Complete(Box::new((vault, ik))))
    }
}

/// Passphrase protection of a share file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShareEncryption {
    /// Always `argon2id`.
    pub kdf: String,
    /// Argon2id memory cost (KiB).
    pub m_cost: u32,
    /// Argon2id iterations.
    pub t_cost: u32,
    /// Argon2id lanes.
    pub p_cost: u32,
    /// Hex salt.
    pub salt: String,
    /// Hex nonce || AES-256-GCM ciphertext of the share.
    pub ciphertext: String,
}

/// A custodian's share file (JSON).
#[derive(Clone, Serialize, Deserialize)]
pub struct ShareFile {
    /// `bulwark-share-v1`.
    pub format: String,
    /// Hex store id.
    pub store_id: String,
    /// Share index.
    pub index: u8,
    /// Shares needed.
    pub threshold: u8,
    /// Shares issued.
    pub shares: u8,
    /// Hex share, when not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// The encrypted share, when protected by a passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<ShareEncryption>,
}

impl std::fmt::Debug for ShareFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareFile")
            .field("store_id", &self.store_id)
            .field("index", &self.index)
            .field("encrypted", &self.encrypted.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for ShareFile {
    fn drop(&mut self) {
        if let Some(s) = self.share.as_mut() {
            s.zeroize();
        }
    }
}

fn file_aad(store_id: &str, index: u8) -> Vec<u8> {
    let mut aad = b"bulwark share file v1".to_vec();
    aad.extend_from_slice(store_id.as_bytes());
    aad.push(index);
    aad
}

fn passphrase_key(pass: &[u8], salt: &[u8], k: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(k.m_cost, k.t_cost, k.p_cost, Some(32))
        .map_err(|_| Error::ArgumentsBad("share file KDF parameters invalid"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(pass, salt, &mut out[..])
        .map_err(|_| Error::ArgumentsBad("share file KDF failed"))?;
    Ok(out)
}

impl ShareFile {
    /// A share file for `share`, encrypted to `passphrase` when one is given.
    pub fn new(
        init: &QuorumInit,
        share: &Share,
        passphrase: Option<&[u8]>,
        kdf: KdfParams,
    ) -> Result<Self> {
        let store_id = hex::encode(init.store_uid);
        let mut f = Self {
            format: SHARE_FORMAT.into(),
            store_id,
            index: share.index(),
            threshold: init.threshold,
            shares: init.shares.len() as u8,
            share: None,
            encrypted: None,
        };
        match passphrase {
            None => f.share = Some(hex::encode(share.expose_secret())),
            Some(pass) => {
                let p = Provider::get()?;
                let salt: [u8; 16] = rand_array(p)?;
                let key = passphrase_key(pass, &salt, kdf)?;
                let ct = seal_with(
                    &key[..],
                    rand_array(p)?,
                    &file_aad(&f.store_id, f.index),
                    share.expose_secret(),
                )?;
                f.encrypted = Some(ShareEncryption {
                    kdf: "argon2id".into(),
                    m_cost: kdf.m_cost,
                    t_cost: kdf.t_cost,
                    p_cost: kdf.p_cost,
                    salt: hex::encode(salt),
                    ciphertext: hex::encode(ct),
                });
            }
        }
        Ok(f)
    }

    /// Parses a share file.
    pub fn parse(text: &[u8]) -> Result<Self, UnsealError> {
        let f: Self = serde_json::from_slice(text).map_err(|_| UnsealError::Malformed)?;
        if f.format != SHARE_FORMAT {
            return Err(UnsealError::Malformed);
        }
        Ok(f)
    }

    /// The file as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Whether the share is passphrase-protected.
    pub fn is_encrypted(&self) -> bool {
        self.encrypted.is_some()
    }

    /// The plaintext form of this file (decrypting with `passphrase` if it is encrypted): what
    /// a custodian sends to the HSM.
    pub fn decrypt(&self, passphrase: Option<&[u8]>) -> Result<Self, UnsealError> {
        let share = self.share(passphrase)?;
        let mut f = self.clone();
        f.encrypted = None;
        f.share = Some(hex::encode(share.expose_secret()));
        Ok(f)
    }

    /// The share itself. A wrong passphrase is `Invalid`.
    pub fn share(&self, passphrase: Option<&[u8]>) -> Result<Share, UnsealError> {
        match (&self.share, &self.encrypted, passphrase) {
            (Some(h), None, _) => {
                let b = Zeroizing::new(hex::decode(h).map_err(|_| UnsealError::Malformed)?);
                Ok(Share::from_slice(&b))
            }
            (None, Some(e), Some(pass)) => {
                if e.kdf != "argon2id" {
                    return Err(UnsealError::Malformed);
                }
                let salt = hex::decode(&e.salt).map_err(|_| UnsealError::Malformed)?;
                let ct = hex::decode(&e.ciphertext).map_err(|_| UnsealError::Malformed)?;
                let kdf = KdfParams { m_cost: e.m_cost, t_cost: e.t_cost, p_cost: e.p_cost };
                let key = passphrase_key(pass, &salt, kdf).map_err(|_| UnsealError::Malformed)?;
                let pt = open_with(&key[..], &file_aad(&self.store_id, self.index), &ct)
                    .ok_or(UnsealError::Invalid)?;
                Ok(Share::from_slice(&pt))
            }
            (None, Some(_), None) => Err(UnsealError::Core(Error::ArgumentsBad(
                "share file is encrypted: a passphrase is needed",
            ))),
            _ => Err(UnsealError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams { m_cost: 64, t_cost: 1, p_cost: 1 };

    fn setup(n: u8, m: u8) -> (tempfile::TempDir, QuorumInit, QuorumPolicy) {
        // Set once: changing the environment while other test threads read it is not safe.
        static ONCE: std::sync::Once = std::sync::Once::new();
        let d = tempfile::tempdir().unwrap();
        ONCE.call_once(|| {
            let dir =
                std::env::temp_dir().join(format!("bulwark-seal-test-{}", std::process::id()));
            std::env::set_var("BULWARK_STATE_DIR", dir);
        });
        let path = d.path().join("q.db");
        let init = init_quorum_store(&path, "q", n, m).unwrap();
        let pol = QuorumPolicy::load(&path).unwrap();
        (d, init, pol)
    }

    fn copy(s: &Share) -> Share {
        Share::from_slice(s.expose_secret())
    }

    #[test]
    fn threshold_minus_one_pending_threshold_completes() {
        let (_d, init, pol) = setup(5, 3);
        let mut u = Unsealer::new(pol);
        assert!(matches!(u.submit(copy(&init.shares[4])), Ok(Progress::Pending { have: 1, .. })));
        assert!(matches!(u.submit(copy(&init.shares[0])), Ok(Progress::Pending { have: 2, .. })));
        assert!(matches!(u.submit(copy(&init.shares[2])), Ok(Progress::Complete(..))));
        assert_eq!(u.progress(), 0);
    }

    #[test]
    fn forged_and_repeated_shares_do_not_count() {
        let (_d, init, pol) = setup(3, 2);
        let mut u = Unsealer::new(pol);
        u.submit(copy(&init.shares[0])).unwrap();
        assert!(matches!(u.submit(copy(&init.shares[0])), Err(UnsealError::Repeated(1))));
        let mut forged = init.shares[1].expose_secret().to_vec();
        forged[5] ^= 1;
        assert!(matches!(u.submit(Share::from_slice(&forged)), Err(UnsealError::Invalid)));
        assert!(matches!(u.submit(Share::from_slice(&[2u8; 33])), Err(UnsealError::Invalid)));
        assert_eq!(u.progress(), 1);
        // A share of another store is refused too.
        let (_d2, other, _) = setup(3, 2);
        assert!(matches!(u.submit(copy(&other.shares[1])), Err(UnsealError::Invalid)));
        assert!(matches!(u.submit(copy(&init.shares[1])), Ok(Progress::Complete(..))));
    }

    #[test]
    fn share_files_round_trip_plain_and_encrypted() {
        let (_d, init, pol) = setup(3, 2);
        let plain = ShareFile::new(&init, &init.shares[0], None, FAST).unwrap();
        let enc = ShareFile::new(&init, &init.shares[1], Some(b"custodian pass"), FAST).unwrap();
        let enc = ShareFile::parse(enc.to_json().as_bytes()).unwrap();
        assert!(
            enc.is_encrypted()
                && !enc.to_json().contains(&hex::encode(init.shares[1].expose_secret()))
        );
        assert!(matches!(enc.share(Some(b"wrong pass")), Err(UnsealError::Invalid)));
        let mut u = Unsealer::new(pol);
        u.submit(plain.share(None).unwrap()).unwrap();
        let dec = enc.decrypt(Some(b"custodian pass")).unwrap();
        assert!(matches!(u.submit(dec.share(None).unwrap()), Ok(Progress::Complete(..))));
    }

    #[test]
    fn debug_shows_no_share_bytes() {
        let (_d, init, _) = setup(2, 2);
        let s = format!("{:?} {:?}", init.shares[0], init);
        assert!(s.contains("REDACTED"));
        assert!(!s.contains(&hex::encode(&init.shares[0].expose_secret()[1..9])));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Untrusted share files and share bytes never panic and never count.
        #[test]
        fn arbitrary_share_input_is_refused_without_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            idx in 1u8..=3,
        ) {
            let (_d, init, pol) = shared_setup();
            let _ = ShareFile::parse(&bytes).map(|f| f.share(Some(b"pass")));
            let mut u = Unsealer::new(pol);
            let r = u.submit(Share::from_slice(&bytes));
            proptest::prop_assert!(r.is_err());
            // A valid share's index with random value bytes: refused too.
            let mut forged = vec![idx];
            forged.extend(bytes.iter().copied().chain(std::iter::repeat(0)).take(32));
            let is_real = init.shares.iter().any(|s| s.expose_secret() == &forged[..]);
            proptest::prop_assert!(is_real || u.submit(Share::from_slice(&forged)).is_err());
            proptest::prop_assert_eq!(u.progress(), 0);
        }
    }

    fn shared_setup(
    ) -> (std::sync::Arc<tempfile::TempDir>, std::sync::Arc<QuorumInit>, QuorumPolicy) {
        use std::sync::{Arc, OnceLock};
        static S: OnceLock<(Arc<tempfile::TempDir>, Arc<QuorumInit>, QuorumPolicy)> =
            OnceLock::new();
        let (d, i, p) = S.get_or_init(|| {
            let (d, i, p) = setup(3, 2);
            (Arc::new(d), Arc::new(i), p)
        });
        (d.clone(), i.clone(), p.clone())
    }

    #[test]
    fn bad_parameters_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(init_quorum_store(&d.path().join("a"), "q", 3, 1).is_err());
        assert!(init_quorum_store(&d.path().join("b"), "q", 2, 3).is_err());
    }
}
