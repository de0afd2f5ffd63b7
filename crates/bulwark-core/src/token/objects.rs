//! Object management: create, find, read attributes, modify, copy, destroy.
//!
//! Every token object served is checked against its record MAC (once the token has been
//! unlocked in this process); a record that does not authenticate is an integrity error and is
//! never served. Private objects are invisible until the normal user logs in.

use std::sync::Arc;

use super::destruction::DestroyOutcome;
use super::{
    read, write, Material, Obj, SessionId, Token, SESSION_HANDLE_BASE, SESSION_HANDLE_END,
};
use crate::attr::{AttrType, AttrValue, Attributes, KeyType, ObjectClass};
use crate::crypto::{KeyMaterial, KeySpec, PrivateComponents, PublicKey};
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use crate::store::{ObjectRow, Store};
use crate::template::{self, CreateKind, Template};

/// A caller's view of one object: handle and (non-secret) attributes.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// Object handle.
    pub handle: u64,
    /// All stored attributes (never key material).
    pub attrs: Attributes,
}

/// Whether an attribute set is a key's (secret, private or public).
pub(crate) fn is_key(a: &Attributes) -> bool {
    matches!(
        a.class(),
        Some(ObjectClass::PrivateKey | ObjectClass::SecretKey | ObjectClass::PublicKey)
    )
}

/// The key spec of a key object, from its attributes.
pub(crate) fn spec_of(a: &Attributes) -> Result<KeySpec> {
    let bad = Error::Integrity("key attributes inconsistent");
    match (a.class(), a.key_type()) {
        (Some(ObjectClass::SecretKey), Some(KeyType::Aes)) => {
            Ok(KeySpec::Aes { bytes: a.ulong(AttrType::ValueLen).ok_or(bad)? as usize })
        }
        (Some(ObjectClass::SecretKey), Some(KeyType::GenericSecret | KeyType::Hkdf)) => {
            Ok(KeySpec::GenericSecret { bytes: a.ulong(AttrType::ValueLen).ok_or(bad)? as usize })
        }
        (Some(ObjectClass::PrivateKey | ObjectClass::PublicKey), Some(_)) => {
            let spki = a.bytes(AttrType::PublicKeyInfo).ok_or(bad)?;
            Ok(PublicKey::from_spki_der(spki)?.spec())
        }
        _ => Err(Error::KeyTypeInconsistent),
    }
}

/// Records the public values of a key pair in its attribute sets.
pub(crate) fn fill_public(a: &mut Attributes, pk: &PublicKey, public_object: bool) {
    a.set_bytes(AttrType::PublicKeyInfo, pk.spki_der().to_vec());
    if let (Some(n), Some(e)) = (pk.rsa_modulus(), pk.rsa_public_exponent()) {
        a.set_bytes(AttrType::Modulus, n.to_vec());
        a.set_bytes(AttrType::PublicExponent, e.to_vec());
        if public_object {
            a.set_ulong(AttrType::ModulusBits, (n.len() * 8) as u64);
        }
    }
    if public_object {
        if let Some(p) = pk.ec_point_der() {
            a.set_bytes(AttrType::EcPoint, p);
        } else if matches!(pk.spec(), KeySpec::MlDsa(_) | KeySpec::MlKem(_)) {
            a.set_bytes(AttrType::Value, pk.raw().to_vec());
        }
    }
}

impl<S: Store> Token<S> {
    pub(super) fn decode_row(&self, row: ObjectRow) -> Result<Obj> {
        let verified = match self.integrity() {
            Some(ik) => {
                ik.verify_record(&row)?;
                true
            }
            None => false,
        };
        let attrs = Attributes::decode(&row.attrs)?;
        // The indexed copies must agree with the authenticated attribute record.
        if attrs.class().map(ObjectClass::to_raw) != Some(row.class)
            || attrs.bytes(AttrType::Label).unwrap_or_default() != row.label.as_slice()
            || attrs.bytes(AttrType::Id).unwrap_or_default() != row.ckaid.as_slice()
            || attrs.bool_or(AttrType::Private, true) != row.private
        {
            return Err(Error::Integrity("object index columns disagree with the record"));
        }
        Ok(Obj {
            handle: row.handle,
            uid: row.uid,
            attrs,
            material: row.secret.map_or(Material::None, Material::Sealed),
            mac: row.mac,
            session: None,
            login: 0,
            verified,
        })
    }

