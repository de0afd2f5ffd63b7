//! The key hierarchy (DESIGN.md §3): master key, keyslots, object sealing, record
//! authentication and the anti-rollback generation MAC.
//!
//! ```text
//!   PIN ──Argon2id(salt)──> KEK ──AES-256-GCM──> wrapped MK   (one keyslot per user type)
//!   MK ──HKDF-SHA256(salt = store id)──┬─ "object-key" || uid ─> per-object AES-256-GCM key
//!                                      ├─ "record-mac"        ─> HMAC-SHA256 over every column
//!                                      ├─ "generation-mac"    ─> HMAC of settings and PIN tags
//!                                      ├─ "set-member"        ─> a row's share of the commitment
//!                                      └─ "state-seal"        ─> AES-256-GCM of the store state
//! ```
//!
//! The **store state** (generation, set commitment, object count) is sealed under the state
//! key. The set commitment is the XOR of one keyed PRF value per authenticated row (over the
//! row's table, key and MAC); since the commitment is only ever stored encrypted, an attacker
//! sees no PRF value and no difference of two, so no combination of deleted, inserted or
//! replayed rows can keep it unchanged except by chance (2^-256).
//!
//! ```text
//! ```
//! Nothing here touches the store; it turns secrets into sealed bytes and back, and says
//! "integrity" when bytes do not authenticate. The master key never leaves this module except
//! wrapped.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::{hkdf, hmac};

use crate::error::{Error, Result};
use crate::secret::{Key256, Pin, SecretBytes};
use crate::store::{KeyslotRow, ObjectRow, RecordRow};

/// Minimum and maximum PIN lengths (bytes).
pub const PIN_MIN: usize = 4;
/// See [`PIN_MIN`].
pub const PIN_MAX: usize = 255;

/// Argon2id cost parameters for a keyslot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// OWASP's Argon2id recommendation (19 MiB, 2 passes, 1 lane): about 20–40 ms here.
    fn default() -> Self {
        Self { m_cost: 19 * 1024, t_cost: 2, p_cost: 1 }
    }
}

/// The 256-bit master key. Never stored in plaintext; wiped on drop.
pub struct MasterKey(Key256);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl MasterKey {
    /// Wraps fresh random bytes as a master key.
    pub fn from_random(bytes: [u8; 32]) -> Self {
        Self(Key256::new(bytes))
    }

    fn derive(&self, store_uid: &[u8; 16], info: &[&[u8]]) -> Result<Key256> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, store_uid);
        let prk = salt.extract(self.0.expose_secret());
        let okm = prk.expand(info, hkdf::HKDF_SHA256).map_err(|_| Error::Internal("hkdf"))?;
        let mut out = [0u8; 32];
        okm.fill(&mut out).map_err(|_| Error::Internal("hkdf"))?;
        let k = Key256::new(out);
        zeroize::Zeroize::zeroize(&mut out);
        Ok(k)
    }
}

fn check_pin_len(pin: &Pin) -> Result<()> {
    if pin.len() < PIN_MIN || pin.len() > PIN_MAX {
        return Err(Error::PinLenRange { min: PIN_MIN, max: PIN_MAX });
    }
    Ok(())
}

fn pin_kek(pin: &Pin, salt: &[u8], p: KdfParams) -> Result<Key256> {
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(32))
        .map_err(|_| Error::Integrity("keyslot KDF parameters invalid"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(pin.expose_secret(), salt, &mut out)
        .map_err(|_| Error::Integrity("keyslot KDF failed"))?;
    let k = Key256::new(out);
    zeroize::Zeroize::zeroize(&mut out);
    Ok(k)
}

fn aead(key: &Key256) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key.expose_secret())
        .map(LessSafeKey::new)
        .map_err(|_| Error::Internal("aead key"))
}

fn seal(key: &Key256, nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let k = aead(key)?;
    let mut buf = plaintext.to_vec();
    k.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| Error::CryptoFailed)?;
    let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    zeroize::Zeroize::zeroize(&mut buf);
    Ok(out)
}

