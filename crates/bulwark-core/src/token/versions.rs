//! Key versions and rotation: every version of a key is its own object (for a key pair, its own
//! pair) with the same CKA_LABEL, a read-only version number (`CKA_BULWARK_KEY_VERSION`, 1 when
//! absent) and a shared family id (`CKA_BULWARK_KEY_FAMILY`) that links the versions even when
//! several keys share a label. Rotation makes a new version of the same type and policy (usage
//! flags, allowed mechanisms, access grants copied exactly), activates it, and deactivates the
//! version it replaces, which still verifies, decrypts and unwraps old data.
//!
//! A label names the family's current version: the highest active one (the highest of all when
//! none is active, so that a retired key still decrypts by its label). A minimum decryption
//! version (`CKA_BULWARK_MIN_DECRYPT_VERSION`, on every version of the family) makes older
//! versions refuse every use.
//!
//! Automatic rotation: a version with a rotation period (`CKA_BULWARK_ROTATION_PERIOD`) is due
//! `period` seconds after it became current (`CKA_BULWARK_ROTATED_AT`). Like the date-driven
//! state changes of `lifecycle.rs`, nothing runs in the background: a due rotation happens at
//! the gate (the next use of the key, or the next time its label is resolved), measured by the
//! token's clock. It is one authenticated write fenced by a per-family record holding the
//! latest version, so two threads or processes that see it due at once make exactly one new
//! version. An automatic rotation is a system action: it needs no role of the caller that
//! happened to trigger it, and it only copies what the key already has.
//!
//! Nothing here ever returns key material.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::guard::Call;
use super::objects::{fill_public, is_key, spec_of};
use super::{write, Obj, Token, Usage};
use crate::attr::{AttrType, Attributes, ObjectClass};
use crate::error::{Error, Result};
use crate::lifecycle::{KeyState, Lifecycle, Transition};
use crate::store::{ObjectRow, Store};

/// The record kind holding each family's latest version (the rotation fence).
const FAMILY_RECORD: &str = "key-family";

/// The shortest automatic rotation period accepted (one hour).
pub const MIN_ROTATION_PERIOD: u64 = 3600;

/// One version of a key family, as `key show` and the daemon list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVersionInfo {
    /// The family id (hex); empty for a key never rotated and never given a period.
    pub family: String,
    /// The version number (1 for a key never rotated).
    pub version: u64,
    /// The version's objects, secret or private key first.
    pub handles: Vec<u64>,
    /// Its stored lifecycle.
    pub lifecycle: Lifecycle,
    /// Its state now (dates applied).
    pub state: KeyState,
    /// Whether a label names this version now.
    pub current: bool,
    /// When it became current (Unix seconds), if recorded.
    pub rotated_at: Option<u64>,
    /// The family's automatic rotation period in seconds, if any.
    pub rotation_period: Option<u64>,
    /// When the family rotates next (current version with a period only).
    pub next_rotation: Option<u64>,
    /// The family's minimum decryption version (1: none).
    pub min_decrypt_version: u64,
}

/// The version of a key object (1 when it carries none).
pub fn version_of(a: &Attributes) -> u64 {
    a.ulong(AttrType::BulwarkKeyVersion).unwrap_or(1)
}

/// When the version with attributes `a` is due for automatic rotation, if it has a period.
pub fn rotation_due_at(a: &Attributes) -> Option<u64> {
    let period = a.ulong(AttrType::BulwarkRotationPeriod)?;
    let base = a
        .ulong(AttrType::BulwarkRotatedAt)
        .or_else(|| Lifecycle::of(a).ok().and_then(|l| l.activation))?;
    Some(base.saturating_add(period))
}

/// How the objects under one label group into families: by family id, or (keys made before
/// versions existed) by CKA_ID, which both halves of a pair share.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FamilyKey {
    Id(Vec<u8>),
    Legacy(Vec<u8>),
}

fn family_key(a: &Attributes) -> FamilyKey {
    match a.bytes(AttrType::BulwarkKeyFamily) {
        Some(f) => FamilyKey::Id(f.to_vec()),
        None => FamilyKey::Legacy(a.bytes(AttrType::Id).unwrap_or_default().to_vec()),
    }
}

/// The objects of each version, by version number.
type Versions = BTreeMap<u64, Vec<Arc<Obj>>>;

