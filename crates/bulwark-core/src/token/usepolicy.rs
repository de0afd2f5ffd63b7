//! Per-key usage policy: who may use a key, how often in all, how fast, and whether each use
//! needs fresh quorum approvals. Checked by the gate ([`Token::key_for_at`] and every prepared
//! key's use), never by a front door.
//!
//! **Where it lives.** The policy is a set of vendor attributes of the key
//! (`CKA_BULWARK_USE_PRINCIPALS`, `CKA_BULWARK_MAX_USES`, `CKA_BULWARK_RATE_USES`,
//! `CKA_BULWARK_RATE_PERIOD`, `CKA_BULWARK_USE_QUORUM`), so it is inside the key's authenticated
//! record: editing it in the store is an integrity failure, and a backup carries it. The
//! counters (uses so far, the rate bucket) are one authenticated record per key:
//!
//! | kind | key | value |
//! |---|---|---|
//! | `use-count` | object uid | uses (u64) ‖ bucket level (u64) ‖ bucket time (u64 seconds), big endian |
//!
//! **Counting.** A *metered* key (a quota, a rate or a per-use quorum) is counted in the store's
//! own write transaction *before* the operation runs: the transaction reads the counter, refuses
//! when the quota or the bucket is spent, and writes the new count (and marks the approvals
//! used) atomically. SQLite serializes writers across threads and processes, so the quota is
//! exact under any concurrency, and a crash after the commit loses no use (a use that counted
//! and then failed stays counted: the quota is of attempts past the gate). A batch of n items
//! counts n. Keys with only an allowed-principals list are not metered and cost nothing extra.
//!
//! **Rate.** A token bucket of `uses` per `period` seconds (burst up to `uses`), kept in the same
//! record, so it holds for the whole store: on a cluster store every node shares it.
//!
//! **Per-use quorum.** Each use needs `M` valid signatures of distinct approvers of the store's
//! use-approver set (an authenticated setting the security officer keeps) over
//! [`use_approval_digest`] — the store, the key, the operation, a caller-chosen request id and an
//! expiry. The digest is recorded as used in the same transaction as the count, so an approval
//! never serves a second use. A front door hands the approvals in with [`with_use_approvals`].
//!
//! **Who changes it.** Whoever may manage the key (a crypto officer; see
//! [`Token::check_manage`]) sets any policy; a principal that may only use the key may only
//! tighten it ([`UsagePolicy::is_tightening_of`]).

use serde::{Deserialize, Serialize};

use super::guard::Call;
use super::objects::is_key;
use super::{Obj, Token, Usage};
use crate::attr::{AttrType, Attributes};
use crate::error::{Error, Result};
use crate::kernel::{Role, UserId, Who};
use crate::mechanism::Mechanism;
use crate::store::Store;

/// Record kinds of this module.
pub(super) mod kind {
    pub(in crate::token) const USE_COUNT: &str = "use-count";
}

/// The setting holding the store's use-approver set.
const APPROVERS_SETTING: &str = "use-approvers";

/// At most this many principals in one policy (a policy is part of the key record).
const MAX_PRINCIPALS: usize = 64;
/// At most this many approvals per use.
const MAX_QUORUM: u64 = 16;
/// The longest rate period: one year.
const MAX_RATE_PERIOD: u64 = 366 * 86_400;
/// Approvals may expire at most this far ahead (seconds).
const MAX_APPROVAL_LIFETIME: u64 = 86_400;

/// A rate limit: `uses` per `period` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Uses allowed per period (also the burst).
    pub uses: u64,
    /// The period, in seconds.
    pub period: u64,
}