fn open(key: &Key256, aad: &[u8], sealed: &[u8]) -> Option<SecretBytes> {
    if sealed.len() < NONCE_LEN + 16 {
        return None;
    }
    let k = aead(key).ok()?;
    let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
    let mut buf = SecretBytes::from_slice(&sealed[NONCE_LEN..]);
    let n = k
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf.expose_secret_mut())
        .ok()?
        .len();
    Some(SecretBytes::from_slice(&buf.expose_secret()[..n]))
}

fn keyslot_aad(store_uid: &[u8; 16], user_type: u8) -> Vec<u8> {
    let mut aad = b"bulwark keyslot v1".to_vec();
    aad.extend_from_slice(store_uid);
    aad.push(user_type);
    aad
}

/// Wraps the master key under a PIN, producing a keyslot row. `salt` (16+ bytes) and `nonce`
/// come from the provider's RNG.
pub fn wrap_mk(
    mk: &MasterKey,
    pin: &Pin,
    store_uid: &[u8; 16],
    user_type: u8,
    params: KdfParams,
    salt: [u8; 16],
    nonce: [u8; NONCE_LEN],
) -> Result<KeyslotRow> {
    check_pin_len(pin)?;
    let kek = pin_kek(pin, &salt, params)?;
    let wrapped = seal(&kek, nonce, &keyslot_aad(store_uid, user_type), mk.0.expose_secret())?;
    Ok(KeyslotRow {
        user_type,
        salt: salt.to_vec(),
        m_cost: params.m_cost,
        t_cost: params.t_cost,
        p_cost: params.p_cost,
        wrapped_mk: wrapped,
        mac: Vec::new(),
    })
}

impl KdfParams {
    /// The costs a stored keyslot may carry. Values outside are refused before Argon2id runs:
    /// an attacker who edits the store must not be able to make each login attempt ruinous
    /// (gigabytes of memory, hours of passes). Editing the costs cannot weaken a slot (the
    /// wrapped master key only opens with the key derived under the original costs).
    pub fn check_bounds(self) -> Result<Self> {
        let ok = (1..=8).contains(&self.p_cost)
            && (8 * self.p_cost..=1024 * 1024).contains(&self.m_cost)
            && (1..=16).contains(&self.t_cost);
        if ok {
            Ok(self)
        } else {
            Err(Error::Integrity("keyslot KDF parameters out of bounds"))
        }
    }
}

/// Unwraps the master key with a PIN. A wrong PIN and a tampered keyslot look the same:
/// `PinIncorrect` (the keyslot is authenticated, so neither can yield a wrong key). KDF costs
/// outside [`KdfParams::check_bounds`] are an integrity error.
pub fn unwrap_mk(row: &KeyslotRow, pin: &Pin, store_uid: &[u8; 16]) -> Result<MasterKey> {
    let p = KdfParams { m_cost: row.m_cost, t_cost: row.t_cost, p_cost: row.p_cost };
    unwrap_mk_with(row, pin, store_uid, p.check_bounds()?)
}

/// [`unwrap_mk`] with the cost parameters checked by the caller (tests use tiny ones).
pub(crate) fn unwrap_mk_with(
    row: &KeyslotRow,
    pin: &Pin,
    store_uid: &[u8; 16],
    p: KdfParams,
) -> Result<MasterKey> {
    if pin.len() < PIN_MIN || pin.len() > PIN_MAX {
        return Err(Error::PinIncorrect);
    }
    let kek = pin_kek(pin, &row.salt, p)?;
    let mk = open(&kek, &keyslot_aad(store_uid, row.user_type), &row.wrapped_mk)
        .ok_or(Error::PinIncorrect)?;
    Key256::try_from_slice(mk.expose_secret()).map(MasterKey).ok_or(Error::PinIncorrect)
}

const STATE_MAGIC: &[u8; 4] = b"BWS3";
const STATE_LEN: usize = 4 + 8 + 32 + 8 + 1;

