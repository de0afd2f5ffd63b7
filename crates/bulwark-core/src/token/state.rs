//! The authenticated store state: every authenticated write goes through [`Token::write`], and
//! the whole set of rows is checked by [`Token::verify_set`].
//!
//! A write opens the sealed state (generation, set commitment, object count), checks it against
//! the anti-rollback mark, lets the caller change rows through [`AuthTx`] (which MACs every new
//! row and folds the old and new rows' set members into the commitment), then seals the next
//! state, all in one store transaction. A full verification reads every row from one snapshot,
//! checks each row's MAC and recomputes the commitment: a row that was deleted, inserted or
//! replayed since the last authenticated write makes it differ. It runs when this process first
//! unlocks the store and whenever another connection committed since the last verification
//! (see `Token::watch_foreign_changes`).
//!
//! Nothing here decides who may write what; callers check that first.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::{lock, Token};
use crate::error::{Error, Result};
use crate::hierarchy::{IntegrityKeys, StoreState};
use crate::store::{KeyslotRow, ObjectRow, RecordRow, ScanRow, Store, StoreTx};

/// Record kinds (the `kind` column of authenticated records).
pub(crate) mod kind {
    /// Store settings: `label`, `policy`, `audit_key`, `audit_pub`, `tamper_alarm`.
    pub(crate) const SETTING: &str = "setting";
    /// Audit outbox rows (outbox.rs), keyed by a random 16-byte id.
    pub(crate) const OUTBOX: &str = "outbox";
}

fn xor_into(acc: &mut [u8; 32], v: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a ^= b;
    }
}

fn object_address(handle: u64, uid: &[u8; 16]) -> [u8; 24] {
    let mut a = [0u8; 24];
    a[..8].copy_from_slice(&handle.to_be_bytes());
    a[8..].copy_from_slice(uid);
    a
}

fn record_address(kind: &str, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(9 + kind.len() + key.len());
    a.push(u8::try_from(kind.len()).unwrap_or(u8::MAX));
    a.extend_from_slice(kind.as_bytes());
    a.extend_from_slice(key);
    a
}

/// A row's share of the commitment.
pub(crate) fn member_of(ik: &IntegrityKeys, row: &ScanRow<'_>) -> [u8; 32] {
    match row {
        ScanRow::Keyslot(k) => ik.set_member(b'k', &[k.user_type], &k.mac),
        ScanRow::Object(o) => ik.set_member(b'o', &object_address(o.handle, &o.uid), &o.mac),
        ScanRow::Record(r) => ik.set_member(b'r', &record_address(&r.kind, &r.key), &r.mac),
    }
}

/// The authenticated view of one write transaction: every row written gets its MAC, and the
/// set commitment follows every change.
pub(crate) struct AuthTx<'a> {
    tx: &'a mut dyn StoreTx,
    ik: &'a IntegrityKeys,
    delta: [u8; 32],
    objects: i64,
    /// Unique ids of the objects inserted, changed or deleted (for the audit outbox).
    touched: Vec<[u8; 16]>,
    /// The same ids as a set: a restore touches 100 000 objects in one write, and a linear
    /// search per object made that quadratic.
    touched_set: std::collections::HashSet<[u8; 16]>,
}

