//! Key operations as the network API names them: keys by label, key types and mechanisms by
//! the CLI's names. Runs on the worker pool (blocking, CPU-bound); never on the reactor.
//!
//! A label resolves only among the objects the caller may see (the token filters every
//! lookup for the caller of the request), token objects first: another login's session object
//! never answers to a label, and a session object of the caller's own cannot shadow a token key.
//! Nothing here returns key material: only public keys, signatures, ciphertexts and the
//! plaintexts of decryptions the caller asked for.

use bulwark_core::attr::{AttrType, ObjectClass};
use bulwark_core::crypto::{self, Curve, KeySpec};
use bulwark_core::kernel::{Grantee, Ops, UserId};
use bulwark_core::lifecycle::KeyState;
use bulwark_core::mechanism::Mechanism;
use bulwark_core::token::{ObjectInfo, SESSION_HANDLE_BASE};
use bulwark_core::{envelope, names};
use bulwark_core::{Error, Result};

use crate::store::NodeToken as Token;
use bulwark_proto::v1;

/// A caller-supplied string as it may appear in a log line or a terminal: control characters
/// (newlines, ANSI escapes) are escaped, and it is cut at 80 characters.
pub(crate) fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(96));
    for c in s.chars().take(80) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a label is resolved for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Purpose {
    /// A private or secret key that signs.
    Sign,
    /// A public or secret key that verifies.
    Verify,
    /// An AES key.
    Aes,
}

/// (label, purpose, caller) → (handle, key spec) resolutions, so the hot path does not query
/// the store per request. Per caller, because what a label resolves to depends on what the
/// caller may see. The daemon is the store's only writer in production; it clears the cache
/// whenever it creates, destroys or re-grants a key, and an entry whose handle has gone is
/// dropped and resolved again. Handles are never reused, so a stale entry can only fail, never
/// name another key; and every use still passes the token's gate.
/// The version is part of the key (0: the current one); a rotation, manual or automatic,
/// makes the cached current version fail its gate (deactivated), and the entry is resolved
/// again.
type LabelKey = (String, Purpose, UserId, u64);

#[derive(Debug, Default)]
pub(crate) struct LabelCache(
    std::sync::RwLock<std::collections::HashMap<LabelKey, (u64, KeySpec)>>,
);

impl LabelCache {
    pub(crate) fn clear(&self) {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    fn forget(&self, key: &LabelKey) {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }

    fn resolve(&self, t: &Token, key: &LabelKey) -> Result<(u64, KeySpec)> {
        let (label, purpose, version) = (key.0.as_str(), key.1, (key.3 != 0).then_some(key.3));
        let cached =
            self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).copied();
        if let Some(v) = cached {
            // The current version of a label stops being current when it is rotated (here, on
            // another node, or automatically at a use): then it is no longer active, and the
            // label is resolved again. Verification would otherwise go on with the old version.
            let current =
                version.is_some() || t.key_lifecycle(v.0).is_ok_and(|(_, s)| s == KeyState::Active);
            if current {
                return Ok(v);
            }
            self.forget(key);
        }
        let h = match purpose {
            Purpose::Sign => key_handle_v(t, label, version, true)?,
            Purpose::Verify => key_handle_v(t, label, version, false)?,
            Purpose::Aes => aes_key_uncached(t, label, version)?,
        };
        let v = (h, t.key_spec(h)?);
        if h < SESSION_HANDLE_BASE {
            self.0
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key.clone(), v);
        }
        Ok(v)
    }

    /// Runs `f` on the key resolved for `label` and the caller `who`; on a vanished handle,
    /// resolves once more.
    #[allow(dead_code)] // the handlers name a version now; kept for callers that never do
    pub(crate) fn with<T>(
        &self,
        t: &Token,
        who: UserId,
        label: &str,
        purpose: Purpose,
        f: impl Fn(u64, KeySpec) -> Result<T>,
    ) -> Result<T> {
        self.with_version(t, who, label, 0, purpose, f)
    }

    /// [`LabelCache::with`] for version `version` of the key (0: the current one). A handle
    /// that vanished, or that its gate now refuses (the current version was rotated, here or
    /// by another node, or became due for automatic rotation at this very use), is resolved
    /// once more.
    pub(crate) fn with_version<T>(
        &self,
        t: &Token,
        who: UserId,
        label: &str,
        version: u64,
        purpose: Purpose,
        f: impl Fn(u64, KeySpec) -> Result<T>,
    ) -> Result<T> {
        let key = (label.to_owned(), purpose, who, version);
        let (h, spec) = self.resolve(t, &key)?;
        match f(h, spec) {
            Err(Error::ObjectHandleInvalid) => {
                self.forget(&key);
                let (h, spec) = self.resolve(t, &key)?;
                f(h, spec)
            }
            Err(e @ Error::KeyFunctionNotPermitted(_)) if version == 0 => {
                self.forget(&key);
                let (h2, spec) = self.resolve(t, &key)?;
                if h2 == h {
                    return Err(e);
                }
                f(h2, spec)
            }
            r => r,
        }
    }
}