impl Rate {
    /// Parses `N/PERIOD` with PERIOD `s`, `m`, `h`, `d`, or a number of seconds with a unit
    /// (`10/s`, `100/h`, `5/30s`).
    ///
    /// # Errors
    /// `ArgumentsBad` for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::ArgumentsBad("rate must be N/PERIOD (e.g. 10/s, 100/h, 5/30s, 1000/d)");
        let (n, p) = s.split_once('/').ok_or_else(bad)?;
        let uses: u64 = n.trim().parse().map_err(|_| bad())?;
        let p = p.trim();
        let (count, unit) = match p.find(|c: char| !c.is_ascii_digit()) {
            Some(0) => ("1", p),
            Some(i) => p.split_at(i),
            None => return Err(bad()),
        };
        let count: u64 = count.parse().map_err(|_| bad())?;
        let unit = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        let r = Self { uses, period: count.saturating_mul(unit) };
        r.check()?;
        Ok(r)
    }

    fn check(self) -> Result<()> {
        if self.uses == 0 || self.period == 0 || self.period > MAX_RATE_PERIOD {
            return Err(Error::ArgumentsBad("rate: at least 1 use per period of 1 s .. 366 days"));
        }
        Ok(())
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.period {
            1 => write!(f, "{}/s", self.uses),
            60 => write!(f, "{}/m", self.uses),
            3600 => write!(f, "{}/h", self.uses),
            86_400 => write!(f, "{}/d", self.uses),
            p => write!(f, "{}/{p}s", self.uses),
        }
    }
}

/// A key's usage policy. The empty policy (the default) restricts nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsagePolicy {
    /// The principals allowed to use the key (by id); empty: whoever the gate lets through.
    pub principals: Vec<UserId>,
    /// The maximum number of uses, counted for the key's whole life.
    pub max_uses: Option<u64>,
    /// The rate limit.
    pub rate: Option<Rate>,
    /// Fresh approvals each use needs (0: none).
    pub quorum: u64,
}

impl UsagePolicy {
    /// The policy stored in a key's attributes.
    ///
    /// # Errors
    /// `Integrity` when a stored value is malformed (the record authenticated, so this is a
    /// bug or a key from a broken writer).
    pub fn of(a: &Attributes) -> Result<Self> {
        let principals = match a.bytes(AttrType::BulwarkUsePrincipals) {
            None => Vec::new(),
            Some(b) if b.len() % 16 == 0 => b
                .chunks_exact(16)
                .map(|c| UserId(c.try_into().unwrap_or([0; 16])))
                .collect::<Vec<_>>(),
            Some(_) => return Err(Error::Integrity("usage policy principals malformed")),
        };
        let rate = match (a.ulong(AttrType::BulwarkRateUses), a.ulong(AttrType::BulwarkRatePeriod))
        {
            (Some(uses), Some(period)) => Some(Rate { uses, period }),
            (None, None) => None,
            _ => return Err(Error::Integrity("usage policy rate malformed")),
        };
        Ok(Self {
            principals,
            max_uses: a.ulong(AttrType::BulwarkMaxUses),
            rate,
            quorum: a.ulong(AttrType::BulwarkUseQuorum).unwrap_or(0),
        })
    }

    /// Writes the policy into a key's attributes (removing what it does not set).
    pub(crate) fn store_in(&self, a: &mut Attributes) {
        if self.principals.is_empty() {
            a.remove(AttrType::BulwarkUsePrincipals);
        } else {
            let b: Vec<u8> = self.principals.iter().flat_map(|p| p.0).collect();
            a.set_bytes(AttrType::BulwarkUsePrincipals, b);
        }
        match self.max_uses {
            Some(m) => a.set_ulong(AttrType::BulwarkMaxUses, m),
            None => {
                a.remove(AttrType::BulwarkMaxUses);
            }
        }
        if let Some(r) = self.rate {
            a.set_ulong(AttrType::BulwarkRateUses, r.uses);
            a.set_ulong(AttrType::BulwarkRatePeriod, r.period);
        } else {
            a.remove(AttrType::BulwarkRateUses);
            a.remove(AttrType::BulwarkRatePeriod);
        }
        if self.quorum == 0 {
            a.remove(AttrType::BulwarkUseQuorum);
        } else {
            a.set_ulong(AttrType::BulwarkUseQuorum, self.quorum);
        }
    }

    /// Whether the policy restricts nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether every use must be counted in the store (a quota, a rate or a per-use quorum).
    pub fn is_metered(&self) -> bool {
        self.max_uses.is_some() || self.rate.is_some() || self.quorum > 0
    }