/// The authenticated store state, sealed in the store header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StoreState {
    /// Store generation (bumped by every authenticated write).
    pub generation: u64,
    /// XOR of every authenticated row's [`IntegrityKeys::set_member`].
    pub commitment: [u8; 32],
    /// Number of token objects.
    pub objects: u64,
    /// The store's tamper response is `zeroize` (sealed here too, so that deleting or forging
    /// the policy record cannot weaken the response to that very tampering).
    pub tamper_zeroize: bool,
}

/// The setting name under which anti-rollback marks are tagged ([`IntegrityKeys::mark_tag`]).
const MARK_TAG: &str = "anti-rollback-mark";

/// Keys that authenticate records and the store generation. They protect integrity only (no
/// confidentiality), so a token keeps them after logout to keep checking public objects.
pub struct IntegrityKeys {
    store_uid: [u8; 16],
    record: hmac::Key,
    generation: hmac::Key,
    set: hmac::Key,
    state: LessSafeKey,
}

impl std::fmt::Debug for IntegrityKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKeys([REDACTED])")
    }
}

/// The unlocked hierarchy: seals and opens object material.
pub struct Vault {
    store_uid: [u8; 16],
    mk: MasterKey,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault([REDACTED])")
    }
}

impl Vault {
    /// Unlocks the hierarchy with a master key.
    pub fn new(mk: MasterKey, store_uid: [u8; 16]) -> Self {
        Self { store_uid, mk }
    }

    /// The master key, for re-wrapping under a new PIN.
    pub fn master_key(&self) -> &MasterKey {
        &self.mk
    }

    /// Derives the integrity keys.
    pub fn integrity_keys(&self) -> Result<IntegrityKeys> {
        let r = self.mk.derive(&self.store_uid, &[b"bulwark record-mac v1"])?;
        let g = self.mk.derive(&self.store_uid, &[b"bulwark generation-mac v1"])?;
        let s = self.mk.derive(&self.store_uid, &[b"bulwark set-member v1"])?;
        let st = self.mk.derive(&self.store_uid, &[b"bulwark state-seal v1"])?;
        Ok(IntegrityKeys {
            store_uid: self.store_uid,
            record: hmac::Key::new(hmac::HMAC_SHA256, r.expose_secret()),
            generation: hmac::Key::new(hmac::HMAC_SHA256, g.expose_secret()),
            set: hmac::Key::new(hmac::HMAC_SHA256, s.expose_secret()),
            state: aead(&st)?,
        })
    }

    /// Seals an object's key material under its own derived key, bound to its uid.
    pub fn seal_secret(
        &self,
        uid: &[u8; 16],
        nonce: [u8; NONCE_LEN],
        material: &[u8],
    ) -> Result<Vec<u8>> {
        let k = self.mk.derive(&self.store_uid, &[b"bulwark object-key v1", uid])?;
        seal(&k, nonce, uid, material)
    }

    /// Seals a named value that is not an object (a user's TOTP secret, the audit key) under
    /// its own derived key, bound to `name`.
    pub fn seal_value(&self, name: &[u8], nonce: [u8; NONCE_LEN], value: &[u8]) -> Result<Vec<u8>> {
        let k = self.mk.derive(&self.store_uid, &[b"bulwark sealed-value v1", name])?;
        seal(&k, nonce, name, value)
    }

    /// Opens a value sealed with [`Vault::seal_value`] under the same name.
    pub fn open_value(&self, name: &[u8], sealed: &[u8]) -> Result<SecretBytes> {
        let k = self.mk.derive(&self.store_uid, &[b"bulwark sealed-value v1", name])?;
        open(&k, name, sealed).ok_or(Error::Integrity("sealed value does not authenticate"))
    }

    /// Opens sealed material; any change to the bytes, or bytes from another object, is an
    /// integrity failure.
    pub fn open_secret(&self, uid: &[u8; 16], sealed: &[u8]) -> Result<SecretBytes> {
        let k = self.mk.derive(&self.store_uid, &[b"bulwark object-key v1", uid])?;
        open(&k, uid, sealed).ok_or(Error::Integrity("object key material does not authenticate"))
    }
}

