//! Use counting: every use of a prepared key is counted at the cost of one relaxed atomic add,
//! and the counts are written to the log as aggregated `use-count` records (one per key,
//! principal, operation and mechanism per window) by the log's flusher.
//!
//! A [`UseCounter`] is registered once (when a key is prepared: `C_SignInit`) and held by the
//! prepared key; [`UseCounter::hit`] is the per-call path. The log keeps every registered slot
//! until it has drained it after its last holder dropped it, so no hit is ever lost.
//!
//! Nothing here sees data, keys or PINs: a slot names a key (its unique id and label), a
//! principal, an operation and a mechanism.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{now_ms, Actor, AuditRecord};

/// What one counter counts: uses of `object` by `actor` for `op` with `mechanism`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UseKey {
    /// The key's unique id (hex).
    pub object: String,
    /// The key's label.
    pub label: String,
    /// Who uses it: user name, role, client.
    pub actor: (String, String, String),
    /// PKCS#11 session (0 when none).
    pub session: u64,
    /// The operation (`sign`, `decrypt`, ...).
    pub op: &'static str,
    /// `CKM_*` of the mechanism, if any.
    pub mechanism: Option<u64>,
}

impl UseKey {
    /// The key of uses of `object` (`label`) by `actor` for `op` with `mechanism`.
    pub fn new(
        actor: &Actor,
        session: u64,
        op: &'static str,
        mechanism: Option<u64>,
        object: &str,
        label: &str,
    ) -> Self {
        Self {
            object: object.to_owned(),
            label: label.to_owned(),
            actor: (actor.name.clone(), actor.role.clone(), actor.client.clone()),
            session,
            op,
            mechanism,
        }
    }
}

struct Slot {
    key: UseKey,
    count: AtomicU64,
}

/// A pre-registered counter of uses; cheap to hit, cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct UseCounter(Arc<Slot>);

impl std::fmt::Debug for UseCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UseCounter")
            .field("op", &self.0.key.op)
            .field("object", &self.0.key.object)
            .finish_non_exhaustive()
    }
}

impl UseCounter {
    /// Counts one use: a single relaxed atomic add.
    #[inline]
    pub fn hit(&self) {
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` uses (a batch).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.count.fetch_add(n, Ordering::Relaxed);
    }
}

/// The counters registered with one log.
#[derive(Default)]
pub(super) struct Counters {
    slots: Mutex<Vec<Arc<Slot>>>,
    /// When the counts were last drained (the start of the interval the next records cover).
    since_ms: AtomicU64,
}

impl Counters {
    pub(super) fn register(&self, key: UseKey) -> UseCounter {
        let slot = Arc::new(Slot { key, count: AtomicU64::new(0) });
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slots.is_empty() {
            self.since_ms.store(now_ms(), Ordering::Relaxed);
        }
        slots.push(slot.clone());
        UseCounter(slot)
    }

    /// Whether any counter is registered (the flusher then wakes every window to drain).
    pub(super) fn any(&self) -> bool {
        !self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }

    /// Takes every non-zero count, aggregated per key, as `use-count` records (sequence
    /// numbers still to be assigned), and forgets slots nobody holds any more.
    pub(super) fn drain(&self) -> Vec<AuditRecord> {
        let mut agg: BTreeMap<UseKey, u64> = BTreeMap::new();
        {
            let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            slots.retain(|s| {
                // Checked before the swap: once only the registry holds the slot, no hit can
                // follow, so the swap below takes its last count.
                let orphan = Arc::strong_count(s) == 1;
                let n = s.count.swap(0, Ordering::Relaxed);
                if n > 0 {
                    *agg.entry(s.key.clone()).or_default() += n;
                }
                !orphan
            });
        }
        if agg.is_empty() {
            return Vec::new();
        }
        let now = now_ms();
        let first = self.since_ms.swap(now, Ordering::Relaxed).min(now);
        agg.into_iter()
            .map(|(k, n)| AuditRecord {
                seq: 0,
                time_ms: now,
                actor: k.actor.0,
                role: k.actor.1,
                client: k.actor.2,
                session: k.session,
                op: USE_COUNT_OP.to_owned(),
                mechanism: k.mechanism.map(|m| format!("0x{m:08x}")).unwrap_or_default(),
                object: k.object,
                label: k.label,
                result: "ok".to_owned(),
                detail: format!("op={} count={n} first_ms={first} last_ms={now}", k.op),
            })
            .collect()
    }
}

/// The `op` of an aggregated use-count record.
pub const USE_COUNT_OP: &str = "use-count";

/// What a `use-count` record says: `count` uses for `op` between `first_ms` and `last_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UseCount {
    /// The operation counted (`sign`, ...).
    pub op: String,
    /// Number of uses.
    pub count: u64,
    /// The uses happened at or after this time (ms since the epoch)...
    pub first_ms: u64,
    /// ...and at or before this one.
    pub last_ms: u64,
}

impl AuditRecord {
    /// The count this record stands for, when it is an aggregated `use-count` record.
    pub fn use_count(&self) -> Option<UseCount> {
        if self.op != USE_COUNT_OP {
            return None;
        }
        let mut it = self.detail.split(' ');
        let mut field = |name: &str| it.next()?.strip_prefix(name)?.strip_prefix('=');
        let op = field("op")?.to_owned();
        let count = field("count")?.parse().ok()?;
        let first_ms = field("first_ms")?.parse().ok()?;
        let last_ms = field("last_ms")?.parse().ok()?;
        Some(UseCount { op, count, first_ms, last_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_aggregated_per_key_and_orphans_drained_then_dropped() {
        let c = Counters::default();
        let a = Actor { name: "u".into(), role: "crypto-user".into(), client: "x".into() };
        let k = UseKey::new(&a, 0, "sign", Some(0x1041), "ab", "web");
        let c1 = c.register(k.clone());
        let c2 = c.register(k);
        let other = c.register(UseKey::new(&a, 0, "decrypt", None, "cd", ""));
        for _ in 0..5 {
            c1.hit();
        }
        c2.add(3);
        drop(c2); // its hits are still drained once
        let recs = c.drain();
        assert_eq!(recs.len(), 1);
        let u = recs[0].use_count().unwrap();
        assert_eq!((u.op.as_str(), u.count), ("sign", 8));
        assert!(u.first_ms <= u.last_ms);
        assert_eq!(recs[0].mechanism, "0x00001041");
        assert!(c.drain().is_empty());
        other.hit();
        drop((c1, other));
        assert_eq!(c.drain().len(), 1);
        assert!(!c.any(), "orphaned slots are forgotten after their last drain");
    }
}
