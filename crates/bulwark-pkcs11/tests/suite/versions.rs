//! Key versions through PKCS#11 (docs/lifecycle.md, "Versions and rotation"): each version is
//! its own object with the same CKA_LABEL; `C_FindObjects` by label returns every version;
//! `CKA_BULWARK_KEY_VERSION` is readable (1 for a key never rotated) and read-only; the
//! rotated-out version no longer signs but still verifies. The rotation itself is made by a
//! second connection to the same store (as the CLI would), since PKCS#11 has no call for it.

use crate::common::{self, rv, user_session};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

const CKA_BULWARK_KEY_VERSION: u64 = 0xC257_0020;
const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn version(s: &Session, h: ObjectHandle) -> u64 {
    let t = AttributeType::VendorDefined(CKA_BULWARK_KEY_VERSION);
    match s.get_attributes(h, &[t]).unwrap().as_slice() {
        [Attribute::VendorDefined((_, v))] => u64::from_ne_bytes(v.as_slice().try_into().unwrap()),
        other => panic!("CKA_BULWARK_KEY_VERSION: {other:?}"),
    }
}

fn vendor(t: u64, v: u64) -> Attribute {
    let t = cryptoki::types::Ulong::from(t);
    Attribute::VendorDefined((AttributeType::VendorDefined(*t), v.to_ne_bytes().to_vec()))
}

pub fn key_versions_are_objects() {
    if common::is_softhsm() || common::skip_remote("rotation is made through the store file") {
        return; // Bulwark's vendor attributes; the remote daemon is tested in bulwark-cli.
    }
    let (slot, s) = user_session();
    let label = || Attribute::Label(b"versioned".to_vec());
    let (pub1, priv1) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), label(), Attribute::EcParams(P256.to_vec())],
            &[Attribute::Token(true), label(), Attribute::Sign(true)],
        )
        .unwrap();
    assert_eq!((version(&s, pub1), version(&s, priv1)), (1, 1), "never rotated: 1");
    let sig1 = s.sign(&Mechanism::Ecdsa, priv1, &[1u8; 32]).unwrap();

    // Rotate through a second connection to the slot's store.
    let desc = common::p11().get_slot_info(slot).unwrap().slot_description().to_owned();
    let path = std::path::PathBuf::from(desc.split_once(": ").unwrap().1.trim_end());
    assert!(path.exists(), "store of the slot: {}", path.display());
    let t = bulwark_core::Token::open(&path).unwrap();
    t.login(
        bulwark_core::UserType::User,
        &bulwark_core::secret::Pin::new(common::USER_PIN.as_bytes().to_vec()),
    )
    .unwrap();
    let (new, v) = t.rotate_key(priv1.handle()).unwrap();
    assert_eq!(v, 2);
    drop(t);

    // C_FindObjects by label returns every version: two pairs.
    let all = s.find_objects(&[label()]).unwrap();
    assert_eq!(all.len(), 4);
    let mut versions: Vec<u64> = all.iter().map(|h| version(&s, *h)).collect();
    versions.sort_unstable();
    assert_eq!(versions, [1, 1, 2, 2]);
    // One version by template.
    let v2 = s
        .find_objects(&[
            label(),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            vendor(CKA_BULWARK_KEY_VERSION, 2),
        ])
        .unwrap();
    assert_eq!(v2.len(), 1);
    assert_eq!(v2[0].handle(), new[0]);
    let pub2 = s
        .find_objects(&[
            label(),
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            vendor(CKA_BULWARK_KEY_VERSION, 2),
        ])
        .unwrap()[0];

    // The old version verifies, never signs again; the new one signs.
    assert_eq!(rv(s.sign(&Mechanism::Ecdsa, priv1, &[1u8; 32])), RvError::KeyFunctionNotPermitted);
    s.verify(&Mechanism::Ecdsa, pub1, &[1u8; 32], &sig1).unwrap();
    let sig2 = s.sign(&Mechanism::Ecdsa, v2[0], &[2u8; 32]).unwrap();
    s.verify(&Mechanism::Ecdsa, pub2, &[2u8; 32], &sig2).unwrap();

    // Read-only: never in a template, never changed.
    assert_eq!(
        rv(s.update_attributes(v2[0], &[vendor(CKA_BULWARK_KEY_VERSION, 7)])),
        RvError::AttributeReadOnly
    );
    let r = s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            vendor(CKA_BULWARK_KEY_VERSION, 3),
        ],
    );
    assert_eq!(rv(r), RvError::AttributeReadOnly);
    assert_eq!(version(&s, v2[0]), 2);
}
