//! Scheduled destruction on the token: the store's destruction settings, scheduling a key's
//! destruction (what `C_DestroyObject` does to a token key when the store's wait is not 0),
//! cancelling it, listing scheduled keys, and carrying out the destructions that are due.
//!
//! A schedule is an attribute of the key (`CKA_BULWARK_DESTROY_SCHEDULED`, in the authenticated
//! object record) plus an authenticated `destroy-due` record that indexes it, written together
//! in one write: finding the due keys never scans every object. A scheduled key is invisible to
//! every ordinary lookup ([`Token::obj`], `C_FindObjects`) and refused by the gate; only the
//! functions here see it. When its wait has passed, its material is removed from the record
//! (crypto-shredding: the ciphertext is gone, so no later master-key compromise recovers it);
//! the record keeps every attribute, now in state destroyed (or destroyed-compromised), so the
//! audit history keeps naming a key. Carrying out due destructions is idempotent: each is one
//! write that re-reads the row and the index, and does nothing for a key already done.
//!
//! Nothing here may run inside another audited call (each destruction is its own call), so
//! the entry points apply due destructions before they start their own call.

use super::objects::{is_key, spec_of};
use super::state::kind;
use super::{write, Obj, Token};
use crate::attr::{AttrType, Attributes};
use crate::destruction::{DestroySettings, Schedule};
use crate::error::{Error, Result};
use crate::hierarchy::IntegrityKeys;
use crate::kernel::Role;
use crate::lifecycle::{KeyState, Lifecycle};
use crate::store::Store;

use super::guard::Call;

/// Kind of the records indexing scheduled destructions: key = object handle (8 bytes, big
/// endian), value = due time (8 bytes, big endian) then the object's uid (16 bytes).
pub(super) const DESTROY_DUE: &str = "destroy-due";

/// The setting that holds the store's [`DestroySettings`] (JSON).
const SETTING: &str = "destruction";

/// What destroying an object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestroyOutcome {
    /// The object is gone (the store's wait is 0, or the object is not a token key).
    Destroyed,
    /// The key is scheduled: unusable and invisible now, its material shredded at `due`.
    Scheduled {
        /// When the material is shredded (Unix seconds).
        due: u64,
    },
}

/// A key with a scheduled destruction, as [`Token::scheduled_keys`] lists it.
#[derive(Clone, Debug)]
pub struct ScheduledKey {
    /// The object handle.
    pub handle: u64,
    /// Its attributes (the schedule and lifecycle included).
    pub attrs: Attributes,
    /// When the material is (or was) shredded.
    pub due: u64,
    /// Whether the destruction has been carried out (material gone).
    pub shredded: bool,
    /// The key's state now (dates applied; destroyed once shredded).
    pub state: KeyState,
    /// The key type's name (`aes-256`, `ec-p256`...), `-` when unknown.
    pub key_type: String,
}

fn due_value(due: u64, uid: &[u8; 16]) -> Vec<u8> {
    let mut v = due.to_be_bytes().to_vec();
    v.extend_from_slice(uid);
    v
}

fn parse_due(v: &[u8]) -> Result<(u64, [u8; 16])> {
    let due = v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
    let uid: Option<[u8; 16]> = v.get(8..24).and_then(|b| b.try_into().ok());
    match (due, uid, v.len()) {
        (Some(d), Some(u), 24) => Ok((d, u)),
        _ => Err(Error::Integrity("malformed destroy-due record")),
    }
}

impl<S: Store> Token<S> {
    /// Whether this is a daemon store (quorum unlock policy): its destruction defaults are
    /// [`DestroySettings::daemon`].
    fn is_daemon_store(&self) -> Result<bool> {
        Ok(self.store.header()?.policy == crate::seal::QUORUM_POLICY)
    }

    /// The store's destruction settings (the kind's defaults until someone set them).
    ///
    /// # Errors
    /// `Integrity` for a setting that does not authenticate or parse.
    pub fn destroy_settings(&self) -> Result<DestroySettings> {
        match self.setting(SETTING)? {
            Some(v) => serde_json::from_slice(&v)
                .map_err(|_| Error::Integrity("destruction settings malformed")),
            None if self.is_daemon_store()? => Ok(DestroySettings::daemon()),
            None => Ok(DestroySettings::embedded()),
        }
    }