/// The versions of one family (token objects only; a session key has no versions).
struct Family {
    key: FamilyKey,
    versions: Versions,
}

impl Family {
    /// The version a label names: the highest active one, else the highest.
    fn current(&self, now: u64) -> u64 {
        let active = |objs: &Vec<Arc<Obj>>| {
            objs.iter()
                .all(|o| Lifecycle::of(&o.attrs).is_ok_and(|l| l.state_at(now) == KeyState::Active))
        };
        self.versions
            .iter()
            .rev()
            .find(|(_, objs)| active(objs))
            .or_else(|| self.versions.iter().next_back())
            .map_or(1, |(v, _)| *v)
    }

    fn latest(&self) -> u64 {
        self.versions.keys().next_back().copied().unwrap_or(1)
    }
}

/// Secret or private key first, then public keys.
fn secret_first(objs: &mut [Arc<Obj>]) {
    objs.sort_by_key(|o| (o.attrs.class() == Some(ObjectClass::PublicKey), o.handle));
}

/// Attributes of a stored key that come from its material (rebuilt for a new version).
const MATERIAL_ATTRS: &[AttrType] = &[
    AttrType::PublicKeyInfo,
    AttrType::Modulus,
    AttrType::PublicExponent,
    AttrType::EcPoint,
    AttrType::Value,
    AttrType::CheckValue,
    AttrType::UniqueId,
];

/// Lifecycle attributes a new version starts without.
const LIFECYCLE_ATTRS: &[AttrType] = &[
    AttrType::BulwarkState,
    AttrType::BulwarkActivationDate,
    AttrType::BulwarkProtectStopDate,
    AttrType::BulwarkDeactivationDate,
    AttrType::BulwarkCompromiseDate,
    AttrType::BulwarkDestroyDate,
];