    /// The object behind a handle, verified, if the caller may see it.
    pub(crate) fn obj(&self, h: u64) -> Result<Arc<Obj>> {
        self.obj_at(h, None)
    }

    /// [`Token::obj`]; with `seen`, the store's change counter as this call's pre-check read
    /// it, which then stands for the check (see [`Token::sync_to`]).
    pub(crate) fn obj_at(&self, h: u64, seen: Option<u64>) -> Result<Arc<Obj>> {
        let o = self.obj_any_at(h, seen)?;
        // A key whose destruction was scheduled is gone for every ordinary caller.
        if Self::is_hidden(&o) {
            return Err(Error::ObjectHandleInvalid);
        }
        Ok(o)
    }

    /// [`Token::obj`] including keys whose destruction is scheduled (destruction.rs only).
    pub(crate) fn obj_any(&self, h: u64) -> Result<Arc<Obj>> {
        self.obj_any_at(h, None)
    }

    fn obj_any_at(&self, h: u64, seen: Option<u64>) -> Result<Arc<Obj>> {
        let o = if h >= SESSION_HANDLE_BASE {
            read(&self.session_objects).get(&h).cloned().ok_or(Error::ObjectHandleInvalid)?
        } else {
            match seen {
                Some(now) => self.sync_to(now),
                None => self.sync()?,
            }
            let cached = read(&self.cache).objects.get(&h).cloned();
            match cached {
                Some(o) if o.verified || self.integrity().is_none() => o,
                _ => {
                    let row = self.store.object(h)?.ok_or(Error::ObjectHandleInvalid)?;
                    let o = Arc::new(self.decode_row(row)?);
                    write(&self.cache).objects.insert(h, o.clone());
                    o
                }
            }
        };
        if !self.may_see(&self.who(), &o) {
            return Err(Error::ObjectHandleInvalid);
        }
        Ok(o)
    }

    /// `C_FindObjects`: handles of every visible object matching `t`, token objects first.
    pub(super) fn find_unaudited(&self, t: &Template) -> Result<Vec<u64>> {
        self.sync()?;
        let get = |a: AttrType| t.iter().find(|(k, _)| *k == a).map(|(_, v)| v);
        let class = match get(AttrType::Class) {
            Some(AttrValue::Ulong(c)) => Some(*c),
            _ => None,
        };
        let label = match get(AttrType::Label) {
            Some(AttrValue::Bytes(b)) => Some(b.as_slice()),
            _ => None,
        };
        let ckaid = match get(AttrType::Id) {
            Some(AttrValue::Bytes(b)) => Some(b.as_slice()),
            _ => None,
        };
        let wants_session_only = matches!(get(AttrType::Token), Some(AttrValue::Bool(false)));
        let w = self.who();
        let mut out = Vec::new();
        if !wants_session_only {
            for row in self.store.find(class, label, ckaid)? {
                let h = row.handle;
                // Bind the cached entry first: a read guard held across the match would
                // deadlock with the write below.
                let cached = read(&self.cache).objects.get(&h).cloned();
                let o = match cached {
                    Some(o) if o.mac == row.mac && (o.verified || self.integrity().is_none()) => o,
                    _ => {
                        let o = Arc::new(self.decode_row(row)?);
                        write(&self.cache).objects.insert(h, o.clone());
                        o
                    }
                };
                if o.attrs.matches(t) && self.may_see(&w, &o) && !Self::is_hidden(&o) {
                    out.push(h);
                }
            }
        }
        let mut session: Vec<u64> = read(&self.session_objects)
            .values()
            .filter(|o| o.attrs.matches(t) && self.may_see(&w, o))
            .map(|o| o.handle)
            .collect();
        session.sort_unstable();
        out.extend(session);
        Ok(out)
    }