    /// Changes the destruction wait and/or purge protection (security officer only), audited
    /// as `destroy-settings`. `approved`: the front door checked quorum approvals for this
    /// request (needed for a wait below the store minimum). Returns the new settings.
    ///
    /// # Errors
    /// `ActionProhibited` for a caller who is not the security officer or a change the rules
    /// refuse ([`DestroySettings::changed`]); nothing changes then.
    pub fn set_destroy_settings(
        &self,
        wait: Option<u64>,
        purge_protection: Option<bool>,
        approved: bool,
    ) -> Result<DestroySettings> {
        let c = Call::new("destroy-settings");
        let r = self.precheck(&c).and_then(|()| {
            if self.who().role != Some(Role::SecurityOfficer) {
                return Err(Error::ActionProhibited(
                    "only the security officer changes destruction settings",
                ));
            }
            let (_, ik) = self.require_vault()?;
            let cur = self.destroy_settings()?;
            let next = cur.changed(wait, purge_protection, approved)?;
            let json = serde_json::to_vec(&next).map_err(|_| Error::Internal("settings json"))?;
            self.write(&ik, |a| a.put_record(kind::SETTING, SETTING.as_bytes(), &json))?;
            Ok(next)
        });
        let detail = match &r {
            Ok(s) => format!(
                "wait={}s purge-protection={}{}",
                s.wait_secs,
                if s.purge_protection { "on" } else { "off" },
                if approved { " approved" } else { "" }
            ),
            Err(_) => String::new(),
        };
        self.finish(&c, r, detail)
    }

    /// `C_DestroyObject` with the store's destruction wait: a token key is scheduled when the
    /// wait is not 0 (unusable and invisible at once, shredded when due); anything else is
    /// destroyed at once. Audited as `destroy-object`.
    ///
    /// # Errors
    /// As [`Token::destroy_object`].
    pub fn destroy_key_object(&self, h: u64) -> Result<DestroyOutcome> {
        let _ = self.apply_due_destructions();
        let _ = self.obj(h); // load it so that the record can name it after it is gone
        let c = Call { described: Some(self.describe(h)), ..Call::new("destroy-object").obj(h) };
        let r = self.precheck(&c).and_then(|()| self.destroy_object_unaudited(h));
        let detail = match &r {
            Ok(DestroyOutcome::Scheduled { due }) => format!("scheduled: due {due}"),
            _ => String::new(),
        };
        self.finish(&c, r, detail)
    }

    /// Schedules the destruction of token key `o` (the caller passed the gate's manage check)
    /// if the store's wait is not 0; `None` when the object is to be destroyed at once.
    pub(super) fn schedule_destroy(&self, o: &Obj) -> Result<Option<DestroyOutcome>> {
        if o.session.is_some() || !is_key(&o.attrs) {
            return Ok(None);
        }
        let wait = self.destroy_settings()?.wait_secs;
        if wait == 0 {
            return Ok(None);
        }
        let due = self.now().saturating_add(wait);
        let (_, ik) = self.require_vault()?;
        let (handle, uid) = (o.handle, o.uid);
        self.write(&ik, |a| {
            let row = a.object(handle)?.ok_or(Error::ObjectHandleInvalid)?;
            if row.uid != uid {
                return Err(Error::ObjectHandleInvalid);
            }
            let mut attrs = Attributes::decode(&row.attrs)?;
            if Schedule::is_scheduled(&attrs) {
                return Err(Error::ObjectHandleInvalid); // already destroyed for its callers
            }
            Schedule { due }.store_in(&mut attrs);
            let mut new_row = row.clone();
            new_row.attrs = attrs.encode();
            a.update_object(&new_row)?;
            a.put_record(DESTROY_DUE, &handle.to_be_bytes(), &due_value(due, &uid))
        })?;
        self.forget(&[handle]);
        Ok(Some(DestroyOutcome::Scheduled { due }))
    }