/// Session id under which the daemon creates token objects.
const DAEMON_SESSION: u64 = 1;
const NONCE_LEN: usize = envelope::NONCE_LEN;

// Key-type and mechanism names are the CLI's, from one table in core (`bulwark_core::names`).
fn spec_for(name: &str) -> Result<KeySpec> {
    names::key_spec(name).ok_or(Error::ArgumentsBad("unknown key type"))
}

fn default_mechanism(spec: KeySpec) -> Result<Mechanism> {
    names::default_signature(spec)
        .ok_or(Error::KeyFunctionNotPermitted("this key type cannot sign"))
}

fn named_mechanism(name: &str) -> Result<Mechanism> {
    names::signature_mechanism(name).ok_or(Error::ArgumentsBad("unknown mechanism name"))
}

fn is_ecdsa(m: &Mechanism) -> bool {
    matches!(
        m,
        Mechanism::Ecdsa | Mechanism::EcdsaSha256 | Mechanism::EcdsaSha384 | Mechanism::EcdsaSha512
    )
}

/// The key objects `label` names: of its current version (`version: None`) or of version
/// `n` (docs/lifecycle.md); token objects if there is any, else the caller's own session
/// objects.
fn by_version(t: &Token, label: &str, version: Option<u64>) -> Result<Vec<ObjectInfo>> {
    if label.is_empty() || label.len() > bulwark_core::limits::MAX_LABEL {
        return Err(Error::ArgumentsBad("key label must be 1 to 256 bytes"));
    }
    let mut v = t.resolve_key(label, version)?;
    if v.iter().any(|o| o.handle < SESSION_HANDLE_BASE) {
        v.retain(|o| o.handle < SESSION_HANDLE_BASE);
    }
    Ok(v)
}

/// The key objects of the current version of `label`.
fn by_label(t: &Token, label: &str) -> Result<Vec<ObjectInfo>> {
    by_version(t, label, None)
}

/// Every visible object labelled `label` (every version): token objects if there is any, else
/// the caller's own session objects.
fn all_labelled(t: &Token, label: &str) -> Result<Vec<ObjectInfo>> {
    if label.is_empty() || label.len() > bulwark_core::limits::MAX_LABEL {
        return Err(Error::ArgumentsBad("key label must be 1 to 256 bytes"));
    }
    let mut v = t.find_by_label(label)?;
    if v.iter().any(|o| o.handle < SESSION_HANDLE_BASE) {
        v.retain(|o| o.handle < SESSION_HANDLE_BASE);
    }
    if v.is_empty() {
        return Err(Error::NotFound(label.to_owned()));
    }
    Ok(v)
}

/// Replaces the access list of every object labelled `label` (the halves of a key pair and
/// every version share it) with `grants`.
pub(crate) fn set_access(t: &Token, label: &str, grants: &[(Grantee, Ops)]) -> Result<()> {
    for o in all_labelled(t, label)? {
        for (who, _) in t.grants(o.handle)? {
            if !grants.iter().any(|(g, _)| *g == who) {
                t.set_grant(o.handle, &who, None)?;
            }
        }
        for (who, ops) in grants {
            t.set_grant(o.handle, who, Some(*ops))?;
        }
    }
    Ok(())
}

fn one_of(objs: &[ObjectInfo], class: ObjectClass, label: &str) -> Result<u64> {
    let v: Vec<_> = objs.iter().filter(|o| o.attrs.class() == Some(class)).collect();
    match v.as_slice() {
        [o] => Ok(o.handle),
        [] => Err(Error::NotFound(label.to_owned())),
        _ => Err(Error::Ambiguous(label.to_owned())),
    }
}

/// The handle for signing (private or secret key) or verifying (public or secret key).
fn key_handle(t: &Token, label: &str, signing: bool) -> Result<u64> {
    key_handle_v(t, label, None, signing)
}

