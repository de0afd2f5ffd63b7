//! Attack suite, PKCS#11 side of issue 9 attack 8, against the embedded module: the normal user
//! (`CKU_USER`) cannot make a key `CKA_TRUSTED` by any template, and `C_CopyObject` only tightens.
//! The module is loaded as the cryptoki suite loads it (`common/mod.rs`); every test gets a
//! fresh token.

#![allow(missing_docs)]

mod common;

use common::{rv, so_pin, user_session};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};

fn known_aes(s: &Session, extra: &[Attribute]) -> cryptoki::error::Result<ObjectHandle> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Value(vec![0x42; 32]),
    ];
    t.extend_from_slice(extra);
    s.create_object(&t)
}

fn generated_aes(s: &Session, extra: &[Attribute]) -> cryptoki::error::Result<ObjectHandle> {
    let mut t = vec![Attribute::Token(false), Attribute::ValueLen(32.into())];
    t.extend_from_slice(extra);
    s.generate_key(&Mechanism::AesKeyGen, &t)
}

/// `CKU_USER`: `CKA_TRUSTED=true` is `CKR_ATTRIBUTE_READ_ONLY` in `C_CreateObject` (the known-key
/// import of the attack), `C_GenerateKey`, `C_SetAttributeValue`, `C_CopyObject` and `C_UnwrapKey`;
/// the SO may mark a public key trusted, which is what makes these refusals meaningful.
#[test]
fn attack8_the_user_cannot_set_trusted() {
    if common::is_softhsm() {
        return; // SoftHSMv2 lets the user set CKA_TRUSTED; this is Bulwark's rule.
    }
    let (_, s) = user_session();
    let trusted = Attribute::Trusted(true);
    let r = known_aes(&s, &[trusted.clone(), Attribute::Wrap(true)]);
    assert_eq!(rv(r), RvError::AttributeReadOnly, "C_CreateObject");
    let r = generated_aes(&s, &[trusted.clone(), Attribute::Wrap(true)]);
    assert_eq!(rv(r), RvError::AttributeReadOnly, "C_GenerateKey");
    let mine = generated_aes(
        &s,
        &[Attribute::Wrap(true), Attribute::Unwrap(true), Attribute::Extractable(true)],
    )
    .unwrap();
    let r = s.update_attributes(mine, std::slice::from_ref(&trusted));
    assert_eq!(rv(r), RvError::AttributeReadOnly, "C_SetAttributeValue");
    let r = s.copy_object(mine, std::slice::from_ref(&trusted));
    assert_eq!(rv(r), RvError::AttributeReadOnly, "C_CopyObject");
    let target = generated_aes(&s, &[Attribute::Extractable(true)]).unwrap();
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, mine, target).unwrap();
    let r = s.unwrap_key(
        &Mechanism::AesKeyWrap,
        mine,
        &wrapped,
        &[
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            trusted.clone(),
        ],
    );
    assert_eq!(rv(r), RvError::AttributeReadOnly, "C_UnwrapKey");
    assert!(
        s.find_objects(std::slice::from_ref(&trusted)).unwrap().is_empty(),
        "no trusted key exists"
    );
    s.logout().unwrap();
    // The SO marks a public wrapping key trusted (allowed), and the user then wraps a
    // CKA_WRAP_WITH_TRUSTED key under it but not under a key of its own.
    s.login(UserType::So, Some(&so_pin())).unwrap();
    let so_kek =
        known_aes(&s, &[trusted.clone(), Attribute::Private(false), Attribute::Wrap(true)])
            .expect("the SO sets CKA_TRUSTED");
    s.logout().unwrap();
    s.login(UserType::User, Some(&common::user_pin())).unwrap();
    let guarded =
        generated_aes(&s, &[Attribute::Extractable(true), Attribute::WrapWithTrusted(true)])
            .unwrap();
    let own = generated_aes(&s, &[Attribute::Wrap(true)]).unwrap();
    assert!(s.wrap_key(&Mechanism::AesKeyWrap, so_kek, guarded).is_ok());
    let r = s.wrap_key(&Mechanism::AesKeyWrap, own, guarded);
    assert!(
        matches!(rv(r), RvError::KeyUnextractable | RvError::KeyNotWrappable),
        "CKA_WRAP_WITH_TRUSTED under an untrusted key"
    );
}

/// `C_CopyObject` may only tighten: widening a usage flag (`CKA_SIGN`), the extractability or the
/// mechanism list, or relaxing `CKA_SENSITIVE`, fails and creates nothing; `CKA_COPYABLE=false`
/// forbids the copy.
#[test]
fn attack8_copy_object_only_tightens() {
    let (_, s) = user_session();
    let base = [Attribute::Class(ObjectClass::SECRET_KEY)];
    let hmac = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(false),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(32.into()),
                Attribute::Sign(false),
                Attribute::Verify(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    let before = s.find_objects(&base).unwrap().len();
    for (tmpl, what) in [
        (vec![Attribute::Sign(true)], "widen CKA_SIGN"),
        (vec![Attribute::Sensitive(false)], "relax CKA_SENSITIVE"),
        (vec![Attribute::Extractable(true)], "widen CKA_EXTRACTABLE"),
    ] {
        let r = s.copy_object(hmac, &tmpl);
        assert!(
            matches!(rv(r), RvError::AttributeReadOnly | RvError::TemplateInconsistent),
            "{what}"
        );
    }
    assert_eq!(s.find_objects(&base).unwrap().len(), before, "no copy was made");
    // Tightening is fine, and the copy is as tight as asked.
    let tight = s.copy_object(hmac, &[Attribute::Verify(false)]).unwrap();
    let attrs = s.get_attributes(tight, &[cryptoki::object::AttributeType::Verify]).unwrap();
    assert!(matches!(attrs.as_slice(), [Attribute::Verify(false)]), "{attrs:?}");
    if !common::is_softhsm() {
        // An allowed-mechanism list never widens.
        let gcm_only = generated_aes(
            &s,
            &[
                Attribute::Encrypt(true),
                Attribute::AllowedMechanisms(vec![cryptoki::mechanism::MechanismType::AES_GCM]),
            ],
        )
        .unwrap();
        let r = s.copy_object(
            gcm_only,
            &[Attribute::AllowedMechanisms(vec![
                cryptoki::mechanism::MechanismType::AES_GCM,
                cryptoki::mechanism::MechanismType::AES_CBC_PAD,
            ])],
        );
        assert_eq!(rv(r), RvError::AttributeReadOnly, "widen CKA_ALLOWED_MECHANISMS");
    }
    // CKA_COPYABLE=false: no copy at all.
    let fixed = generated_aes(&s, &[Attribute::Copyable(false)]).unwrap();
    assert_eq!(rv(s.copy_object(fixed, &[])), RvError::ActionProhibited, "CKA_COPYABLE false");
}