    /// Checks the policy's values.
    ///
    /// # Errors
    /// `ArgumentsBad` naming the bad value.
    pub fn check(&self) -> Result<()> {
        if self.principals.len() > MAX_PRINCIPALS {
            return Err(Error::ArgumentsBad("usage policy: at most 64 principals"));
        }
        let mut p = self.principals.clone();
        p.sort();
        p.dedup();
        if p.len() != self.principals.len() {
            return Err(Error::ArgumentsBad("usage policy: a principal is named twice"));
        }
        if let Some(r) = self.rate {
            r.check()?;
        }
        if self.quorum > MAX_QUORUM {
            return Err(Error::ArgumentsBad("usage policy: a quorum of at most 16 approvals"));
        }
        Ok(())
    }

    /// Whether `self` allows nothing that `old` refused: a principal list within the old one
    /// (an empty old list allows any), a quota no larger, a rate no faster, a quorum no
    /// smaller.
    pub fn is_tightening_of(&self, old: &Self) -> bool {
        let principals = old.principals.is_empty()
            || (!self.principals.is_empty()
                && self.principals.iter().all(|p| old.principals.contains(p)));
        let quota = match (old.max_uses, self.max_uses) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(n)) => n <= o,
        };
        let rate = match (old.rate, self.rate) {
            (None, _) => true,
            (Some(_), None) => false,
            // n.uses / n.period <= o.uses / o.period, and no larger burst.
            (Some(o), Some(n)) => {
                u128::from(n.uses) * u128::from(o.period)
                    <= u128::from(o.uses) * u128::from(n.period)
                    && n.uses <= o.uses
            }
        };
        principals && quota && rate && self.quorum >= old.quorum
    }
}

/// A key's counters: uses so far and the rate bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UseCount {
    /// Uses counted so far.
    pub uses: u64,
    /// The bucket level, in 1/period units of a use (`uses × period` is a full bucket).
    level: u64,
    /// When the level was last computed (Unix seconds); 0: never (a full bucket).
    at: u64,
}

impl UseCount {
    /// Counters of `uses` uses and a full rate bucket (what a remote HSM reports).
    pub fn with_uses(uses: u64) -> Self {
        Self { uses, ..Self::default() }
    }

    fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != 24 {
            return Err(Error::Integrity("use count record malformed"));
        }
        let n = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        Ok(Self { uses: n(0), level: n(8), at: n(16) })
    }

    fn encode(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.uses.to_be_bytes());
        b[8..16].copy_from_slice(&self.level.to_be_bytes());
        b[16..].copy_from_slice(&self.at.to_be_bytes());
        b
    }

    /// The bucket level at `now` (refilled since `at`, capped at full).
    fn level_at(self, r: Rate, now: u64) -> u64 {
        let full = r.uses.saturating_mul(r.period);
        if self.at == 0 {
            return full;
        }
        let refill = now.saturating_sub(self.at).saturating_mul(r.uses);
        self.level.saturating_add(refill).min(full)
    }

    /// Whole uses the bucket allows at `now`.
    pub fn rate_available(self, r: Rate, now: u64) -> u64 {
        self.level_at(r, now) / r.period
    }

    /// Counts `n` uses at `now` under `p`, or says why not (nothing changes then).
    fn take(self, p: &UsagePolicy, n: u64, now: u64) -> Result<Self> {
        let uses = self.uses.checked_add(n).ok_or(Error::UsageLimit("use count overflow"))?;
        if let Some(max) = p.max_uses {
            if uses > max {
                return Err(Error::UsageLimit("the key's maximum number of uses is reached"));
            }
        }
        let (level, at) = match p.rate {
            Some(r) => {
                let have = self.level_at(r, now);
                let cost = n.saturating_mul(r.period);
                if have < cost {
                    return Err(Error::UsageLimit("the key's rate limit is reached; retry later"));
                }
                (have - cost, now.max(1))
            }
            None => (self.level, self.at),
        };
        Ok(Self { uses, level, at })
    }
}

/// One approver of the store's use-approver set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UseApprover {
    /// The approver's name (as approvals name it).
    pub name: String,
    /// Raw Ed25519 public key, hex.
    pub public_key: String,
}

/// One approver's signature over a use request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UseApproval {
    /// The approver's name.
    pub approver: String,
    /// Ed25519 signature over [`use_approval_digest`].
    pub signature: Vec<u8>,
}

/// The approvals a front door hands in for one request (see [`with_use_approvals`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UseApprovals {
    /// The caller's request id (approvers sign it; 8 to 64 characters of `[0-9A-Za-z-_]`).
    pub request_id: String,
    /// When the approvals expire (Unix seconds; at most a day ahead).
    pub not_after: u64,
    /// The signatures.
    pub approvals: Vec<UseApproval>,
}

