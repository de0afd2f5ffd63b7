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
        self.provider.check()?;
        if fresh == Fresh::No {
            // Another connection's commit is verified before anything is decided on the rows
            // it may have changed (a replayed login state or a deleted used approval).
            self.watch_foreign_changes(ik, self.store.change_counter()?)?;
        }
        let mut nonce = [0u8; 12];
        self.provider.random(&mut nonce)?;
        let mut out = None;
        let mut next_gen = 0;
        let plan = self.outbox_plan()?;
        let r = self.store.write(&mut |tx| {
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
            let v = f(&mut a)?;
            Self::outbox_apply(&plan, &mut a)?;
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
            out = Some(v);
            Ok(())
        });
        self.outbox_after(plan, r.is_ok());
        r?;
        self.note_generation(next_gen);
        // Access may have changed: prepared keys pass the full gate again before their next use.
        self.bump_epoch();
        out.ok_or(Error::Internal("write produced no value"))
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
        self.check_not_rolled_back(st.generation)?;
        self.note_generation(st.generation);
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