    /// Cancels the scheduled destruction of the key behind `h` before its wait ends: the key
    /// is visible and usable again in the state it had. Audited as `destroy-cancel`.
    ///
    /// # Errors
    /// `ActionProhibited` for a key that is not scheduled, whose wait has ended, or that the
    /// caller may not manage; `ObjectHandleInvalid` for a key the caller cannot see.
    pub fn cancel_destroy(&self, h: u64) -> Result<KeyState> {
        let _ = self.apply_due_destructions();
        let _ = self.obj_any(h);
        let c = Call { described: Some(self.describe(h)), ..Call::new("destroy-cancel").obj(h) };
        let r = self.precheck(&c).and_then(|()| self.cancel_unaudited(h));
        let detail = match &r {
            Ok(s) => format!("restored as {s}"),
            Err(_) => String::new(),
        };
        self.finish(&c, r, detail)
    }

    fn cancel_unaudited(&self, h: u64) -> Result<KeyState> {
        let o = self.obj_any(h)?;
        self.check_manage(&self.who(), &o)?;
        let now = self.now();
        let s = Schedule::of(&o.attrs)
            .ok_or(Error::ActionProhibited("the key is not scheduled for destruction"))?;
        if s.is_due(now) {
            return Err(Error::ActionProhibited(
                "the waiting period has ended: the key's material is destroyed",
            ));
        }
        let (_, ik) = self.require_vault()?;
        let uid = o.uid;
        let state = self.write(&ik, |a| {
            let row = a.object(h)?.ok_or(Error::ObjectHandleInvalid)?;
            if row.uid != uid {
                return Err(Error::ObjectHandleInvalid);
            }
            let mut attrs = Attributes::decode(&row.attrs)?;
            match Schedule::of(&attrs) {
                Some(s) if !s.is_due(now) => {}
                _ => return Err(Error::ActionProhibited("the key is no longer cancellable")),
            }
            Schedule::clear(&mut attrs);
            let state = Lifecycle::of(&attrs)?.state_at(now);
            let mut new_row = row.clone();
            new_row.attrs = attrs.encode();
            a.update_object(&new_row)?;
            a.delete_record(DESTROY_DUE, &h.to_be_bytes())?;
            Ok(state)
        })?;
        self.forget(&[h]);
        Ok(state)
    }

    /// Keys with a scheduled destruction the caller may see: with `label`, every such key of
    /// that label, pending or carried out; without, every pending one. Due destructions are
    /// carried out first. Reading is not audited, like any other listing.
    ///
    /// # Errors
    /// Store and integrity errors.
    pub fn scheduled_keys(&self, label: Option<&str>) -> Result<Vec<ScheduledKey>> {
        let _ = self.apply_due_destructions();
        self.sync()?;
        let handles: Vec<u64> = match label {
            Some(l) => {
                self.store.find(None, Some(l.as_bytes()), None)?.iter().map(|r| r.handle).collect()
            }
            None => self.due_index()?.into_iter().map(|(h, _, _)| h).collect(),
        };
        let now = self.now();
        let mut out = Vec::new();
        for h in handles {
            let o = match self.obj_any(h) {
                Ok(o) => o,
                Err(Error::ObjectHandleInvalid) => continue,
                Err(e) => return Err(e),
            };
            let Some(s) = Schedule::of(&o.attrs) else { continue };
            out.push(ScheduledKey {
                handle: h,
                attrs: o.attrs.clone(),
                due: s.due,
                shredded: s.is_due(now),
                state: Lifecycle::of(&o.attrs)?.state_at(now),
                key_type: spec_of(&o.attrs).map_or_else(|_| "-".into(), |k| k.name()),
            });
        }
        Ok(out)
    }