    /// Visible key objects with this label (any class), for the CLI.
    pub fn find_by_label(&self, label: &str) -> Result<Vec<ObjectInfo>> {
        let t = [(AttrType::Label, AttrValue::Bytes(label.as_bytes().to_vec()))];
        self.find(&t)?.into_iter().map(|h| self.object_info(h)).collect()
    }

    /// Every visible object.
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        self.find(&[])?.into_iter().map(|h| self.object_info(h)).collect()
    }

    /// Handle and attributes of one object.
    pub fn object_info(&self, h: u64) -> Result<ObjectInfo> {
        let o = self.obj(h)?;
        Ok(ObjectInfo { handle: h, attrs: o.attrs.clone() })
    }

    /// `C_GetAttributeValue` for one attribute. Secret components are `AttributeSensitive`
    /// unless the key is both non-sensitive and extractable (then CKA_VALUE of a secret key is
    /// returned); an attribute the object does not have is `AttributeTypeInvalid`.
    pub(super) fn attribute_unaudited(&self, h: u64, t: AttrType) -> Result<AttrValue> {
        let o = self.obj(h)?;
        let class = o.attrs.class();
        let is_secret_obj = matches!(class, Some(ObjectClass::SecretKey | ObjectClass::PrivateKey));
        if is_secret_obj && t.is_secret_component() {
            let sensitive = o.attrs.bool_or(AttrType::Sensitive, true);
            let extractable = o.attrs.bool_or(AttrType::Extractable, false);
            if sensitive
                || !extractable
                || class != Some(ObjectClass::SecretKey)
                || t != AttrType::Value
            {
                return Err(Error::AttributeSensitive(t));
            }
            let m = self.material(&o)?;
            return Ok(AttrValue::Bytes(m.expose_secret().to_vec()));
        }
        if t == AttrType::BulwarkUseCount && is_key(&o.attrs) {
            // Computed from the key's counter record (usepolicy.rs), never stored.
            return Ok(AttrValue::Ulong(self.use_count(&o)?.uses));
        }
        if t == AttrType::BulwarkState && is_key(&o.attrs) {
            // The state now (dates applied); a key without a stored state is active.
            let state = crate::lifecycle::Lifecycle::of(&o.attrs)?.state_at(self.now());
            return Ok(AttrValue::Ulong(state.to_raw()));
        }
        if t == AttrType::BulwarkKeyVersion && is_key(&o.attrs) {
            return Ok(AttrValue::Ulong(super::versions::version_of(&o.attrs)));
        }
        o.attrs.get(t).cloned().ok_or(Error::AttributeTypeInvalid(t.to_raw()))
    }

    /// The plaintext key material of an object (inside the boundary only).
    pub(crate) fn material(&self, o: &Obj) -> Result<KeyMaterial> {
        let spec = spec_of(&o.attrs)?;
        match &o.material {
            Material::None
                if !crate::lifecycle::Lifecycle::of(&o.attrs)?.state_at(0).has_material() =>
            {
                Err(Error::KeyFunctionNotPermitted("key is destroyed: its material is gone"))
            }
            Material::None => Err(Error::KeyTypeInconsistent),
            Material::Plain(m) => {
                Ok(KeyMaterial::new(m.spec(), SecretBytes::from_slice(m.expose_secret())))
            }
            Material::Sealed(s) => {
                let (vault, _) = self.require_vault()?;
                Ok(KeyMaterial::new(spec, vault.open_secret(&o.uid, s)?))
            }
        }
    }

    /// Stores a new object (token or session per its CKA_TOKEN) and returns its handle, after
    /// the gate's creation check. A token object made from another one (`inherit`: the uid of
    /// the copied, base or unwrapping key) gets that object's grants in the same write.
    pub(crate) fn insert(
        &self,
        attrs: Attributes,
        material: Option<KeyMaterial>,
        session: SessionId,
        inherit: Option<[u8; 16]>,
    ) -> Result<u64> {
        self.provider.check()?;
        let w = self.who();
        self.check_create(&w, &attrs)?;
        let private = attrs.bool_or(AttrType::Private, true);
        let mut uid = [0u8; 16];
        self.provider.random(&mut uid)?;
        let mut attrs = attrs;
        crate::lifecycle::Lifecycle::for_new(&mut attrs)?;
        attrs.set_bytes(AttrType::UniqueId, hex::encode(uid).into_bytes());
        if !attrs.bool_or(AttrType::Token, false) {
            let h = self.next_session_handle();
            if h >= SESSION_HANDLE_END {
                // Handles are never reused; 2^31 session objects in one process is the end.
                return Err(Error::Internal("session object handles exhausted"));
            }
            let o = Obj {
                handle: h,
                uid,
                attrs,
                material: material.map_or(Material::None, Material::Plain),
                mac: Vec::new(),
                session: Some(session),
                login: w.login,
                verified: true,
            };
            write(&self.session_objects).insert(h, Arc::new(o));
            return Ok(h);
        }
        let (vault, ik) = self.require_vault()?;
        let secret = match &material {
            Some(m) => {
                let mut nonce = [0u8; 12];
                self.provider.random(&mut nonce)?;
                Some(vault.seal_secret(&uid, nonce, m.expose_secret())?)
            }
            None => None,
        };
        let row = ObjectRow {
            handle: 0,
            uid,
            class: attrs.ulong(AttrType::Class).unwrap_or(0),
            label: attrs.bytes(AttrType::Label).unwrap_or_default().to_vec(),
            ckaid: attrs.bytes(AttrType::Id).unwrap_or_default().to_vec(),
            private,
            attrs: attrs.encode(),
            secret,
            mac: Vec::new(),
        };
        // Creations from several sessions at once share one commit.
        self.write_grouped(&ik, move |a| {
            let h = a.insert_object(&row)?;
            if let Some(from) = &inherit {
                Self::copy_grants(a, from, &uid)?;
            }
            Ok(h)
        })
    }

    /// `C_CreateObject`: imports a data object, certificate, public key or secret key.
    pub(super) fn create_object_unaudited(&self, t: &Template, session: SessionId) -> Result<u64> {
        let (mut attrs, kind) = template::object_for_create(t)?;
        let value = t.iter().find(|(k, _)| *k == AttrType::Value).map(|(_, v)| v);
        let material = match kind {
            CreateKind::Plain => None,
            CreateKind::SecretKey(spec) => {
                let Some(AttrValue::Bytes(v)) = value else {
                    return Err(Error::TemplateIncomplete(AttrType::Value));
                };
                Some(self.provider.import_secret(spec, v)?)
            }
            CreateKind::PublicKey => {
                let pk = public_from_template(&attrs)?;
                fill_public(&mut attrs, &pk, true);
                None
            }
            CreateKind::PrivateKey => {
                let g =
                    self.provider.import_private_components(&private_from_template(t, &attrs)?)?;
                let pk = g.public.ok_or(Error::Internal("imported key without public key"))?;
                fill_public(&mut attrs, &pk, false);
                Some(g.material)
            }
        };
        self.insert(attrs, material, session, None)
    }

    /// `C_DestroyObject`: a token key is scheduled when the store's destruction wait is not 0
    /// (destruction.rs); everything else goes at once.
    pub(super) fn destroy_object_unaudited(&self, h: u64) -> Result<DestroyOutcome> {
        let o = self.obj(h)?;
        self.check_manage(&self.who(), &o)?;
        if !o.attrs.bool_or(AttrType::Destroyable, true) {
            return Err(Error::ActionProhibited("object is not destroyable"));
        }
        if let Some(scheduled) = self.schedule_destroy(&o)? {
            return Ok(scheduled);
        }
        if o.session.is_some() {
            write(&self.session_objects).remove(&h);
        } else {
            let (_, ik) = self.require_vault()?;
            let gone = self.write(&ik, |a| {
                let gone = a.delete_object(h)?;
                if gone.is_some() {
                    Self::drop_grants(a, &o.uid)?;
                    Self::drop_use_count(a, &o.uid)?;
                }
                Ok(gone)
            })?;
            if gone.is_none() {
                return Err(Error::ObjectHandleInvalid);
            }
            self.acl_forget();
        }
        let mut c = write(&self.cache);
        c.objects.remove(&h);
        c.keys.remove(&h);
        Ok(DestroyOutcome::Destroyed)
    }

    /// `C_SetAttributeValue`.
    pub(super) fn set_attributes_unaudited(&self, h: u64, changes: &Template) -> Result<()> {
        let o = self.obj(h)?;
        let w = self.who();
        self.check_manage(&w, &o)?;
        self.check_trusted_change(&w, changes)?;
        let next = template::apply_changes(&o.attrs, changes, false)?;
        self.replace(&o, next)
    }

    fn replace(&self, o: &Obj, attrs: Attributes) -> Result<()> {
        if let Some(s) = o.session {
            let material = match &o.material {
                Material::Plain(m) => Material::Plain(KeyMaterial::new(
                    m.spec(),
                    SecretBytes::from_slice(m.expose_secret()),
                )),
                _ => Material::None,
            };
            let n = Obj {
                handle: o.handle,
                uid: o.uid,
                attrs,
                material,
                mac: Vec::new(),
                session: Some(s),
                login: o.login,
                verified: true,
            };
            write(&self.session_objects).insert(o.handle, Arc::new(n));
            return Ok(());
        }
        let (_, ik) = self.require_vault()?;
        let row = row_of(o, &attrs);
        self.write(&ik, |a| a.update_object(&row))?;
        let mut c = write(&self.cache);
        c.objects.remove(&o.handle);
        c.keys.remove(&o.handle);
        Ok(())
    }

    /// `C_CopyObject`.
    pub(super) fn copy_object_unaudited(
        &self,
        h: u64,
        t: &Template,
        session: SessionId,
    ) -> Result<u64> {
        let o = self.obj(h)?;
        let w = self.who();
        // Copying needs the right to manage the source: a copy is a new object its maker
        // controls, so whoever may only use a key must not be able to copy it.
        self.check_manage(&w, &o)?;
        self.check_trusted_change(&w, t)?;
        if Self::is_metered(&o) {
            // A copy would start its own count: the quota would mean nothing.
            return Err(Error::ActionProhibited("a key under a usage limit cannot be copied"));
        }
        let mut attrs = template::apply_changes(&o.attrs, t, true)?;
        check_copy_tightens(&o.attrs, &attrs)?;
        attrs.remove(AttrType::UniqueId);
        // A copy is a key of its own, not a version of its source's family (its version number
        // and minimum decryption version stay: a retired version's copy stays retired).
        for t in [
            AttrType::BulwarkKeyFamily,
            AttrType::BulwarkRotationPeriod,
            AttrType::BulwarkRotatedAt,
        ] {
            attrs.remove(t);
        }
        let material = match o.material {
            Material::None => None,
            _ => Some(self.material(&o)?),
        };
        let inherit = if o.session.is_none() { Some(o.uid) } else { None };
        self.insert(attrs, material, session, inherit)
    }

    /// Marks every token key object labelled `label` that can wrap (public and secret keys)
    /// CKA_TRUSTED, or not; returns how many changed. Security officer only. The officer acts on
    /// this one attribute of keys it may otherwise neither see nor use: that is what lets a
    /// store demand trusted wrapping keys while its keys stay private to their users.
    pub(super) fn set_trusted_unaudited(&self, label: &str, trusted: bool) -> Result<u32> {
        if self.who().role != Some(crate::kernel::Role::SecurityOfficer) {
            return Err(Error::ActionProhibited("only the security officer marks keys trusted"));
        }
        self.require_vault()?;
        self.sync()?;
        let mut n = 0;
        for row in self.store.find(None, Some(label.as_bytes()), None)? {
            let o = self.decode_row(row)?;
            if !matches!(o.attrs.class(), Some(ObjectClass::PublicKey | ObjectClass::SecretKey)) {
                continue;
            }
            let mut attrs = o.attrs.clone();
            attrs.set_bool(AttrType::Trusted, trusted);
            self.replace(&o, attrs)?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::NotFound(label.to_owned()));
        }
        Ok(n)
    }

    /// Destroys the session objects of a closed session.
    pub fn close_session(&self, session: SessionId) {
        write(&self.session_objects).retain(|_, o| o.session != Some(session));
    }
}