impl AuthTx<'_> {
    /// The unique ids of the objects this write inserted, changed or deleted so far.
    pub(crate) fn touched(&self) -> &[[u8; 16]] {
        &self.touched
    }

    /// Starts a new list of touched objects (the next write of a group).
    fn reset_touched(&mut self) {
        self.touched.clear();
        self.touched_set.clear();
    }

    fn touch(&mut self, uid: [u8; 16]) {
        if self.touched_set.insert(uid) {
            self.touched.push(uid);
        }
    }

    fn fold(&mut self, row: &ScanRow<'_>) {
        let m = member_of(self.ik, row);
        xor_into(&mut self.delta, &m);
    }

    /// A record, checked against its MAC.
    pub(crate) fn record(&mut self, kind: &str, key: &[u8]) -> Result<Option<RecordRow>> {
        let r = self.tx.record(kind, key)?;
        if let Some(r) = &r {
            self.ik.verify_row(r)?;
        }
        Ok(r)
    }

    /// Every record of a kind with a key prefix, each checked against its MAC.
    pub(crate) fn records(&mut self, kind: &str, prefix: &[u8]) -> Result<Vec<RecordRow>> {
        let v = self.tx.records(kind, prefix)?;
        for r in &v {
            self.ik.verify_row(r)?;
        }
        Ok(v)
    }

    /// Inserts or replaces a record.
    pub(crate) fn put_record(&mut self, kind: &str, key: &[u8], value: &[u8]) -> Result<()> {
        if let Some(old) = self.tx.record(kind, key)? {
            self.fold(&ScanRow::Record(&old));
        }
        let row = RecordRow {
            kind: kind.to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
            mac: self.ik.row_mac(kind, key, value),
        };
        self.fold(&ScanRow::Record(&row));
        self.tx.put_record(&row)
    }

    /// Deletes a record; `true` if there was one.
    pub(crate) fn delete_record(&mut self, kind: &str, key: &[u8]) -> Result<bool> {
        match self.tx.delete_record(kind, key)? {
            Some(old) => {
                self.fold(&ScanRow::Record(&old));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Inserts or replaces a keyslot (its MAC is computed here).
    pub(crate) fn put_keyslot(&mut self, row: &KeyslotRow) -> Result<()> {
        if let Some(old) = self.tx.keyslot(row.user_type)? {
            self.fold(&ScanRow::Keyslot(&old));
        }
        let mut row = row.clone();
        row.mac = self.ik.keyslot_mac(&row);
        self.fold(&ScanRow::Keyslot(&row));
        self.tx.put_keyslot(&row)
    }

    /// An object row as this transaction sees it, checked against its MAC (a change decided on
    /// the row read here cannot lose a concurrent writer's change).
    pub(crate) fn object(&mut self, handle: u64) -> Result<Option<ObjectRow>> {
        let r = self.tx.object(handle)?;
        if let Some(r) = &r {
            self.ik.verify_record(r)?;
        }
        Ok(r)
    }

    /// Inserts an object (its handle and MAC are assigned here) and returns the handle.
    pub(crate) fn insert_object(&mut self, row: &ObjectRow) -> Result<u64> {
        let handle = self.tx.insert_object(row)?;
        let mut full = row.clone();
        full.handle = handle;
        full.mac = self.ik.record_mac(&full);
        self.tx.set_object_mac(handle, &full.mac)?;
        self.fold(&ScanRow::Object(&full));
        self.objects += 1;
        self.touch(full.uid);
        Ok(handle)
    }

    /// Replaces an object (same handle and uid; the MAC is computed here) and returns the new
    /// MAC. `ObjectHandleInvalid` if it is gone.
    pub(crate) fn update_object(&mut self, row: &ObjectRow) -> Result<Vec<u8>> {
        let old = self.tx.object(row.handle)?.ok_or(Error::ObjectHandleInvalid)?;
        if old.uid != row.uid {
            return Err(Error::ObjectHandleInvalid);
        }
        let mut row = row.clone();
        row.mac = self.ik.record_mac(&row);
        if !self.tx.update_object(&row)? {
            return Err(Error::ObjectHandleInvalid);
        }
        self.fold(&ScanRow::Object(&old));
        self.fold(&ScanRow::Object(&row));
        self.touch(row.uid);
        Ok(row.mac)
    }

    /// Deletes an object; the deleted row, if there was one.
    pub(crate) fn delete_object(&mut self, handle: u64) -> Result<Option<ObjectRow>> {
        let old = self.tx.delete_object(handle)?;
        if let Some(o) = &old {
            self.fold(&ScanRow::Object(o));
            self.objects -= 1;
            self.touch(o.uid);
        }
        Ok(old)
    }
}

/// Where a grouped write's result lands: the result and the caller's outbox plan back.
type Slot = Arc<Mutex<Option<(Result<u64>, Option<super::outbox::Plan>)>>>;

/// The body of a grouped write.
type GroupedWrite = Box<dyn FnMut(&mut AuthTx<'_>) -> Result<u64> + Send>;

/// A queued write of a group (see [`Token::write_grouped`]).
struct Pending {
    f: GroupedWrite,
    plan: super::outbox::Plan,
    slot: Slot,
}

/// Group commit of concurrent writes: the queue and the combiner that runs it.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Vec<Pending>>,
    combiner: Mutex<()>,
}

/// How a write treats a store without a sealed state.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fresh {
    /// Only `init` writes the first state, with the store's tamper response (true: zeroize).
    Init { tamper_zeroize: bool },
    /// Every other write needs an existing, authentic state.
    No,
}

impl<S: Store> Token<S> {
    /// Runs `f` as one authenticated write: opens and checks the sealed state, lets `f` change
    /// rows through [`AuthTx`], and seals the next state, all in one store transaction.
    pub(crate) fn write<T>(
        &self,
        ik: &IntegrityKeys,
        f: impl FnMut(&mut AuthTx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.write_with(ik, Fresh::No, f)
    }

    pub(crate) fn write_with<T>(
        &self,
        ik: &IntegrityKeys,
        fresh: Fresh,
        mut f: impl FnMut(&mut AuthTx<'_>) -> Result<T>,
    ) -> Result<T> {
        let plan = self.outbox_plan()?;
        let mut out = None;
        let r = self.commit_tx(ik, fresh, &mut |a| {
            let v = f(a)?;
            Self::outbox_apply(&plan, a)?;
            out = Some(v);
            Ok(())
        });
        self.outbox_after(plan, r.is_ok());
        r?;
        out.ok_or(Error::Internal("write produced no value"))
    }

    /// [`Token::write`] with group commit, for writes that callers on several threads make at
    /// once (object creation): the write is queued, and whichever caller holds the combiner
    /// runs every queued write in one store transaction (one sealed state, one commit, one
    /// sync). If that transaction fails, each write of the group is run again on its own, so
    /// one bad write never fails another, and every caller gets its own result and error.
    pub(crate) fn write_grouped(
        &self,
        ik: &IntegrityKeys,
        f: impl FnMut(&mut AuthTx<'_>) -> Result<u64> + Send + 'static,
    ) -> Result<u64> {
        let plan = self.outbox_plan()?;
        let slot: Slot = Arc::default();
        lock(&self.group.queue).push(Pending { f: Box::new(f), plan, slot: slot.clone() });
        let r = {
            let _combiner = lock(&self.group.combiner);
            if lock(&slot).is_none() {
                let mut batch = std::mem::take(&mut *lock(&self.group.queue));
                self.run_group(ik, &mut batch);
            }
            lock(&slot).take()
        };
        let (r, plan) = r.unwrap_or((Err(Error::Internal("group write lost")), None));
        if let Some(plan) = plan {
            self.outbox_after(plan, r.is_ok());
        }
        r
    }

    /// Runs a group of queued writes (the caller holds the combiner) and fills their slots.
    fn run_group(&self, ik: &IntegrityKeys, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        if batch.len() > 1 {
            let mut outs = Vec::with_capacity(batch.len());
            let r = self.commit_tx(ik, Fresh::No, &mut |a| {
                outs.clear();
                for p in batch.iter_mut() {
                    a.reset_touched(); // each call's outbox row names its own objects
                    outs.push((p.f)(a)?);
                    Self::outbox_apply(&p.plan, a)?;
                }
                Ok(())
            });
            if r.is_ok() {
                for (p, h) in batch.drain(..).zip(outs) {
                    *lock(&p.slot) = Some((Ok(h), Some(p.plan)));
                }
                return;
            }
        }
        for mut p in batch.drain(..) {
            let mut out = None;
            let r = self.commit_tx(ik, Fresh::No, &mut |a| {
                let h = (p.f)(a)?;
                Self::outbox_apply(&p.plan, a)?;
                out = Some(h);
                Ok(())
            });
            let r = r.and_then(|()| out.ok_or(Error::Internal("write produced no value")));
            *lock(&p.slot) = Some((r, Some(p.plan)));
        }
    }

    /// One authenticated store transaction around `body`: opens and checks the sealed state,
    /// runs `body`, seals the next state, commits; then notes the generation and moves the
    /// prepared-key epoch.
    fn commit_tx(
        &self,
        ik: &IntegrityKeys,
        fresh: Fresh,
        body: &mut dyn FnMut(&mut AuthTx<'_>) -> Result<()>,
    ) -> Result<()> {
        self.provider.check()?;
        if fresh == Fresh::No {
            // Another connection's commit is verified before anything is decided on the rows
            // it may have changed (a replayed login state or a deleted used approval).
            self.watch_foreign_changes(ik, self.store.change_counter()?)?;
        }
        let mut nonce = [0u8; 12];
        self.provider.random(&mut nonce)?;
        let mut next_gen = 0;
        self.store.write(&mut |tx| {
            let h = tx.header()?;
            if h.zeroized {
                return Err(Error::Zeroized);
            }
            let st = if let (Fresh::Init { tamper_zeroize }, 0, true) =
                (fresh, h.generation, h.state.is_empty())
            {
                StoreState { tamper_zeroize, ..StoreState::default() }
            } else {
                let st = ik.open_state(&h.state)?;
                self.note_sealed_response(st.tamper_zeroize);
                if st.generation != h.generation {
                    return Err(Error::Integrity("store generation disagrees with its state"));
                }
                self.check_not_rolled_back(st.generation)?;
                st
            };
            let mut a = AuthTx {
                tx,
                ik,
                delta: [0; 32],
                objects: 0,
                touched: Vec::new(),
                touched_set: std::collections::HashSet::new(),
            };
            body(&mut a)?;
            let mut commitment = st.commitment;
            xor_into(&mut commitment, &a.delta);
            let objects = st
                .objects
                .checked_add_signed(a.objects)
                .ok_or(Error::Integrity("object count out of range"))?;
            let next = StoreState {
                generation: st.generation + 1,
                commitment,
                objects,
                tamper_zeroize: st.tamper_zeroize,
            };
            let sealed = ik.seal_state(&next, nonce)?;
            a.tx.set_state(next.generation, &sealed)?;
            next_gen = next.generation;
            Ok(())
        })?;
        self.note_generation(ik, next_gen);
        // Access may have changed: prepared keys pass the full gate again before their next use.
        self.bump_epoch();
        Ok(())
    }

    /// Refuses a generation older than this host has seen.
    pub(crate) fn check_not_rolled_back(&self, generation: u64) -> Result<()> {
        let seen = self.generation_seen.load(Ordering::Acquire);
        if generation < seen {
            return Err(Error::Rollback { found: generation, seen });
        }
        Ok(())
    }

    /// Verifies the whole store: every row's MAC, the set commitment, the object count, the
    /// generation and the anti-rollback mark, from one snapshot. Remembers the change counter
    /// it verified at (see [`Token::verified_now`]).
    pub(crate) fn verify_set(&self, ik: &IntegrityKeys) -> Result<StoreState> {
        let start = Instant::now();
        // Read before the snapshot: a commit in between only makes the next check run again.
        let change = self.store.change_counter()?;
        // The watermark as the snapshot begins: every generation noted so far was committed
        // before it was noted, so the snapshot must show at least this one. (One noted while
        // the scan runs — a concurrent write, another node's commit seen by another thread —
        // may be newer than the snapshot without any rollback.)
        let seen_before = self.generation_seen.load(Ordering::Acquire);
        // The mark on disk as the snapshot begins (other processes raise it too); its tag is
        // checked once the store's own state authenticated.
        let mark = crate::rollback::sealed(&self.store_uid);
        // The sealed tamper response first: whatever the scan below finds wrong is answered
        // with it, not with the (unauthenticated) policy record read at open.
        if let Ok(st) = self.store.header().and_then(|h| ik.open_state(&h.state)) {
            self.note_sealed_response(st.tamper_zeroize);
        }
        let mut acc = [0u8; 32];
        let mut objects = 0u64;
        let h = self.store.scan(&mut |row| {
            match &row {
                ScanRow::Keyslot(k) => ik.verify_keyslot(k)?,
                ScanRow::Object(o) => {
                    ik.verify_record(o)?;
                    objects += 1;
                }
                ScanRow::Record(r) => ik.verify_row(r)?,
            }
            xor_into(&mut acc, &member_of(ik, &row));
            Ok(())
        })?;
        if h.zeroized {
            return Err(Error::Zeroized);
        }
        let st = ik.open_state(&h.state)?;
        // From here on the sealed tamper response decides what any failure below triggers.
        self.note_sealed_response(st.tamper_zeroize);
        if st.generation != h.generation {
            return Err(Error::Integrity("store generation disagrees with its state"));
        }
        if !bool::from(acc.ct_eq(&st.commitment)) {
            return Err(Error::Integrity(
                "store rows do not match the set commitment (a row was deleted, inserted or replayed)",
            ));
        }
        if objects != st.objects {
            return Err(Error::Integrity("object count does not match the store state"));
        }
        let mut seen = seen_before;
        if let Some(m) = mark.filter(|m| m.value > 0) {
            // A mark without a tag, or with one this store did not make, was written by hand.
            let tag = m.tag.ok_or(Error::Integrity("the anti-rollback mark is not sealed"))?;
            ik.verify_mark(m.value, &tag)?;
            seen = seen.max(m.value);
        }
        if st.generation < seen {
            return Err(Error::Rollback { found: st.generation, seen });
        }
        self.note_generation(ik, st.generation);
        let mut v = lock(&self.verified);
        v.change = Some(change);
        v.last_took = start.elapsed();
        v.last_at = Some(Instant::now());
        Ok(st)
    }

    /// Verifies the whole store now (every row's MAC, the set commitment, the object count, the
    /// generation and the anti-rollback mark); needs the store unlocked in this process.
    /// Returns the number of token objects. An integrity failure triggers the tamper response.
    pub fn verify_store(&self) -> Result<u64> {
        let ik = self.integrity().ok_or(Error::UserNotLoggedIn)?;
        let c = super::guard::Call::new("verify-store");
        let r = self.verify_set(&ik).map(|st| st.objects);
        self.finish(&c, r, String::new())
    }

    /// Whether the store is known consistent now: no other connection committed since the last
    /// full verification (this process's own writes keep it consistent).
    pub(crate) fn verified_now(&self, change: u64) -> bool {
        lock(&self.verified).change == Some(change)
    }

    /// Called with the change counter a call's pre-check read: when another connection has
    /// committed since the last full verification, verifies the whole store again — at once
    /// when `eager` (the daemon: it is the store's only writer, so any other commit is
    /// suspect), otherwise at most once per ten times the last verification's duration (several
    /// embedded processes sharing a large store do not spend their time re-verifying each
    /// other's writes).
    pub(crate) fn watch_foreign_changes(&self, ik: &IntegrityKeys, change: u64) -> Result<()> {
        if self.verified_now(change) {
            return Ok(());
        }
        if !self.eager_verify.load(Ordering::Relaxed) {
            let v = lock(&self.verified);
            let wait = v.last_took.saturating_mul(10).min(Duration::from_secs(10));
            if v.last_at.is_some_and(|t| t.elapsed() < wait) {
                return Ok(());
            }
        }
        self.verify_set(ik).map(|_| ())
    }

    /// A setting, checked against its MAC when the store is unlocked in this process (before
    /// that, as stored: callers re-read settings after unlocking).
    pub(crate) fn setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(r) = self.store.record(kind::SETTING, name.as_bytes())? else { return Ok(None) };
        if let Some(ik) = self.integrity() {
            ik.verify_row(&r)?;
        }
        Ok(Some(r.value))
    }

    /// A setting that must authenticate (the store is unlocked).
    pub(crate) fn verified_setting(
        &self,
        ik: &IntegrityKeys,
        name: &str,
    ) -> Result<Option<Vec<u8>>> {
        let Some(r) = self.store.record(kind::SETTING, name.as_bytes())? else { return Ok(None) };
        ik.verify_row(&r)?;
        Ok(Some(r.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{AttrType, AttrValue};
    use crate::hierarchy::KdfParams;
    use crate::mechanism::KeyGenMechanism;
    use crate::secret::Pin;
    use crate::token::{InitOptions, UserType};
    use crate::Token;

    fn token(dir: &std::path::Path) -> Token {
        let path = dir.join("t.db");
        let pin = Pin::new(b"pin-12345".to_vec());
        let opts = InitOptions {
            kdf: KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 },
            ..InitOptions::default()
        };
        Token::init_with_options(&path, "t", &pin, Some(&pin), &opts).unwrap();
        let t = Token::open(&path).unwrap();
        t.login(UserType::User, &pin).unwrap();
        t
    }

    fn aes(t: &Token, label: &str) -> Result<u64> {
        t.generate_key(
            KeyGenMechanism::AesKeyGen,
            &[
                (AttrType::Token, AttrValue::Bool(true)),
                (AttrType::Label, AttrValue::Bytes(label.as_bytes().to_vec())),
                (AttrType::ValueLen, AttrValue::Ulong(32)),
            ],
            1,
        )
    }

    /// Writes queued while the combiner is busy commit as one group: one generation step for
    /// all of them; a write that fails in the group fails alone (the rest are run again one by
    /// one and land), and nothing of the failed one is stored.
    #[test]
    fn a_group_commits_once_and_a_bad_write_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let t = token(dir.path());
        let (_, ik) = t.require_vault().unwrap();
        let gen0 = t.store.header().unwrap().generation;
        let (n, bad) = (6usize, 3usize);
        let results = {
            let held = lock(&t.group.combiner); // every write below queues behind it
            let results = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .map(|i| {
                        let (t, ik) = (t.clone(), ik.clone());
                        s.spawn(move || {
                            t.write_grouped(&ik, move |a| {
                                if i == bad {
                                    return Err(Error::TemplateInconsistent(
                                        "refused for the test",
                                    ));
                                }
                                a.put_record(kind::SETTING, format!("group-{i}").as_bytes(), b"v")
                                    .map(|()| i as u64)
                            })
                        })
                    })
                    .collect();
                // Release the combiner once all are queued: the first thread in runs them all.
                while lock(&t.group.queue).len() < n {
                    std::thread::yield_now();
                }
                drop(held);
                hs.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
            });
            results
        };
        for (i, r) in results.iter().enumerate() {
            if i == bad {
                assert!(matches!(r, Err(Error::TemplateInconsistent(_))), "{r:?}");
            } else {
                assert_eq!(r.as_ref().unwrap(), &(i as u64));
            }
        }
        for i in 0..n {
            let row = t.store.record(kind::SETTING, format!("group-{i}").as_bytes()).unwrap();
            assert_eq!(row.is_some(), i != bad, "row {i}");
        }
        // The group failed as a whole (the bad write), then each write ran on its own.
        let gen = t.store.header().unwrap().generation;
        assert_eq!(gen - gen0, (n - 1) as u64, "one generation per write after the fallback");
        t.verify_store().unwrap();
    }

    /// A group without a bad write is one transaction: one generation step for all.
    #[test]
    fn a_clean_group_is_one_generation() {
        let dir = tempfile::tempdir().unwrap();
        let t = token(dir.path());
        let (_, ik) = t.require_vault().unwrap();
        let gen0 = t.store.header().unwrap().generation;
        let n = 5usize;
        let held = lock(&t.group.combiner);
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let (t, ik) = (t.clone(), ik.clone());
                    s.spawn(move || {
                        t.write_grouped(&ik, move |a| {
                            a.put_record(kind::SETTING, format!("g-{i}").as_bytes(), b"v")
                                .map(|()| 0)
                        })
                    })
                })
                .collect();
            while lock(&t.group.queue).len() < n {
                std::thread::yield_now();
            }
            drop(held);
            for h in hs {
                h.join().unwrap().unwrap();
            }
        });
        assert_eq!(t.store.header().unwrap().generation - gen0, 1);
        t.verify_store().unwrap();
    }

    /// Many sessions creating keys at once: every key is stored once under its own handle,
    /// the store verifies, every creation has its own audit record naming its own key, and
    /// no outbox row is left behind.
    #[test]
    fn concurrent_creations_are_all_stored_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let t = token(dir.path());
        let (threads, each) = (8usize, 25usize);
        let handles: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|k| {
                    let t = t.clone();
                    s.spawn(move || {
                        (0..each)
                            .map(|i| aes(&t, &format!("k{k}-{i}")).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let distinct: std::collections::HashSet<_> = handles.iter().collect();
        assert_eq!(distinct.len(), threads * each);
        assert_eq!(t.verify_store().unwrap(), (threads * each) as u64);
        let uids: std::collections::HashSet<String> = handles
            .iter()
            .map(|h| {
                let v = t.attribute(*h, AttrType::UniqueId).unwrap();
                match v {
                    AttrValue::Bytes(b) => String::from_utf8(b).unwrap(),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        let log = t.audit_log().unwrap();
        log.flush().unwrap();
        let recorded: Vec<String> = log
            .export_lines(0)
            .unwrap()
            .into_iter()
            .filter_map(|l| match l {
                crate::audit::ExportLine::Record { record, .. }
                    if record.op == "generate-key" && record.result == "ok" =>
                {
                    Some(record.object)
                }
                _ => None,
            })
            .collect();
        assert_eq!(recorded.len(), threads * each);
        assert_eq!(recorded.iter().collect::<std::collections::HashSet<_>>().len(), recorded.len());
        assert!(recorded.iter().all(|o| uids.contains(o)), "each record names its own key");
        // One more write takes the done rows away.
        aes(&t, "last").unwrap();
        assert!(t.store.records(kind::OUTBOX, b"").unwrap().len() <= 1);
    }
}
