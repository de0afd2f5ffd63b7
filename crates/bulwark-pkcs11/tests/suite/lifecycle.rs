//! Key lifecycle states through PKCS#11 (docs/lifecycle.md, docs/pkcs11.md), on embedded and
//! remote slots: the state is the read-only vendor attribute `CKA_BULWARK_STATE`; the
//! activation, protect-stop and deactivation dates are vendor attributes a key may be given at
//! creation and never changed with `C_SetAttributeValue`; a use the state refuses is
//! `CKR_KEY_FUNCTION_NOT_PERMITTED`, while a deactivated key still verifies and decrypts.

use crate::common::{self, rv, user_session};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};
use cryptoki::session::Session;

const CKA_BULWARK_STATE: u64 = 0xC257_0001;
const CKA_BULWARK_ACTIVATION_DATE: u64 = 0xC257_0002;
const CKA_BULWARK_DEACTIVATION_DATE: u64 = 0xC257_0004;
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const YEAR: u64 = 365 * 86_400;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn vendor(t: u64, v: u64) -> Attribute {
    let t = cryptoki::types::Ulong::from(t);
    Attribute::VendorDefined((AttributeType::VendorDefined(*t), v.to_ne_bytes().to_vec()))
}

fn state(s: &Session, h: ObjectHandle) -> u64 {
    let t = AttributeType::VendorDefined(CKA_BULWARK_STATE);
    match s.get_attributes(h, &[t]).unwrap().as_slice() {
        [Attribute::VendorDefined((_, v))] => u64::from_ne_bytes(v.as_slice().try_into().unwrap()),
        other => panic!("CKA_BULWARK_STATE: {other:?}"),
    }
}

fn aes(s: &Session, extra: &[Attribute]) -> cryptoki::error::Result<ObjectHandle> {
    let mut t = vec![
        Attribute::Token(true),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    t.extend_from_slice(extra);
    s.generate_key(&Mechanism::AesKeyGen, &t)
}

pub fn key_lifecycle_states() {
    if common::is_softhsm() {
        return; // Bulwark's vendor attributes.
    }
    let (_slot, s) = user_session();
    let mut iv = [7u8; 12];
    let gcm = Mechanism::AesGcm(
        cryptoki::mechanism::aead::GcmParams::new(&mut iv, &[], 128.into()).unwrap(),
    );

    // A key made without lifecycle attributes reads active and works as before.
    let plain = aes(&s, &[]).unwrap();
    assert_eq!(state(&s, plain), 2, "active (KMIP value)");
    s.encrypt(&gcm, plain, b"x").unwrap();

    // Activation a year away: pre-activation, every use refused.
    let later = aes(&s, &[vendor(CKA_BULWARK_ACTIVATION_DATE, now() + YEAR)]).unwrap();
    assert_eq!(state(&s, later), 1, "pre-activation");
    assert_eq!(rv(s.encrypt(&gcm, later, b"x")), RvError::KeyFunctionNotPermitted);
    assert_eq!(rv(s.decrypt(&gcm, later, &[0u8; 32])), RvError::KeyFunctionNotPermitted);

    // Activated and deactivated in the past: deactivated by the dates alone. It no longer
    // protects, but processes: a decrypt reaches the cipher (and fails on garbage there).
    let dates = [
        vendor(CKA_BULWARK_ACTIVATION_DATE, now() - 2 * YEAR),
        vendor(CKA_BULWARK_DEACTIVATION_DATE, now() - YEAR),
    ];
    let old = aes(&s, &dates).unwrap();
    assert_eq!(state(&s, old), 3, "deactivated");
    assert_eq!(rv(s.encrypt(&gcm, old, b"x")), RvError::KeyFunctionNotPermitted);
    assert_ne!(rv(s.decrypt(&gcm, old, &[0u8; 32])), RvError::KeyFunctionNotPermitted);

    // An EC pair, both halves deactivated: no signing, verification still runs.
    let mut pub_t =
        vec![Attribute::Token(true), Attribute::EcParams(P256.to_vec()), Attribute::Verify(true)];
    pub_t.extend_from_slice(&dates);
    let mut priv_t = vec![Attribute::Token(true), Attribute::Sign(true)];
    priv_t.extend_from_slice(&dates);
    let (pk, sk) = s.generate_key_pair(&Mechanism::EccKeyPairGen, &pub_t, &priv_t).unwrap();
    assert_eq!((state(&s, pk), state(&s, sk)), (3, 3));
    assert_eq!(rv(s.sign(&Mechanism::Ecdsa, sk, &[1u8; 32])), RvError::KeyFunctionNotPermitted);
    assert_eq!(
        rv(s.verify(&Mechanism::Ecdsa, pk, &[1u8; 32], &[0u8; 64])),
        RvError::SignatureInvalid
    );

    // The state is never set by a template, the dates never changed after creation.
    let st = vendor(CKA_BULWARK_STATE, 2);
    assert_eq!(rv(aes(&s, std::slice::from_ref(&st))), RvError::AttributeReadOnly);
    assert_eq!(rv(s.update_attributes(later, &[st])), RvError::AttributeReadOnly);
    let d = vendor(CKA_BULWARK_ACTIVATION_DATE, now() - YEAR);
    assert_eq!(rv(s.update_attributes(later, &[d])), RvError::AttributeReadOnly);
    assert_eq!(state(&s, later), 1);
    // A stop date before the activation date is inconsistent.
    let bad = [
        vendor(CKA_BULWARK_ACTIVATION_DATE, now() + YEAR),
        vendor(CKA_BULWARK_DEACTIVATION_DATE, now()),
    ];
    assert_eq!(rv(aes(&s, &bad)), RvError::TemplateInconsistent);
}