/// The store row of token object `o` with new attributes (its sealed material kept).
fn row_of(o: &Obj, attrs: &Attributes) -> ObjectRow {
    ObjectRow {
        handle: o.handle,
        uid: o.uid,
        class: attrs.ulong(AttrType::Class).unwrap_or(0),
        label: attrs.bytes(AttrType::Label).unwrap_or_default().to_vec(),
        ckaid: attrs.bytes(AttrType::Id).unwrap_or_default().to_vec(),
        private: attrs.bool_or(AttrType::Private, true),
        attrs: attrs.encode(),
        secret: match &o.material {
            Material::Sealed(s) => Some(s.clone()),
            _ => None,
        },
        mac: Vec::new(),
    }
}

/// A copy never grants more than its source: usage flags only go from true to false, the
/// allowed-mechanism list only shrinks, SENSITIVE / PRIVATE only become true, EXTRACTABLE /
/// COPYABLE / MODIFIABLE / DESTROYABLE only become false, and CKA_TRUSTED is never gained
/// (only the security officer sets it, on the object itself). An unmodifiable source lets a
/// copy change nothing but CKA_TOKEN and those tightenings.
fn check_copy_tightens(src: &Attributes, copy: &Attributes) -> Result<()> {
    const NO_GAIN: &[AttrType] = &[
        AttrType::Sign,
        AttrType::Verify,
        AttrType::Encrypt,
        AttrType::Decrypt,
        AttrType::Wrap,
        AttrType::Unwrap,
        AttrType::Derive,
        AttrType::SignRecover,
        AttrType::VerifyRecover,
        AttrType::Encapsulate,
        AttrType::Decapsulate,
        AttrType::Extractable,
        AttrType::Copyable,
        AttrType::Modifiable,
        AttrType::Destroyable,
        AttrType::Trusted,
    ];
    const NO_LOSS: &[AttrType] =
        &[AttrType::Sensitive, AttrType::Private, AttrType::WrapWithTrusted];
    for t in NO_GAIN {
        if copy.bool(*t) == Some(true) && src.bool(*t) != Some(true) {
            return Err(Error::AttributeReadOnly(*t));
        }
    }
    for t in NO_LOSS {
        if copy.bool(*t) == Some(false) && src.bool(*t) == Some(true) {
            return Err(Error::AttributeReadOnly(*t));
        }
    }
    if let Some(AttrValue::MechanismList(s)) = src.get(AttrType::AllowedMechanisms) {
        if !s.is_empty() {
            let narrower = match copy.get(AttrType::AllowedMechanisms) {
                Some(AttrValue::MechanismList(c)) => {
                    !c.is_empty() && c.iter().all(|m| s.contains(m))
                }
                _ => false,
            };
            if !narrower {
                return Err(Error::AttributeReadOnly(AttrType::AllowedMechanisms));
            }
        }
    }
    if !src.bool_or(AttrType::Modifiable, true) {
        for (t, v) in copy.iter() {
            let may_differ = matches!(
                t,
                AttrType::Token
                    | AttrType::Private
                    | AttrType::Modifiable
                    | AttrType::Destroyable
                    | AttrType::Copyable
                    | AttrType::UniqueId
            ) || NO_GAIN.contains(&t)
                || NO_LOSS.contains(&t);
            if !may_differ && src.get(t) != Some(v) {
                return Err(Error::AttributeReadOnly(t));
            }
        }
    }
    Ok(())
}