    /// The `destroy-due` index: (handle, due, uid), each record authenticated.
    fn due_index(&self) -> Result<Vec<(u64, u64, [u8; 16])>> {
        let ik = self.integrity();
        let mut v = Vec::new();
        for r in self.store.records(DESTROY_DUE, b"")? {
            if let Some(ik) = &ik {
                ik.verify_row(&r)?;
            }
            let h = r
                .key
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Integrity("malformed destroy-due record"))?;
            let (due, uid) = parse_due(&r.value)?;
            v.push((h, due, uid));
        }
        Ok(v)
    }

    /// Carries out every scheduled destruction whose wait has ended (by this token's clock):
    /// each key's material is removed from its record and its state set to destroyed (or
    /// destroyed-compromised), each audited as `destroy-due`. Idempotent; does nothing while
    /// the store is locked. Returns how many were carried out. The entry points of this file
    /// and every login call it; a daemon may call it on a timer.
    ///
    /// # Errors
    /// Store, integrity and audit errors (the destructions before the error stay done).
    pub fn apply_due_destructions(&self) -> Result<u32> {
        let Some(ik) = self.integrity() else { return Ok(0) };
        if self.require_vault().is_err() {
            return Ok(0);
        }
        let now = self.now();
        let mut n = 0;
        for (h, due, uid) in self.due_index()? {
            if due > now {
                continue;
            }
            let label = self
                .store
                .object(h)?
                .map(|r| String::from_utf8_lossy(&r.label).into_owned())
                .unwrap_or_default();
            let c = Call {
                described: Some((hex::encode(uid), label)),
                ..Call::new("destroy-due").obj(h)
            };
            let r = self.precheck(&c).and_then(|()| self.shred(&ik, h, uid, now));
            let detail = match &r {
                Ok(Some(s)) => format!("scheduled destruction carried out: material shredded, {s}"),
                Ok(None) => "nothing to do".to_owned(),
                Err(_) => String::new(),
            };
            if self.finish(&c, r, detail)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// One due destruction, in one write; `None` when there was nothing (left) to do.
    fn shred(
        &self,
        ik: &IntegrityKeys,
        h: u64,
        uid: [u8; 16],
        now: u64,
    ) -> Result<Option<KeyState>> {
        let r = self.write(ik, |a| {
            let key = h.to_be_bytes();
            let row = match a.object(h)? {
                Some(r) if r.uid == uid => r,
                _ => {
                    a.delete_record(DESTROY_DUE, &key)?;
                    return Ok(None);
                }
            };
            let mut attrs = Attributes::decode(&row.attrs)?;
            let Some(s) = Schedule::of(&attrs) else {
                a.delete_record(DESTROY_DUE, &key)?;
                return Ok(None);
            };
            if !s.is_due(now) {
                return Ok(None);
            }
            let l = Lifecycle::of(&attrs)?;
            let to = Schedule::final_state(l.state_at(now));
            Lifecycle { state: Some(to), destroyed: Some(now), ..l }.store_in(&mut attrs);
            let mut new_row = row.clone();
            new_row.attrs = attrs.encode();
            new_row.secret = None;
            a.update_object(&new_row)?;
            a.delete_record(DESTROY_DUE, &key)?;
            Ok(Some(to))
        })?;
        self.forget(&[h]);
        Ok(r)
    }

    /// Drops cached objects and parsed keys of `handles` and moves the epoch (prepared keys
    /// pass the gate again).
    pub(super) fn forget(&self, handles: &[u64]) {
        {
            let mut c = write(&self.cache);
            for h in handles {
                c.objects.remove(h);
                c.keys.remove(h);
            }
        }
        self.bump_epoch();
    }

    /// Whether the object is hidden from ordinary lookups (a scheduled or carried-out
    /// destruction).
    pub(crate) fn is_hidden(o: &Obj) -> bool {
        Schedule::is_scheduled(&o.attrs)
    }

    /// The gate's check for keys whose material left the live store: a scheduled destruction
    /// or an archived key.
    pub(crate) fn check_present(o: &Obj) -> Result<()> {
        if Schedule::is_scheduled(&o.attrs) {
            return Err(Error::KeyFunctionNotPermitted("key is scheduled for destruction"));
        }
        if o.attrs.contains(AttrType::BulwarkArchived) {
            return Err(Error::KeyFunctionNotPermitted(
                "key is archived: restore it from its archive file to use it",
            ));
        }
        Ok(())
    }

    /// After a login or unseal: the destructions that fell due while nobody had the store
    /// open are carried out (a failure is logged; the login stands).
    pub(super) fn destructions_after_unlock(&self) {
        if let Err(e) = self.apply_due_destructions() {
            tracing::warn!(error = %e, "carrying out due destructions");
        }
    }
}