/// [`key_handle`] of version `version` (`None`: the current one).
fn key_handle_v(t: &Token, label: &str, version: Option<u64>, signing: bool) -> Result<u64> {
    let objs = by_version(t, label, version)?;
    let class = if signing { ObjectClass::PrivateKey } else { ObjectClass::PublicKey };
    one_of(&objs, class, label).or_else(|_| one_of(&objs, ObjectClass::SecretKey, label))
}

/// Generates a key (or key pair) labelled `label`; refuses a label that is taken.
pub(crate) fn generate(
    t: &Token,
    type_name: &str,
    label: &str,
    extractable: bool,
    dates: bulwark_core::token::LifecycleDates,
) -> Result<()> {
    let spec = spec_for(type_name)?;
    if label.is_empty() || label.len() > bulwark_core::limits::MAX_LABEL {
        return Err(Error::ArgumentsBad("key label must be 1 to 256 bytes"));
    }
    let k = names::LabelledKey { spec, label, id: None, extractable, sensitive: true };
    names::generate_labelled_with(t, &k, dates, DAEMON_SESSION).map(|_| ())
}

fn object(t: &Token, o: &ObjectInfo) -> v1::KeyObject {
    let usage = names::usage_names(&o.attrs).into_iter().map(str::to_owned).collect();
    v1::KeyObject {
        handle: o.handle,
        class: o.attrs.class().map_or_else(|| "?".into(), |c| format!("{c:?}")),
        key_type: t.key_spec(o.handle).map_or_else(|_| "-".into(), |s| s.name()),
        usage,
        sensitive: o.attrs.bool_or(AttrType::Sensitive, false),
        extractable: o.attrs.bool_or(AttrType::Extractable, false),
        local: o.attrs.bool_or(AttrType::Local, false),
        state: t.key_lifecycle(o.handle).map_or_else(|_| String::new(), |(_, s)| s.name().into()),
        key_version: bulwark_core::token::version_of(&o.attrs),
    }
}

/// Every labelled key, grouped by label (a pair's halves share one entry).
pub(crate) fn list(t: &Token) -> Result<Vec<v1::KeyInfo>> {
    let mut out: Vec<v1::KeyInfo> = Vec::new();
    for o in t.list()? {
        let label = o.attrs.label();
        let obj = object(t, &o);
        match out.iter_mut().find(|k| k.label == label) {
            Some(k) => k.objects.push(obj),
            None => out.push(v1::KeyInfo { label, objects: vec![obj] }),
        }
    }
    Ok(out)
}

/// One key by label.
pub(crate) fn show(t: &Token, label: &str) -> Result<v1::KeyInfo> {
    let objs = all_labelled(t, label)?;
    Ok(v1::KeyInfo {
        label: label.to_owned(),
        objects: objs.iter().map(|o| object(t, o)).collect(),
    })
}

/// The key objects labelled `label`, secret or private keys first.
fn key_objects(t: &Token, label: &str) -> Result<Vec<ObjectInfo>> {
    let mut v: Vec<ObjectInfo> = by_label(t, label)?
        .into_iter()
        .filter(|o| {
            matches!(
                o.attrs.class(),
                Some(ObjectClass::SecretKey | ObjectClass::PrivateKey | ObjectClass::PublicKey)
            )
        })
        .collect();
    if v.is_empty() {
        return Err(Error::NotFound(label.to_owned()));
    }
    v.sort_by_key(|o| o.attrs.class() == Some(ObjectClass::PublicKey));
    Ok(v)
}

/// The state of key `h` when it is not active (a deactivated or compromised key processing old
/// data: the response says so); empty otherwise.
pub(crate) fn state_note(t: &Token, h: u64) -> String {
    match t.key_lifecycle(h) {
        Ok((_, s)) if s != bulwark_core::lifecycle::KeyState::Active => s.name().to_owned(),
        _ => String::new(),
    }
}

/// The lifecycle of every key object labelled `label` (docs/lifecycle.md).
pub(crate) fn key_state(t: &Token, label: &str) -> Result<v1::KeyStateResponse> {
    let mut objects = Vec::new();
    for o in key_objects(t, label)? {
        let (l, now) = t.key_lifecycle(o.handle)?;
        objects.push(v1::KeyLifecycle {
            handle: o.handle,
            class: o.attrs.class().map_or_else(String::new, |c| format!("{c:?}")),
            state: now.name().to_owned(),
            stored_state: l.state.map_or_else(String::new, |s| s.name().to_owned()),
            activation_date: l.activation.unwrap_or(0),
            protect_stop_date: l.protect_stop.unwrap_or(0),
            deactivation_date: l.deactivation.unwrap_or(0),
            compromise_date: l.compromise.unwrap_or(0),
            destroy_date: l.destroyed.unwrap_or(0),
        });
    }
    Ok(v1::KeyStateResponse { label: label.to_owned(), objects })
}