/// The private components of a `C_CreateObject` private-key template.
fn private_from_template<'a>(t: &'a Template, a: &Attributes) -> Result<PrivateComponents<'a>> {
    let get = |k: AttrType| match t.iter().find(|(x, _)| *x == k) {
        Some((_, AttrValue::Bytes(b))) => Ok(b.as_slice()),
        _ => Err(Error::TemplateIncomplete(k)),
    };
    match a.key_type() {
        Some(KeyType::Rsa) => Ok(PrivateComponents::Rsa {
            n: get(AttrType::Modulus)?,
            e: get(AttrType::PublicExponent)?,
            d: get(AttrType::PrivateExponent)?,
            p: get(AttrType::Prime1)?,
            q: get(AttrType::Prime2)?,
            dp: get(AttrType::Exponent1)?,
            dq: get(AttrType::Exponent2)?,
            qinv: get(AttrType::Coefficient)?,
        }),
        Some(KeyType::Ec | KeyType::EcEdwards | KeyType::EcMontgomery) => {
            let spec = match a.bytes(AttrType::EcParams) {
                Some(p) => template::ec_params_to_spec(p)?,
                None if a.key_type() == Some(KeyType::EcEdwards) => KeySpec::Ed25519,
                None if a.key_type() == Some(KeyType::EcMontgomery) => KeySpec::X25519,
                None => return Err(Error::TemplateIncomplete(AttrType::EcParams)),
            };
            let v = get(AttrType::Value)?;
            match (a.key_type(), spec) {
                (Some(KeyType::Ec), KeySpec::Ec(curve)) => {
                    Ok(PrivateComponents::Ec { curve, scalar: v })
                }
                (Some(KeyType::EcEdwards), KeySpec::Ed25519) => {
                    Ok(PrivateComponents::Ed25519 { seed: v })
                }
                (Some(KeyType::EcMontgomery), KeySpec::X25519) => {
                    Ok(PrivateComponents::X25519 { scalar: v })
                }
                _ => Err(Error::TemplateInconsistent("CKA_EC_PARAMS does not fit CKA_KEY_TYPE")),
            }
        }
        _ => {
            Err(Error::NotSupported("plaintext import of this private key type: unwrap it instead"))
        }
    }
}