thread_local! {
    static APPROVALS: std::cell::RefCell<Option<UseApprovals>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `a` as the use approvals of every key use it makes on this thread.
pub fn with_use_approvals<T>(a: UseApprovals, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<UseApprovals>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            let _ = APPROVALS.try_with(|c| *c.borrow_mut() = prev);
        }
    }
    let prev = APPROVALS.with(|c| c.borrow_mut().replace(a));
    let _restore = Restore(prev);
    f()
}

/// The use approvals [`with_use_approvals`] set on this thread (a remote client forwards them).
pub fn current_use_approvals() -> Option<UseApprovals> {
    current_approvals()
}

fn current_approvals() -> Option<UseApprovals> {
    APPROVALS.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// The operation name approvers see for a usage.
pub fn usage_name(u: Usage) -> &'static str {
    match u {
        Usage::Sign => "sign",
        Usage::Verify => "verify",
        Usage::Encrypt => "encrypt",
        Usage::Decrypt => "decrypt",
        Usage::Wrap => "wrap",
        Usage::Unwrap => "unwrap",
        Usage::Derive => "derive",
        Usage::Encapsulate => "encapsulate",
        Usage::Decapsulate => "decapsulate",
    }
}

/// The operation name of a per-use approval request.
pub const USE_APPROVAL_OP: &str = "key-use";

/// What the approvers of one key use sign: SHA-256 over the length-prefixed fields
/// `"bulwark approval v1"`, the store id (hex), `"key-use"`, the key's unique id (hex), the
/// operation ([`usage_name`]), the request id, and the expiry (u64, big endian) — the same
/// framing as every other quorum approval, so `bulwark approval sign` signs it.
///
/// # Errors
/// Only if the digest fails (the module's error state).
pub fn use_approval_digest(
    store_id: &str,
    key_uid: &str,
    usage: &str,
    request_id: &str,
    not_after: u64,
) -> Result<[u8; 32]> {
    let mut m = Vec::new();
    let mut put = |b: &[u8]| {
        m.extend_from_slice(&(b.len() as u64).to_be_bytes());
        m.extend_from_slice(b);
    };
    put(b"bulwark approval v1");
    put(store_id.as_bytes());
    put(USE_APPROVAL_OP.as_bytes());
    put(key_uid.as_bytes());
    put(usage.as_bytes());
    put(request_id.as_bytes());
    put(&not_after.to_be_bytes());
    let d = crate::crypto::Provider::get()?.digest(crate::mechanism::DigestAlg::Sha256, &m)?;
    d.try_into().map_err(|_| Error::Internal("digest length"))
}

fn check_request_id(id: &str) -> Result<()> {
    let ok = (8..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::ArgumentsBad("request id: 8 to 64 characters of [0-9A-Za-z-_]"))
    }
}

impl<S: Store> Token<S> {
    /// The gate's principal check: a key with an allowed-principals list serves only them.
    #[allow(clippy::unused_self)] // a method like the other checks of the gate
    pub(crate) fn check_principals(&self, w: &Who, o: &Obj) -> Result<()> {
        if !o.attrs.contains(AttrType::BulwarkUsePrincipals) {
            return Ok(());
        }
        let p = UsagePolicy::of(&o.attrs)?;
        if w.id.is_some_and(|id| p.principals.contains(&id)) {
            Ok(())
        } else {
            tracing::warn!("key use by a principal outside the key's usage policy");
            Err(Error::KeyFunctionNotPermitted("the key's usage policy does not list you"))
        }
    }

    /// Whether every use of key `o` is counted in the store.
    pub(crate) fn is_metered(o: &Obj) -> bool {
        o.attrs.contains(AttrType::BulwarkMaxUses)
            || o.attrs.contains(AttrType::BulwarkRateUses)
            || o.attrs.contains(AttrType::BulwarkUseQuorum)
    }