/// A lifecycle transition (or, with an empty `transition`, new dates) for every key object
/// labelled `label`, in one audited write of the token.
pub(crate) fn change_key_state(t: &Token, r: &v1::ChangeKeyStateRequest) -> Result<()> {
    let date = |v: u64| (v != 0).then_some(v);
    let dates = bulwark_core::token::LifecycleDates {
        activation: date(r.activation_date),
        protect_stop: date(r.protect_stop_date),
        deactivation: date(r.deactivation_date),
    };
    let handles: Vec<u64> = key_objects(t, &r.label)?.iter().map(|o| o.handle).collect();
    match (r.transition.as_str(), dates.is_empty()) {
        ("", true) => Err(Error::ArgumentsBad("give a transition or a date")),
        ("", false) => t.set_key_dates(&handles, dates),
        (name, true) => {
            let tr: bulwark_core::lifecycle::Transition = name.parse()?;
            if tr == bulwark_core::lifecycle::Transition::Destroy {
                // The lifecycle destroy crypto-shreds; scheduled destruction (issue 11) will
                // offer it with its waiting period. DestroyKey stays the way to delete.
                return Err(Error::ArgumentsBad("use DestroyKey to destroy a key"));
            }
            t.transition_keys(&handles, tr).map(|_| ())
        }
        (_, false) => Err(Error::ArgumentsBad("a transition and dates in one request")),
    }
}

/// The public key (SPKI PEM) of a key pair (version `version`, 0: the current one).
pub(crate) fn public_pem(t: &Token, label: &str, version: u64) -> Result<String> {
    let objs = by_version(t, label, (version != 0).then_some(version))?;
    let h = one_of(&objs, ObjectClass::PublicKey, label)
        .or_else(|_| one_of(&objs, ObjectClass::PrivateKey, label))?;
    Ok(t.public_key(h)?.to_pem())
}

/// A resolved signing/verifying key: handle, mechanism and how ECDSA signatures travel.
pub(crate) struct SignKey {
    h: u64,
    mech: Mechanism,
    curve: Option<Curve>,
    der: bool,
}

impl SignKey {
    pub(crate) fn new(
        h: u64,
        spec: KeySpec,
        mechanism: &str,
        format: v1::SignatureFormat,
    ) -> Result<Self> {
        let mech = if mechanism.is_empty() {
            default_mechanism(spec)?
        } else {
            named_mechanism(mechanism)?
        };
        let curve = match spec {
            KeySpec::Ec(c) if is_ecdsa(&mech) => Some(c),
            _ => None,
        };
        Ok(Self { h, mech, curve, der: format == v1::SignatureFormat::Der })
    }

    pub(crate) fn sign(&self, t: &Token, data: &[u8]) -> Result<Vec<u8>> {
        let sig = t.sign(self.h, &self.mech, data)?;
        match self.curve {
            Some(c) if self.der => crypto::ecdsa_raw_to_der(c, &sig),
            _ => Ok(sig),
        }
    }

    /// Signs every item with one policy check and one durable audit commit for all of them.
    pub(crate) fn sign_batch(&self, t: &Token, items: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        let sigs = t.sign_batch(self.h, &self.mech, items)?;
        match self.curve {
            Some(c) if self.der => sigs.iter().map(|s| crypto::ecdsa_raw_to_der(c, s)).collect(),
            _ => Ok(sigs),
        }
    }