impl<S: Store> Token<S> {
    /// The visible key families labelled `label` (token objects; session keys are each their
    /// own family of one version).
    fn families(&self, label: &str) -> Result<Vec<Family>> {
        let t = [(AttrType::Label, crate::attr::AttrValue::Bytes(label.as_bytes().to_vec()))];
        let objs = self
            .find_unaudited(&t)?
            .into_iter()
            .map(|h| self.obj(h))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::group(objs))
    }

    /// Every token key object labelled `label`, whoever the caller is: a rotation is made for
    /// the whole family (both halves of a pair, every version), also when the caller that
    /// triggered an automatic one may see only part of it. Records are checked as always.
    fn families_unfiltered(&self, label: &str) -> Result<Vec<Family>> {
        self.require_vault()?;
        self.sync()?;
        let mut objs = Vec::new();
        for row in self.store.find(None, Some(label.as_bytes()), None)? {
            objs.push(Arc::new(self.decode_row(row)?));
        }
        Ok(Self::group(objs))
    }

    /// Groups key objects into families and versions.
    fn group(objs: Vec<Arc<Obj>>) -> Vec<Family> {
        let mut fams: BTreeMap<(bool, FamilyKey), Versions> = BTreeMap::new();
        for o in objs {
            let h = o.handle;
            if !is_key(&o.attrs) {
                continue;
            }
            let key = if o.session.is_some() {
                FamilyKey::Legacy(format!("session:{h}").into_bytes())
            } else {
                family_key(&o.attrs)
            };
            fams.entry((o.session.is_some(), key))
                .or_default()
                .entry(version_of(&o.attrs))
                .or_default()
                .push(o);
        }
        // Keys made before versions existed are grouped by CKA_ID; a pair whose halves were
        // given different CKA_IDs (through PKCS#11) is still one key when the label holds no
        // other key of the same classes.
        let legacy: Vec<(bool, FamilyKey)> = fams
            .keys()
            .filter(|(session, k)| !*session && matches!(k, FamilyKey::Legacy(_)))
            .cloned()
            .collect();
        if legacy.len() > 1 {
            let mut per_class: BTreeMap<Option<u64>, usize> = BTreeMap::new();
            for k in &legacy {
                for o in fams[k].values().flatten() {
                    *per_class.entry(o.attrs.ulong(AttrType::Class)).or_default() += 1;
                }
            }
            if per_class.values().all(|n| *n == 1) {
                let mut merged = Versions::new();
                for k in &legacy {
                    for (v, objs) in fams.remove(k).unwrap_or_default() {
                        merged.entry(v).or_default().extend(objs);
                    }
                }
                fams.insert(legacy[0].clone(), merged);
            }
        }
        fams.into_iter()
            .map(|((_, key), mut versions)| {
                for objs in versions.values_mut() {
                    secret_first(objs);
                }
                Family { key, versions }
            })
            .collect()
    }

    /// The family of key object `h` (which the caller must see), every member of it whoever
    /// the caller is.
    fn family_of(&self, h: u64) -> Result<(Arc<Obj>, Family)> {
        let o = self.obj(h)?;
        if !is_key(&o.attrs) {
            return Err(Error::KeyTypeInconsistent);
        }
        if o.session.is_some() {
            return Err(Error::ActionProhibited("session keys have no versions"));
        }
        let label = String::from_utf8_lossy(o.attrs.bytes(AttrType::Label).unwrap_or_default())
            .into_owned();
        let fam = self
            .families_unfiltered(&label)?
            .into_iter()
            .find(|f| f.versions.values().flatten().any(|x| x.handle == h))
            .ok_or(Error::ObjectHandleInvalid)?;
        Ok((o, fam))
    }

    /// The key objects `label` names: of each family labelled `label`, the objects of its
    /// current version (`version: None`; a due automatic rotation happens first) or of version
    /// `n`. Secret or private keys first. What the CLI, the daemon and batches resolve labels
    /// with.
    ///
    /// # Errors
    /// `NotFound` when no visible key has the label (or none has version `n`).
    pub fn resolve_key(&self, label: &str, version: Option<u64>) -> Result<Vec<super::ObjectInfo>> {
        let mut fams = self.families(label)?;
        if version.is_none() {
            let mut rotated = false;
            for f in &fams {
                let cur = f.current(self.now());
                if let Some(o) = f.versions.get(&cur).and_then(|v| v.first()) {
                    rotated |= self.rotate_if_due(o)?;
                }
            }
            if rotated {
                fams = self.families(label)?;
            }
        }
        let now = self.now();
        let mut out = Vec::new();
        for f in &fams {
            let v = version.unwrap_or_else(|| f.current(now));
            if let Some(objs) = f.versions.get(&v) {
                out.extend(
                    objs.iter()
                        .map(|o| super::ObjectInfo { handle: o.handle, attrs: o.attrs.clone() }),
                );
            }
        }
        if out.is_empty() {
            return Err(Error::NotFound(match version {
                Some(n) => format!("{label} (version {n})"),
                None => label.to_owned(),
            }));
        }
        Ok(out)
    }

    /// Every version of every key family labelled `label`, oldest first.
    ///
    /// # Errors
    /// `NotFound` when no visible key has the label.
    pub fn key_versions(&self, label: &str) -> Result<Vec<KeyVersionInfo>> {
        let fams = self.families(label)?;
        if fams.is_empty() {
            return Err(Error::NotFound(label.to_owned()));
        }
        let now = self.now();
        let mut out = Vec::new();
        for f in &fams {
            let cur = f.current(now);
            for (v, objs) in &f.versions {
                let Some(first) = objs.first() else { continue };
                let l = Lifecycle::of(&first.attrs)?;
                let a = &first.attrs;
                out.push(KeyVersionInfo {
                    family: a
                        .bytes(AttrType::BulwarkKeyFamily)
                        .map(hex::encode)
                        .unwrap_or_default(),
                    version: *v,
                    handles: objs.iter().map(|o| o.handle).collect(),
                    lifecycle: l,
                    state: l.state_at(now),
                    current: *v == cur,
                    rotated_at: a.ulong(AttrType::BulwarkRotatedAt),
                    rotation_period: a.ulong(AttrType::BulwarkRotationPeriod),
                    next_rotation: if *v == cur && l.state_at(now) == KeyState::Active {
                        rotation_due_at(a)
                    } else {
                        None
                    },
                    min_decrypt_version: a.ulong(AttrType::BulwarkMinDecryptVersion).unwrap_or(1),
                });
            }
        }
        Ok(out)
    }

    /// Rotates the key family of object `h` (any version, either half of a pair): makes a new
    /// version of the same type, size and policy — usage flags, allowed mechanisms and access
    /// grants copied exactly — active from now, and deactivates the version it replaces (it
    /// still verifies, decrypts and unwraps). Audited as `key-rotate`. Returns the new
    /// version's handles (secret or private key first) and its number.
    ///
    /// # Errors
    /// `ActionProhibited` for a caller who may not manage the key, a session key, or a family
    /// without its secret or private half; `ObjectHandleInvalid` for a key the caller cannot
    /// see.
    pub fn rotate_key(&self, h: u64) -> Result<(Vec<u64>, u64)> {
        let _ = self.obj(h);
        let mut c = Call::new("key-rotate");
        c.handle = Some(h);
        let r = self.precheck(&c).and_then(|()| {
            let w = self.who();
            let o = self.obj(h)?;
            self.check_manage(&w, &o)?;
            self.rotate_unaudited(h, false)?.ok_or(Error::Internal("rotation made no version"))
        });
        let detail = match &r {
            Ok((_, v)) => format!("-> v{v}"),
            Err(_) => String::new(),
        };
        self.finish(&c, r, detail)
    }

    /// Rotates the family of `o` if `o` is its current, active version and its rotation is
    /// due (the gate and label resolution call this). Returns whether a new version was made
    /// (by this call). Without an unlocked store (a public session verifying) nothing is
    /// done: the next use that can rotates.
    pub(crate) fn rotate_if_due(&self, o: &Obj) -> Result<bool> {
        if o.session.is_some() {
            return Ok(false);
        }
        let Some(due) = rotation_due_at(&o.attrs) else { return Ok(false) };
        let now = self.now();
        if due > now || Lifecycle::of(&o.attrs)?.state_at(now) != KeyState::Active {
            return Ok(false);
        }
        if self.require_vault().is_err() {
            return Ok(false);
        }
        let handle = o.handle;
        let made = super::outbox::nested(|| {
            let mut call = Call::new("key-rotate");
            call.handle = Some(handle);
            let r = self.precheck(&call).and_then(|()| self.rotate_unaudited(handle, true));
            let detail = match &r {
                Ok(Some((_, v))) => format!("automatic -> v{v}"),
                Ok(None) => "automatic: already rotated".to_owned(),
                Err(_) => "automatic".to_owned(),
            };
            self.finish(&call, r, detail)
        });
        match made {
            Ok(m) => Ok(m.is_some()),
            // A family that can no longer rotate (its private half was destroyed, or its label
            // became ambiguous) keeps working as it is; the refusal is in the audit log.
            Err(Error::ActionProhibited(_) | Error::Ambiguous(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The rotation itself. `auto`: only if the version of `h` is still current, active and
    /// due inside the write (else `None`: another thread or process rotated first).
    fn rotate_unaudited(&self, h: u64, auto: bool) -> Result<Option<(Vec<u64>, u64)>> {
        let now = self.now();
        let (_, fam) = self.family_of(h)?;
        if !auto {
            // A manual rotation changes every member: the caller must be able to manage each
            // (a security officer may manage a public key, never its private half).
            let w = self.who();
            for o in fam.versions.values().flatten() {
                self.check_manage(&w, o)?;
            }
        }
        let from = fam.current(now);
        let latest = fam.latest();
        let cur: Vec<Arc<Obj>> = fam.versions.get(&from).cloned().unwrap_or_default();
        let Some(main) = cur
            .iter()
            .find(|o| {
                matches!(o.attrs.class(), Some(ObjectClass::SecretKey | ObjectClass::PrivateKey))
            })
            .cloned()
        else {
            return Err(Error::ActionProhibited(
                "only a key whose secret or private half is in the HSM can be rotated",
            ));
        };
        if cur.iter().filter(|o| o.attrs.class() == main.attrs.class()).count() > 1 {
            return Err(Error::Ambiguous(
                String::from_utf8_lossy(main.attrs.bytes(AttrType::Label).unwrap_or_default())
                    .into_owned(),
            ));
        }
        if auto && !cur.iter().any(|o| o.handle == h) {
            return Ok(None); // `h` is not the current version any more
        }
        let family: Vec<u8> = match &fam.key {
            FamilyKey::Id(id) => id.clone(),
            FamilyKey::Legacy(_) => main.uid.to_vec(),
        };
        let next = latest + 1;
        let (vault, ik) = self.require_vault()?;
        // The new material, generated and sealed before the write (the write may not fail
        // half-way: everything below is one transaction).
        let spec = spec_of(&main.attrs)?;
        let g = self.provider.generate(spec)?;
        let mut rows: Vec<(ObjectRow, [u8; 16])> = Vec::new();
        for o in &cur {
            let mut uid = [0u8; 16];
            self.provider.random(&mut uid)?;
            let mut a = o.attrs.clone();
            for t in MATERIAL_ATTRS.iter().chain(LIFECYCLE_ATTRS) {
                a.remove(*t);
            }
            let public = o.attrs.class() == Some(ObjectClass::PublicKey);
            if let Some(pk) = &g.public {
                fill_public(&mut a, pk, public);
            }
            Lifecycle {
                state: Some(KeyState::Active),
                activation: Some(now),
                ..Lifecycle::default()
            }
            .store_in(&mut a);
            a.set_bytes(AttrType::BulwarkKeyFamily, family.clone());
            a.set_ulong(AttrType::BulwarkKeyVersion, next);
            a.set_ulong(AttrType::BulwarkRotatedAt, now);
            a.set_bool(AttrType::Local, true);
            if !public {
                let sensitive = a.bool_or(AttrType::Sensitive, true);
                let extractable = a.bool_or(AttrType::Extractable, false);
                a.set_bool(AttrType::AlwaysSensitive, sensitive);
                a.set_bool(AttrType::NeverExtractable, !extractable);
            }
            a.set_bytes(AttrType::UniqueId, hex::encode(uid).into_bytes());
            let secret = if public {
                None
            } else {
                let mut nonce = [0u8; 12];
                self.provider.random(&mut nonce)?;
                Some(vault.seal_secret(&uid, nonce, g.material.expose_secret())?)
            };
            let row = ObjectRow {
                handle: 0,
                uid,
                class: a.ulong(AttrType::Class).unwrap_or(0),
                label: a.bytes(AttrType::Label).unwrap_or_default().to_vec(),
                ckaid: a.bytes(AttrType::Id).unwrap_or_default().to_vec(),
                private: a.bool_or(AttrType::Private, true),
                attrs: a.encode(),
                secret,
                mac: Vec::new(),
            };
            rows.push((row, o.uid));
        }
        let legacy: Vec<Arc<Obj>> = if matches!(fam.key, FamilyKey::Legacy(_)) {
            fam.versions.values().flatten().cloned().collect()
        } else {
            Vec::new()
        };
        let cur_handles: Vec<(u64, [u8; 16])> = cur.iter().map(|o| (o.handle, o.uid)).collect();
        let made = self.write(&ik, |a| {
            // The fence: the family's latest version as the store knows it now.
            let stored = match a.record(FAMILY_RECORD, &family)? {
                Some(r) => u64::from_be_bytes(
                    r.value
                        .as_slice()
                        .try_into()
                        .map_err(|_| Error::Integrity("key family record malformed"))?,
                ),
                None => 0,
            };
            if stored > latest {
                if auto {
                    return Ok(None);
                }
                return Err(Error::ActionProhibited(
                    "the key was rotated at the same time by someone else: try again",
                ));
            }
            // The version being replaced, as the write reads it.
            for (handle, uid) in &cur_handles {
                let row = a.object(*handle)?.ok_or(Error::ObjectHandleInvalid)?;
                if row.uid != *uid {
                    return Err(Error::ObjectHandleInvalid);
                }
                let mut attrs = Attributes::decode(&row.attrs)?;
                let l = Lifecycle::of(&attrs)?;
                if auto && l.state_at(now) != KeyState::Active {
                    return Ok(None);
                }
                let mut changed = false;
                if matches!(l.state_at(now), KeyState::Active | KeyState::Suspended) {
                    l.after(Transition::Deactivate, now)?.store_in(&mut attrs);
                    changed = true;
                }
                if attrs.bytes(AttrType::BulwarkKeyFamily).is_none() {
                    attrs.set_bytes(AttrType::BulwarkKeyFamily, family.clone());
                    changed = true;
                }
                if changed {
                    let mut n = row.clone();
                    n.attrs = attrs.encode();
                    a.update_object(&n)?;
                }
            }
            // Older versions of a family made before versions existed get the family id.
            for o in &legacy {
                if cur_handles.iter().any(|(h, _)| *h == o.handle) {
                    continue;
                }
                let row = a.object(o.handle)?.ok_or(Error::ObjectHandleInvalid)?;
                let mut attrs = Attributes::decode(&row.attrs)?;
                if attrs.bytes(AttrType::BulwarkKeyFamily).is_none() {
                    attrs.set_bytes(AttrType::BulwarkKeyFamily, family.clone());
                    let mut n = row.clone();
                    n.attrs = attrs.encode();
                    a.update_object(&n)?;
                }
            }
            let mut handles = Vec::new();
            for (row, from_uid) in &rows {
                handles.push(a.insert_object(row)?);
                // The access list of the version it replaces, exactly (never more).
                Self::copy_grants(a, from_uid, &row.uid)?;
            }
            a.put_record(FAMILY_RECORD, &family, &next.to_be_bytes())?;
            Ok(Some(handles))
        })?;
        self.forget_objects(fam.versions.values().flatten().map(|o| o.handle));
        Ok(made.map(|hs| (hs, next)))
    }

    /// Drops cached objects and parsed keys, and makes prepared keys pass the gate again.
    fn forget_objects(&self, handles: impl Iterator<Item = u64>) {
        {
            let mut c = write(&self.cache);
            for h in handles {
                c.objects.remove(&h);
                c.keys.remove(&h);
            }
        }
        self.acl_forget();
        self.bump_epoch();
    }

    /// Changes every object of the family of `h` (all versions) in one write, after the
    /// caller's right to manage the key is checked; `f` gets each object's attributes and the
    /// family's latest version.
    fn change_family(
        &self,
        h: u64,
        f: impl Fn(&mut Attributes, &Family) -> Result<()>,
    ) -> Result<()> {
        let (_, fam) = self.family_of(h)?;
        let w = self.who();
        let objs: Vec<Arc<Obj>> = fam.versions.values().flatten().cloned().collect();
        for o in &objs {
            self.check_manage(&w, o)?;
        }
        for x in &objs {
            let mut a = x.attrs.clone();
            f(&mut a, &fam)?; // checked first, so that a refusal changes nothing
        }
        let family = match &fam.key {
            FamilyKey::Id(id) => Some(id.clone()),
            FamilyKey::Legacy(_) => None,
        };
        let (_, ik) = self.require_vault()?;
        self.write(&ik, |a| {
            for x in &objs {
                let row = a.object(x.handle)?.ok_or(Error::ObjectHandleInvalid)?;
                if row.uid != x.uid {
                    return Err(Error::ObjectHandleInvalid);
                }
                let mut attrs = Attributes::decode(&row.attrs)?;
                f(&mut attrs, &fam)?;
                let mut n = row.clone();
                n.attrs = attrs.encode();
                a.update_object(&n)?;
            }
            // A rotation committed since the family was read would miss the change.
            if let Some(id) = &family {
                if let Some(r) = a.record(FAMILY_RECORD, id)? {
                    if r.value.as_slice() > fam.latest().to_be_bytes().as_slice() {
                        return Err(Error::ActionProhibited(
                            "the key was rotated at the same time: try again",
                        ));
                    }
                }
            }
            Ok(())
        })?;
        self.forget_objects(objs.iter().map(|o| o.handle));
        Ok(())
    }

    /// Sets (or, with `None`, removes) the automatic rotation period of the family of key `h`,
    /// in seconds; the period of a version counts from when it became current (now, for a key
    /// that had no period). Audited as `key-rotation-period`. Returns the next rotation date.
    ///
    /// # Errors
    /// `ArgumentsBad` for a period under [`MIN_ROTATION_PERIOD`]; `ActionProhibited` for a
    /// caller who may not manage the key or a key without its secret or private half.
    pub fn set_rotation_period(&self, h: u64, period: Option<u64>) -> Result<Option<u64>> {
        let _ = self.obj(h);
        let mut c = Call::new("key-rotation-period");
        c.handle = Some(h);
        let r = self.precheck(&c).and_then(|()| {
            if period.is_some_and(|p| p < MIN_ROTATION_PERIOD) {
                return Err(Error::ArgumentsBad("the rotation period must be at least one hour"));
            }
            let now = self.now();
            self.change_family(h, |a, fam| {
                if !matches!(
                    a.class(),
                    Some(ObjectClass::SecretKey | ObjectClass::PrivateKey | ObjectClass::PublicKey)
                ) {
                    return Err(Error::KeyTypeInconsistent);
                }
                let has_secret = fam.versions.values().flatten().any(|o| {
                    matches!(
                        o.attrs.class(),
                        Some(ObjectClass::SecretKey | ObjectClass::PrivateKey)
                    )
                });
                if !has_secret {
                    return Err(Error::ActionProhibited(
                        "only a key whose secret or private half is in the HSM can be rotated",
                    ));
                }
                match period {
                    Some(p) => {
                        a.set_ulong(AttrType::BulwarkRotationPeriod, p);
                        if a.ulong(AttrType::BulwarkRotatedAt).is_none() {
                            a.set_ulong(AttrType::BulwarkRotatedAt, now);
                        }
                    }
                    None => {
                        a.remove(AttrType::BulwarkRotationPeriod);
                    }
                }
                Ok(())
            })?;
            let fresh = self.obj(h)?;
            Ok(period.and_then(|_| {
                self.family_of(fresh.handle).ok().and_then(|(_, f)| {
                    let cur = f.current(self.now());
                    f.versions.get(&cur)?.first().and_then(|o| rotation_due_at(&o.attrs))
                })
            }))
        });
        let detail = match period {
            Some(p) => format!("every {p}s"),
            None => "off".to_owned(),
        };
        self.finish(&c, r, detail)
    }

    /// Sets the minimum decryption version of the family of key `h`: from now on, its versions
    /// below `min` refuse every use (decrypt, unwrap and verify included). It only goes up, and
    /// never past the family's latest version. Audited as `key-min-decrypt-version`.
    ///
    /// # Errors
    /// `ArgumentsBad` for 0 or a version past the latest; `ActionProhibited` when it would go
    /// down or the caller may not manage the key.
    pub fn set_min_decrypt_version(&self, h: u64, min: u64) -> Result<()> {
        let _ = self.obj(h);
        let mut c = Call::new("key-min-decrypt-version");
        c.handle = Some(h);
        let r = self.precheck(&c).and_then(|()| {
            self.change_family(h, |a, fam| {
                if min == 0 || min > fam.latest() {
                    return Err(Error::ArgumentsBad(
                        "the minimum decryption version must be between 1 and the latest version",
                    ));
                }
                if a.ulong(AttrType::BulwarkMinDecryptVersion).unwrap_or(1) > min {
                    return Err(Error::ActionProhibited(
                        "the minimum decryption version can only go up",
                    ));
                }
                a.set_ulong(AttrType::BulwarkMinDecryptVersion, min);
                Ok(())
            })
        });
        self.finish(&c, r, format!("min v{min}"))
    }

    /// The gate's version check: a version below its family's minimum decryption version does
    /// nothing at all.
    #[allow(clippy::unused_self)] // a check of the gate, like the others
    pub(crate) fn check_version(&self, o: &Obj, _usage: Usage) -> Result<()> {
        let min = o.attrs.ulong(AttrType::BulwarkMinDecryptVersion).unwrap_or(1);
        if version_of(&o.attrs) < min {
            return Err(Error::KeyFunctionNotPermitted(
                "this key version is retired: it is below its family's minimum decryption \
                 version",
            ));
        }
        Ok(())
    }

    /// Makes every due automatic rotation of the keys the caller can see (a daemon may call
    /// this on a timer so that rotations happen on time even for unused keys). Returns how
    /// many families rotated.
    ///
    /// # Errors
    /// A store or audit failure.
    pub fn rotate_due_keys(&self) -> Result<u32> {
        let mut n = 0;
        for h in self.find_unaudited(&[])? {
            let Ok(o) = self.obj(h) else { continue };
            if is_key(&o.attrs)
                && matches!(o.attrs.class(), Some(ObjectClass::SecretKey | ObjectClass::PrivateKey))
                && self.rotate_if_due(&o)?
            {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_due_dates() {
        let mut a = Attributes::default();
        assert_eq!(version_of(&a), 1);
        assert_eq!(rotation_due_at(&a), None);
        a.set_ulong(AttrType::BulwarkRotationPeriod, 100);
        assert_eq!(rotation_due_at(&a), None, "no base date");
        a.set_ulong(AttrType::BulwarkRotatedAt, 1000);
        assert_eq!(rotation_due_at(&a), Some(1100));
        a.set_ulong(AttrType::BulwarkKeyVersion, 3);
        assert_eq!(version_of(&a), 3);
    }
}