    /// Counts one use of the prepared key `h` (a metered key's `C_Sign` after `C_SignInit`...),
    /// recorded durably as the operation; a refusal is recorded too.
    pub(crate) fn meter_prepared(&self, h: u64, usage: Usage, mech: &Mechanism) -> Result<()> {
        let c = Call::new(usage_name(usage)).obj(h).mech(mech.ck_type());
        super::outbox::begin(c.op, 0);
        let r = self.obj(h).and_then(|o| self.meter(&o, usage, 1));
        self.finish(&c, r, "metered use".into())
    }

    /// Whether the key behind `h` is metered (a prepared key asks at each gate pass).
    pub(crate) fn handle_metered(&self, h: u64) -> bool {
        self.obj(h).map_or(true, |o| Self::is_metered(&o))
    }

    /// The gate's metering: counts `n` uses of key `o` for `usage` durably before the
    /// operation runs (`n = 0`: only checks that the quota is not spent, as `C_*Init` does).
    pub(crate) fn meter(&self, o: &Obj, usage: Usage, n: u64) -> Result<()> {
        if !Self::is_metered(o) {
            return Ok(());
        }
        if o.session.is_some() {
            // Policies are set on token objects only; a session object cannot carry one.
            return Err(Error::Integrity("usage policy on a session object"));
        }
        let p = UsagePolicy::of(&o.attrs)?;
        let (_, ik) = self.require_vault()?;
        if n == 0 {
            let c = match self.store.record(kind::USE_COUNT, &o.uid)? {
                Some(r) => {
                    ik.verify_row(&r)?;
                    UseCount::decode(&r.value)?
                }
                None => UseCount::default(),
            };
            if p.max_uses.is_some_and(|m| c.uses >= m) {
                return Err(Error::UsageLimit("the key's maximum number of uses is reached"));
            }
            return Ok(());
        }
        let now = self.now();
        let approval = if p.quorum > 0 {
            if n != 1 {
                return Err(Error::ArgumentsBad(
                    "a key with a per-use quorum takes one item per request",
                ));
            }
            Some(self.check_use_approvals(o, usage, &p, now)?)
        } else {
            None
        };
        self.write(&ik, |a| {
            let c = match a.record(kind::USE_COUNT, &o.uid)? {
                Some(r) => UseCount::decode(&r.value)?,
                None => UseCount::default(),
            };
            let next = c.take(&p, n, now)?;
            if let Some((digest, not_after)) = &approval {
                if a.record(super::users::kind::APPROVAL, digest)?.is_some() {
                    return Err(Error::UseApprovalRequired(
                        "these approvals were already used; a new request id is needed".into(),
                    ));
                }
                a.put_record(super::users::kind::APPROVAL, digest, &not_after.to_be_bytes())?;
            }
            a.put_record(kind::USE_COUNT, &o.uid, &next.encode())
        })
    }