    /// `Ok(false)` for a signature that does not verify (including a malformed DER one).
    pub(crate) fn verify(&self, t: &Token, data: &[u8], sig: &[u8]) -> Result<bool> {
        let raw;
        let sig = match self.curve {
            Some(c) if self.der => match crypto::ecdsa_der_to_raw(c, sig) {
                Ok(s) => {
                    raw = s;
                    &raw[..]
                }
                Err(_) => return Ok(false),
            },
            _ => sig,
        };
        match t.verify(self.h, &self.mech, data, sig) {
            Ok(()) => Ok(true),
            Err(Error::SignatureInvalid | Error::SignatureLenRange) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn mechanism_name(&self) -> String {
        format!("0x{:x}", self.mech.ck_type())
    }
}

/// Key `key` (a secret key or the private half of a pair) wrapped under `wrapping` (an AES
/// key, or the public half of an RSA pair) with the named mechanism (empty: the default for
/// the wrapping key: `aes-kwp`, `rsa-oaep-sha256`). Returns the blob and the mechanism name.
/// The core enforces CKA_EXTRACTABLE, CKA_WRAP, CKA_WRAP_WITH_TRUSTED and audits it.
pub(crate) fn export(
    t: &Token,
    key: &str,
    wrapping: &str,
    mechanism: &str,
) -> Result<(Vec<u8>, String)> {
    let target = key_handle(t, key, true)?;
    let objs = by_label(t, wrapping)?;
    let wh = one_of(&objs, ObjectClass::PublicKey, wrapping)
        .or_else(|_| one_of(&objs, ObjectClass::SecretKey, wrapping))?;
    let (m, name) = names::wrap_mechanism(mechanism, t.key_spec(wh)?).ok_or(
        Error::ArgumentsBad("wrap mechanism: aes-kwp, aes-kw or rsa-oaep-sha256 (AES or RSA key)"),
    )?;
    Ok((t.wrap_key(wh, &m, target)?, name.to_owned()))
}

/// The AES key labelled `label` (version `version`, `None`: the current one).
fn aes_key_uncached(t: &Token, label: &str, version: Option<u64>) -> Result<u64> {
    let objs = by_version(t, label, version)?;
    let h = one_of(&objs, ObjectClass::SecretKey, label)?;
    match t.key_spec(h)? {
        KeySpec::Aes { .. } => Ok(h),
        _ => Err(Error::KeyTypeInconsistent),
    }
}

/// The version of key `h` (1 for a key never rotated).
pub(crate) fn version_of(t: &Token, h: u64) -> Result<u64> {
    Ok(bulwark_core::token::version_of(&t.object_info(h)?.attrs))
}

/// AES-GCM encryption into the BWK2 envelope (naming the key version) with a fresh
/// HSM-chosen nonce.
pub(crate) fn encrypt(t: &Token, h: u64, pt: &[u8]) -> Result<Vec<u8>> {
    let version = version_of(t, h)?;
    let mut nonce = [0u8; NONCE_LEN];
    t.random(&mut nonce)?;
    let (mut out, mech) = envelope::seal_header(version, nonce)?;
    let ct = t.encrypt(h, &mech, pt)?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// [`encrypt`] for many plaintexts: fresh nonces, one policy check, one durable audit commit.
pub(crate) fn encrypt_batch(t: &Token, h: u64, pts: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let version = version_of(t, h)?;
    let mut nonces = vec![0u8; NONCE_LEN * pts.len()];
    t.random(&mut nonces)?;
    let mut heads = Vec::with_capacity(pts.len());
    let mut items: Vec<(Mechanism, Vec<u8>)> = Vec::with_capacity(pts.len());
    for (p, n) in pts.iter().zip(nonces.chunks_exact(NONCE_LEN)) {
        let nonce: [u8; NONCE_LEN] = n.try_into().map_err(|_| Error::Internal("nonce"))?;
        let (head, mech) = envelope::seal_header(version, nonce)?;
        heads.push(head);
        items.push((mech, p.clone()));
    }
    let cts = t.encrypt_batch(h, &items)?;
    Ok(cts
        .into_iter()
        .zip(heads)
        .map(|(ct, mut out)| {
            out.extend_from_slice(&ct);
            out
        })
        .collect())
}

/// The key version a ciphertext envelope names (a BWK1 envelope names none: `requested`, or
/// 1); `EncryptedDataInvalid` for anything that is not an envelope.
pub(crate) fn envelope_version(data: &[u8], requested: u64) -> Result<u64> {
    let e = envelope::parse(data).map_err(|_| Error::EncryptedDataInvalid)?;
    match requested {
        0 => Ok(e.key_version),
        v if e.legacy => Ok(v),
        v if v == e.key_version => Ok(v),
        _ => Err(Error::ArgumentsBad("the ciphertext names another key version")),
    }
}

/// Decrypts a BWK2 or BWK1 envelope.
pub(crate) fn decrypt(t: &Token, h: u64, data: &[u8]) -> Result<bulwark_core::secret::SecretBytes> {
    let e = envelope::parse(data).map_err(|_| Error::EncryptedDataInvalid)?;
    t.decrypt(h, &e.mechanism, e.body)
}