fn public_from_template(a: &Attributes) -> Result<PublicKey> {
    if let Some(spki) = a.bytes(AttrType::PublicKeyInfo) {
        return PublicKey::from_spki_der(spki);
    }
    match a.key_type() {
        Some(KeyType::Rsa) => PublicKey::from_rsa(
            a.bytes(AttrType::Modulus).ok_or(Error::TemplateIncomplete(AttrType::Modulus))?,
            a.bytes(AttrType::PublicExponent)
                .ok_or(Error::TemplateIncomplete(AttrType::PublicExponent))?,
        ),
        Some(KeyType::Ec | KeyType::EcEdwards | KeyType::EcMontgomery) => {
            let params =
                a.bytes(AttrType::EcParams).ok_or(Error::TemplateIncomplete(AttrType::EcParams))?;
            let spec = template::ec_params_to_spec(params)?;
            let point =
                a.bytes(AttrType::EcPoint).ok_or(Error::TemplateIncomplete(AttrType::EcPoint))?;
            // CKA_EC_POINT is a DER OCTET STRING; accept a raw point too.
            let raw = match point {
                [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
                [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
                _ => point,
            };
            PublicKey::from_parts(spec, raw)
                .map_err(|_| Error::AttributeValueInvalid(AttrType::EcPoint))
        }
        _ => Err(Error::TemplateInconsistent("unsupported public key type")),
    }
}