    /// Checks the approvals handed in for this use; returns the digest to mark used.
    fn check_use_approvals(
        &self,
        o: &Obj,
        usage: Usage,
        p: &UsagePolicy,
        now: u64,
    ) -> Result<([u8; 32], u64)> {
        let store_id = hex::encode(self.store_uid);
        let uid = hex::encode(o.uid);
        let op = usage_name(usage);
        let need = |why: &str, got: &UseApprovals| {
            Error::UseApprovalRequired(format!(
                "{why}: {} approvals of store {store_id}'s use approvers must sign request \
                 op={USE_APPROVAL_OP} key={uid} usage={op} request={} not_after={}",
                p.quorum,
                if got.request_id.is_empty() { "<choose one>" } else { &got.request_id },
                got.not_after
            ))
        };
        let Some(a) = current_approvals() else {
            return Err(need("this key needs approvals for each use", &UseApprovals::default()));
        };
        check_request_id(&a.request_id)?;
        if a.not_after <= now || a.not_after > now + MAX_APPROVAL_LIFETIME {
            return Err(need("approvals must expire within the next 24 hours", &a));
        }
        let digest = use_approval_digest(&store_id, &uid, op, &a.request_id, a.not_after)?;
        let approvers = self.use_approvers()?;
        let mut ok: Vec<&str> = Vec::new();
        for ap in &a.approvals {
            let Some(known) = approvers.iter().find(|x| x.name == ap.approver) else { continue };
            let Ok(pk) = hex::decode(&known.public_key) else { continue };
            let key =
                aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, pk);
            if key.verify(&digest, &ap.signature).is_ok() && !ok.contains(&known.name.as_str()) {
                ok.push(known.name.as_str());
            }
        }
        if (ok.len() as u64) < p.quorum {
            return Err(need(&format!("{} valid approvals", ok.len()), &a));
        }
        Ok((digest, a.not_after))
    }

    /// The store's use-approver set (authenticated setting; empty if never set).
    ///
    /// # Errors
    /// `Integrity` when the setting does not authenticate or parse.
    pub fn use_approvers(&self) -> Result<Vec<UseApprover>> {
        let (_, ik) = self.require_vault()?;
        match self.verified_setting(&ik, APPROVERS_SETTING)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|_| Error::Integrity("use approver setting malformed")),
            None => Ok(Vec::new()),
        }
    }

    /// Replaces the store's use-approver set (security officer only), audited as
    /// `use-approvers`.
    ///
    /// # Errors
    /// `ActionProhibited` for any other role; `ArgumentsBad` for a malformed key or a
    /// duplicate name.
    pub fn set_use_approvers(&self, approvers: &[UseApprover]) -> Result<()> {
        let c = Call::new("use-approvers");
        let r = self.precheck(&c).and_then(|()| {
            if self.who().role != Some(Role::SecurityOfficer) {
                return Err(Error::ActionProhibited(
                    "only the security officer sets the use approvers",
                ));
            }
            let mut names = Vec::new();
            for a in approvers {
                crate::kernel::check_user_name(&a.name)?;
                let pk = hex::decode(&a.public_key)
                    .map_err(|_| Error::ArgumentsBad("approver key must be hex"))?;
                if pk.len() != 32 {
                    return Err(Error::ArgumentsBad("approver key must be a raw Ed25519 key"));
                }
                if names.contains(&a.name) {
                    return Err(Error::ArgumentsBad("approver named twice"));
                }
                names.push(a.name.clone());
            }
            let (_, ik) = self.require_vault()?;
            let v = serde_json::to_vec(approvers).map_err(|_| Error::Internal("json"))?;
            self.write(&ik, |a| {
                a.put_record(super::state::kind::SETTING, APPROVERS_SETTING.as_bytes(), &v)
            })
        });
        let names: Vec<&str> = approvers.iter().map(|a| a.name.as_str()).collect();
        self.finish(&c, r, names.join(","))
    }

    /// The id of the user named `name`, for naming a policy's principals (a caller that uses
    /// keys; the embedded logins are `user` and `so`).
    ///
    /// # Errors
    /// `ActionProhibited` for a role that uses no keys; `NotFound` for an unknown name.
    pub fn principal_id(&self, name: &str) -> Result<UserId> {
        if !self.who().role.is_some_and(Role::uses_keys) {
            return Err(Error::ActionProhibited("this role names no principals"));
        }
        match name {
            "user" if self.logged_in().is_some() => return Ok(crate::kernel::EMBEDDED_USER),
            "so" if self.logged_in().is_some() => return Ok(crate::kernel::EMBEDDED_SO),
            _ => {}
        }
        if let Some(id) = UserId::from_hex(name) {
            return Ok(id);
        }
        self.user_id_by_name(name)?.ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// The name of principal `id` (its hex id when it names no user of this store).
    pub fn principal_name(&self, id: UserId) -> String {
        if id == crate::kernel::EMBEDDED_USER {
            return "user".into();
        }
        if id == crate::kernel::EMBEDDED_SO {
            return "so".into();
        }
        self.user_by_id(id).ok().flatten().map_or_else(|| id.to_hex(), |u| u.name)
    }

    /// The usage policy of key `h` and its counters (not audited, like an attribute read).
    ///
    /// # Errors
    /// `ObjectHandleInvalid` when the caller may not see it; `KeyTypeInconsistent` for an
    /// object that is not a key.
    pub fn usage_policy(&self, h: u64) -> Result<(UsagePolicy, UseCount)> {
        let o = self.obj(h)?;
        if !is_key(&o.attrs) {
            return Err(Error::KeyTypeInconsistent);
        }
        Ok((UsagePolicy::of(&o.attrs)?, self.use_count(&o)?))
    }

    /// The counters of key `o` (zero when it was never counted).
    pub(crate) fn use_count(&self, o: &Obj) -> Result<UseCount> {
        if o.session.is_some() {
            return Ok(UseCount::default());
        }
        match self.store.record(kind::USE_COUNT, &o.uid)? {
            Some(r) => {
                if let Some(ik) = self.integrity() {
                    ik.verify_row(&r)?;
                }
                UseCount::decode(&r.value)
            }
            None => Ok(UseCount::default()),
        }
    }

    /// Sets the usage policy of the keys behind `handles` (one key, or both halves of a pair)
    /// in one authenticated write, audited as `key-policy`. A caller who may manage the key
    /// sets any policy; a caller who may only use it may only tighten it. The counters stay.
    ///
    /// # Errors
    /// `ArgumentsBad` for a bad policy; `ActionProhibited` for a loosening by a key user or a
    /// session object; `ObjectHandleInvalid` for a key the caller cannot see.
    pub fn set_usage_policy(&self, handles: &[u64], p: &UsagePolicy) -> Result<()> {
        let mut c = Call::new("key-policy");
        c.handle = handles.first().copied();
        for h in handles {
            let _ = self.obj(*h);
        }
        let r = self.precheck(&c).and_then(|()| self.set_policy_unaudited(handles, p));
        let detail = describe_policy(p);
        self.finish(&c, r, detail)
    }

    fn set_policy_unaudited(&self, handles: &[u64], p: &UsagePolicy) -> Result<()> {
        if handles.is_empty() {
            return Err(Error::ArgumentsBad("no key given"));
        }
        p.check()?;
        let w = self.who();
        let mut objs = Vec::new();
        for h in handles {
            let o = self.obj(*h)?;
            if !is_key(&o.attrs) {
                return Err(Error::ActionProhibited("only keys have a usage policy"));
            }
            if o.session.is_some() {
                return Err(Error::ActionProhibited("usage policies are for token keys"));
            }
            if self.check_manage(&w, &o).is_err() {
                // A key user may tighten the policy of a key it may use.
                let may_use = [Usage::Sign, Usage::Decrypt, Usage::Encrypt, Usage::Verify]
                    .into_iter()
                    .chain([Usage::Unwrap, Usage::Wrap, Usage::Derive])
                    .any(|u| self.check_use(&w, &o, u).is_ok());
                if !may_use {
                    return Err(Error::ActionProhibited("you may not change this key's policy"));
                }
                if !p.is_tightening_of(&UsagePolicy::of(&o.attrs)?) {
                    return Err(Error::ActionProhibited(
                        "a key user may only tighten its usage policy (a crypto officer changes it)",
                    ));
                }
            }
            objs.push(o);
        }
        let (_, ik) = self.require_vault()?;
        self.write(&ik, |a| {
            for o in &objs {
                let row = a.object(o.handle)?.ok_or(Error::ObjectHandleInvalid)?;
                if row.uid != o.uid {
                    return Err(Error::ObjectHandleInvalid);
                }
                let mut attrs = Attributes::decode(&row.attrs)?;
                p.store_in(&mut attrs);
                let mut new_row = row.clone();
                new_row.attrs = attrs.encode();
                a.update_object(&new_row)?;
            }
            Ok(())
        })?;
        {
            let mut c = super::write(&self.cache);
            for o in &objs {
                c.objects.remove(&o.handle);
                c.keys.remove(&o.handle);
            }
        }
        self.bump_epoch();
        Ok(())
    }

    /// Refuses to let a metered key leave the HSM (wrapped or in plaintext): imported again it
    /// would come back with a fresh count.
    pub(crate) fn check_export_metered(o: &Obj) -> Result<()> {
        if Self::is_metered(o) {
            return Err(Error::KeyUnextractable(
                "a key under a usage limit may not leave the HSM (it would return uncounted)",
            ));
        }
        Ok(())
    }

    /// Drops the counters of a destroyed object inside its write.
    pub(crate) fn drop_use_count(a: &mut super::state::AuthTx<'_>, uid: &[u8; 16]) -> Result<()> {
        a.delete_record(kind::USE_COUNT, uid).map(|_| ())
    }
}