fn put(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&(field.len() as u64).to_be_bytes());
    buf.extend_from_slice(field);
}

impl IntegrityKeys {
    fn record_input(&self, r: &ObjectRow) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + r.attrs.len() + r.label.len());
        m.extend_from_slice(b"bulwark object v1");
        m.extend_from_slice(&self.store_uid);
        m.extend_from_slice(&r.handle.to_be_bytes());
        m.extend_from_slice(&r.uid);
        m.extend_from_slice(&r.class.to_be_bytes());
        put(&mut m, &r.label);
        put(&mut m, &r.ckaid);
        m.push(u8::from(r.private));
        put(&mut m, &r.attrs);
        match &r.secret {
            None => m.push(0),
            Some(s) => {
                m.push(1);
                put(&mut m, s);
            }
        }
        m
    }

    /// The MAC of an object row (every column but the MAC itself).
    pub fn record_mac(&self, r: &ObjectRow) -> Vec<u8> {
        hmac::sign(&self.record, &self.record_input(r)).as_ref().to_vec()
    }

    /// Checks an object row's MAC in constant time.
    pub fn verify_record(&self, r: &ObjectRow) -> Result<()> {
        hmac::verify(&self.record, &self.record_input(r), &r.mac)
            .map_err(|_| Error::Integrity("object record does not authenticate"))
    }

    fn gen_input(&self, generation: u64) -> Vec<u8> {
        let mut m = b"bulwark generation v1".to_vec();
        m.extend_from_slice(&self.store_uid);
        m.extend_from_slice(&generation.to_be_bytes());
        m
    }

    /// The MAC of a store generation.
    pub fn generation_mac(&self, generation: u64) -> Vec<u8> {
        hmac::sign(&self.generation, &self.gen_input(generation)).as_ref().to_vec()
    }

    /// Checks a store generation's MAC.
    pub fn verify_generation(&self, generation: u64, mac: &[u8]) -> Result<()> {
        hmac::verify(&self.generation, &self.gen_input(generation), mac)
            .map_err(|_| Error::Integrity("store generation does not authenticate"))
    }

    fn meta_input(&self, name: &str, value: &[u8]) -> Vec<u8> {
        let mut m = b"bulwark meta v1".to_vec();
        m.extend_from_slice(&self.store_uid);
        put(&mut m, name.as_bytes());
        put(&mut m, value);
        m
    }

    /// The MAC of a named store setting (tamper policy and similar metadata).
    pub fn meta_mac(&self, name: &str, value: &[u8]) -> Vec<u8> {
        hmac::sign(&self.generation, &self.meta_input(name, value)).as_ref().to_vec()
    }

    /// The tag of this store's anti-rollback mark at `generation` ([`crate::rollback`]).
    pub(crate) fn mark_tag(&self, generation: u64) -> [u8; 32] {
        let mut t = [0u8; 32];
        t.copy_from_slice(&self.meta_mac(MARK_TAG, &generation.to_be_bytes()));
        t
    }

    /// Checks the tag of an anti-rollback mark, in constant time.
    pub(crate) fn verify_mark(&self, generation: u64, tag: &[u8; 32]) -> Result<()> {
        self.verify_meta(MARK_TAG, &generation.to_be_bytes(), tag).map_err(|_| {
            Error::Integrity("the anti-rollback mark was altered (its tag does not authenticate)")
        })
    }

    /// Checks a named store setting's MAC.
    pub fn verify_meta(&self, name: &str, value: &[u8], mac: &[u8]) -> Result<()> {
        hmac::verify(&self.generation, &self.meta_input(name, value), mac)
            .map_err(|_| Error::Integrity("store setting does not authenticate"))
    }

    fn keyslot_input(&self, r: &KeyslotRow) -> Vec<u8> {
        let mut m = b"bulwark keyslot-row v1".to_vec();
        m.extend_from_slice(&self.store_uid);
        m.push(r.user_type);
        put(&mut m, &r.salt);
        m.extend_from_slice(&r.m_cost.to_be_bytes());
        m.extend_from_slice(&r.t_cost.to_be_bytes());
        m.extend_from_slice(&r.p_cost.to_be_bytes());
        put(&mut m, &r.wrapped_mk);
        m
    }

    /// The MAC of a keyslot row (every column but the MAC itself).
    pub fn keyslot_mac(&self, r: &KeyslotRow) -> Vec<u8> {
        hmac::sign(&self.record, &self.keyslot_input(r)).as_ref().to_vec()
    }

    /// Checks a keyslot row's MAC.
    pub fn verify_keyslot(&self, r: &KeyslotRow) -> Result<()> {
        hmac::verify(&self.record, &self.keyslot_input(r), &r.mac)
            .map_err(|_| Error::Integrity("keyslot does not authenticate"))
    }

    fn row_input(&self, kind: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + key.len() + value.len());
        m.extend_from_slice(b"bulwark record-row v1");
        m.extend_from_slice(&self.store_uid);
        put(&mut m, kind.as_bytes());
        put(&mut m, key);
        put(&mut m, value);
        m
    }

    /// The MAC of a record row.
    pub fn row_mac(&self, kind: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
        hmac::sign(&self.record, &self.row_input(kind, key, value)).as_ref().to_vec()
    }

    /// Checks a record row's MAC.
    pub fn verify_row(&self, r: &RecordRow) -> Result<()> {
        hmac::verify(&self.record, &self.row_input(&r.kind, &r.key, &r.value), &r.mac)
            .map_err(|_| Error::Integrity("store record does not authenticate"))
    }

    /// A row's share of the set commitment: a keyed PRF over the row's table, its address and
    /// its MAC (which covers its content). `table` is `b'k'`, `b'o'` or `b'r'`.
    pub fn set_member(&self, table: u8, address: &[u8], mac: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.set);
        ctx.update(&[table]);
        ctx.update(&(address.len() as u64).to_be_bytes());
        ctx.update(address);
        ctx.update(mac);
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn state_aad(&self) -> Vec<u8> {
        let mut aad = b"bulwark state v3".to_vec();
        aad.extend_from_slice(&self.store_uid);
        aad
    }

    /// Seals the store state.
    pub fn seal_state(&self, s: &StoreState, nonce: [u8; NONCE_LEN]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(STATE_LEN + 16);
        buf.extend_from_slice(STATE_MAGIC);
        buf.extend_from_slice(&s.generation.to_be_bytes());
        buf.extend_from_slice(&s.commitment);
        buf.extend_from_slice(&s.objects.to_be_bytes());
        buf.push(u8::from(s.tamper_zeroize));
        self.state
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.state_aad()),
                &mut buf,
            )
            .map_err(|_| Error::CryptoFailed)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens the sealed store state; anything that does not authenticate is an integrity error.
    pub fn open_state(&self, sealed: &[u8]) -> Result<StoreState> {
        let bad = Error::Integrity("store state does not authenticate");
        if sealed.len() != NONCE_LEN + STATE_LEN + 16 {
            return Err(bad);
        }
        let nonce: [u8; NONCE_LEN] =
            sealed[..NONCE_LEN].try_into().map_err(|_| Error::Internal("nonce"))?;
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let pt = self
            .state
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.state_aad()),
                &mut buf,
            )
            .map_err(|_| Error::Integrity("store state does not authenticate"))?;
        if pt.len() != STATE_LEN || &pt[..4] != STATE_MAGIC {
            return Err(bad);
        }
        let mut commitment = [0u8; 32];
        commitment.copy_from_slice(&pt[12..44]);
        Ok(StoreState {
            generation: u64::from_be_bytes(
                pt[4..12].try_into().map_err(|_| Error::Internal("state"))?,
            ),
            commitment,
            objects: u64::from_be_bytes(
                pt[44..52].try_into().map_err(|_| Error::Internal("state"))?,
            ),
            tamper_zeroize: pt[52] == 1,
        })
    }

    /// A keyed digest of a PIN, for constant-time re-login checks without Argon2id.
    pub fn pin_tag(&self, user_type: u8, pin: &Pin) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.record);
        ctx.update(b"bulwark pin-cache v1");
        ctx.update(&[user_type]);
        ctx.update(pin.expose_secret());
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams { m_cost: 64, t_cost: 1, p_cost: 1 };

    #[test]
    fn debug_of_key_holders_shows_no_key_bytes() {
        let raw = [0xA7u8; 32];
        let needle = hex::encode(raw);
        let v = Vault::new(MasterKey::from_random(raw), [4; 16]);
        let ik = v.integrity_keys().unwrap();
        for s in [
            format!("{:?}", v.master_key()),
            format!("{v:?}"),
            format!("{ik:?}"),
            format!("{v:#?}"),
        ] {
            assert!(s.contains("REDACTED"), "{s}");
            assert!(!s.contains(&needle) && !s.contains("167"), "{s}");
        }
    }

    #[test]
    fn keyslot_round_trip_and_wrong_pin() {
        let mk = MasterKey::from_random([7; 32]);
        let uid = [1; 16];
        let pin = Pin::new(b"1234".to_vec());
        let row = wrap_mk(&mk, &pin, &uid, 1, FAST, [2; 16], [3; 12]).unwrap();
        let back = unwrap_mk(&row, &pin, &uid).unwrap();
        assert_eq!(back.0.expose_secret(), mk.0.expose_secret());
        assert!(matches!(
            unwrap_mk(&row, &Pin::new(b"1235".to_vec()), &uid),
            Err(Error::PinIncorrect)
        ));
        // A keyslot moved to another store or user type does not open.
        assert!(unwrap_mk(&row, &pin, &[9; 16]).is_err());
        let mut moved = row.clone();
        moved.user_type = 0;
        assert!(unwrap_mk(&moved, &pin, &uid).is_err());
        assert!(matches!(
            wrap_mk(&mk, &Pin::new(b"12".to_vec()), &uid, 1, FAST, [2; 16], [3; 12]),
            Err(Error::PinLenRange { .. })
        ));
    }

    #[test]
    fn sealed_material_is_bound_to_uid() {
        let v = Vault::new(MasterKey::from_random([5; 32]), [4; 16]);
        let s = v.seal_secret(&[1; 16], [0; 12], b"secret key bytes").unwrap();
        assert_eq!(v.open_secret(&[1; 16], &s).unwrap().expose_secret(), b"secret key bytes");
        assert!(matches!(v.open_secret(&[2; 16], &s), Err(Error::Integrity(_))));
        let mut t = s.clone();
        t[20] ^= 1;
        assert!(v.open_secret(&[1; 16], &t).is_err());
    }

    #[test]
    fn record_mac_covers_every_field() {
        type Edit = Box<dyn Fn(&mut ObjectRow)>;
        let v = Vault::new(MasterKey::from_random([5; 32]), [4; 16]);
        let ik = v.integrity_keys().unwrap();
        let mut r = ObjectRow {
            handle: 7,
            uid: [1; 16],
            class: 4,
            label: b"k".to_vec(),
            ckaid: vec![1],
            private: true,
            attrs: vec![1, 2, 3],
            secret: Some(vec![9; 40]),
            mac: Vec::new(),
        };
        r.mac = ik.record_mac(&r);
        ik.verify_record(&r).unwrap();
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.handle = 8),
            Box::new(|r| r.uid[0] = 2),
            Box::new(|r| r.class = 3),
            Box::new(|r| r.label = b"j".to_vec()),
            Box::new(|r| r.ckaid = vec![]),
            Box::new(|r| r.private = false),
            Box::new(|r| r.attrs[0] = 0),
            Box::new(|r| r.secret = None),
            Box::new(|r| r.mac[0] ^= 1),
        ];
        for (i, e) in edits.iter().enumerate() {
            let mut t = r.clone();
            e(&mut t);
            assert!(matches!(ik.verify_record(&t), Err(Error::Integrity(_))), "edit {i}");
        }
        let g = ik.generation_mac(5);
        ik.verify_generation(5, &g).unwrap();
        assert!(ik.verify_generation(4, &g).is_err());
    }
}