/// The audit detail of a policy change (ids, numbers; nothing secret).
fn describe_policy(p: &UsagePolicy) -> String {
    let mut parts = Vec::new();
    if !p.principals.is_empty() {
        let ids: Vec<String> = p.principals.iter().map(|u| u.to_hex()).collect();
        parts.push(format!("principals={}", ids.join(",")));
    }
    if let Some(m) = p.max_uses {
        parts.push(format!("max-uses={m}"));
    }
    if let Some(r) = p.rate {
        parts.push(format!("rate={r}"));
    }
    if p.quorum > 0 {
        parts.push(format!("quorum={}", p.quorum));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(Rate::parse("10/s").unwrap(), Rate { uses: 10, period: 1 });
        assert_eq!(Rate::parse("100/h").unwrap(), Rate { uses: 100, period: 3600 });
        assert_eq!(Rate::parse("5/30s").unwrap(), Rate { uses: 5, period: 30 });
        assert_eq!(Rate::parse("7/2d").unwrap().to_string(), "7/172800s");
        assert_eq!(Rate::parse("1000/d").unwrap().to_string(), "1000/d");
        for bad in ["", "10", "0/s", "x/s", "10/", "10/5", "10/w", "1/400d"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_bucket_counts_exactly() {
        let p = UsagePolicy { rate: Some(Rate { uses: 3, period: 10 }), ..Default::default() };
        let mut c = UseCount::default();
        for _ in 0..3 {
            c = c.take(&p, 1, 100).unwrap();
        }
        assert!(matches!(c.take(&p, 1, 100), Err(Error::UsageLimit(_))));
        // 10 s / 3 uses: one use back after 4 s (3.33 s), not after 3 s.
        assert!(c.take(&p, 1, 103).is_err());
        let c = c.take(&p, 1, 104).unwrap();
        assert!(c.take(&p, 1, 104).is_err());
        assert_eq!(c.uses, 4);
        // A long pause refills to the burst, no more.
        assert_eq!(c.rate_available(Rate { uses: 3, period: 10 }, 10_000), 3);
        assert!(c.take(&p, 4, 10_000).is_err());
    }

    #[test]
    fn the_quota_is_exact() {
        let p = UsagePolicy { max_uses: Some(2), ..Default::default() };
        let c = UseCount::default().take(&p, 2, 1).unwrap();
        assert!(matches!(c.take(&p, 1, 1), Err(Error::UsageLimit(_))));
        assert!(UseCount::default().take(&p, 3, 1).is_err());
        assert_eq!(UseCount::decode(&c.encode()).unwrap(), c);
        assert!(UseCount::decode(&[0; 23]).is_err());
    }

    #[test]
    fn policies_round_trip_through_attributes_and_tighten() {
        let p = UsagePolicy {
            principals: vec![UserId([1; 16]), UserId([2; 16])],
            max_uses: Some(10),
            rate: Some(Rate { uses: 5, period: 60 }),
            quorum: 2,
        };
        let mut a = Attributes::new();
        p.store_in(&mut a);
        assert_eq!(UsagePolicy::of(&a).unwrap(), p);
        UsagePolicy::default().store_in(&mut a);
        assert!(UsagePolicy::of(&a).unwrap().is_empty());
        assert!(a.is_empty());

        let tighter = UsagePolicy {
            principals: vec![UserId([1; 16])],
            max_uses: Some(5),
            rate: Some(Rate { uses: 1, period: 60 }),
            quorum: 3,
        };
        assert!(tighter.is_tightening_of(&p));
        assert!(!p.is_tightening_of(&tighter));
        assert!(p.is_tightening_of(&UsagePolicy::default()));
        assert!(!UsagePolicy::default().is_tightening_of(&p));
        let faster = UsagePolicy { rate: Some(Rate { uses: 5, period: 30 }), ..p.clone() };
        assert!(!faster.is_tightening_of(&p));
        let other = UsagePolicy { principals: vec![UserId([3; 16])], ..p.clone() };
        assert!(!other.is_tightening_of(&p));
    }

    #[test]
    fn bad_policies_are_refused() {
        let twice = UsagePolicy {
            principals: vec![UserId([1; 16]), UserId([1; 16])],
            ..Default::default()
        };
        assert!(twice.check().is_err());
        assert!(UsagePolicy { quorum: 17, ..Default::default() }.check().is_err());
        assert!(check_request_id("short").is_err());
        assert!(check_request_id("a-request_id-0001").is_ok());
        assert!(check_request_id("bad request id").is_err());
    }
}
