//! The bodies of the PKCS#11 suite: they drive the built module through the `cryptoki` crate,
//! exactly as an application would. Two test binaries run them: `p11.rs` (embedded slots, or
//! `SoftHSMv2` with `BULWARK_TEST_MODULE=/usr/lib/softhsm/libsofthsm2.so`; differences are noted
//! per test) and `p11_remote.rs` (a remote slot on a real `bulwarkd`). Checks that cannot apply
//! to a remote slot (they need `C_InitToken` / `C_InitPIN` on it) say so and return early.

#![allow(
    dead_code,
    missing_docs,
    unreachable_pub,
    clippy::many_single_char_names,
    clippy::match_same_arms
)]

mod lifecycle;
mod mechanisms;
mod versions;

pub use lifecycle::key_lifecycle_states;
pub use versions::key_versions_are_objects;

pub use mechanisms::{
    aes_cmac_known_answers, cipher_updates_stream_every_block, ecdh_x963_sha1_kdf,
    message_based_gcm_with_token_ivs, rsa_raw_recover_and_pss_parameters,
    session_semantics_and_defaults,
};

use crate::common::{self, fresh_token, p11, rv, user_pin, user_session};
use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::hkdf::{HkdfParams, HkdfSalt};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, MlDsaParameterSetType, MlKemParameterSetType,
    ObjectClass, ObjectHandle, ParameterSetType,
};
use cryptoki::session::{Session, SessionState, UserType};

const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
const SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const X25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x6e];

fn ec_pair(s: &Session, params: &[u8], token: bool) -> (ObjectHandle, ObjectHandle) {
    let mech = match params {
        ED25519_OID => Mechanism::EccEdwardsKeyPairGen,
        X25519_OID => Mechanism::EccMontgomeryKeyPairGen,
        [0x13, ..] => Mechanism::EccEdwardsKeyPairGen,
        _ => Mechanism::EccKeyPairGen,
    };
    s.generate_key_pair(
        &mech,
        &[Attribute::Token(token), Attribute::EcParams(params.to_vec()), Attribute::Verify(true)],
        &[Attribute::Token(token), Attribute::Sign(true), Attribute::Derive(true)],
    )
    .expect("EC key pair")
}

fn rsa_pair(s: &Session) -> (ObjectHandle, ObjectHandle) {
    s.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
            Attribute::Wrap(true),
        ],
        &[
            Attribute::Token(false),
            Attribute::Sign(true),
            Attribute::Decrypt(true),
            Attribute::Unwrap(true),
        ],
    )
    .expect("RSA key pair")
}

fn aes_key(s: &Session, extractable: bool) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Extractable(extractable),
        ],
    )
    .expect("AES key")
}

fn hmac_key(s: &Session) -> ObjectHandle {
    s.generate_key(
        &Mechanism::GenericSecretKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(32.into()),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Derive(true),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
        ],
    )
    .expect("generic secret")
}

fn sign_verify(
    s: &Session,
    m: &Mechanism,
    sk: ObjectHandle,
    pk: ObjectHandle,
    data: &[u8],
) -> Vec<u8> {
    let sig = s.sign(m, sk, data).unwrap_or_else(|e| panic!("sign {m:?}: {e}"));
    s.verify(m, pk, data, &sig).unwrap_or_else(|e| panic!("verify {m:?}: {e}"));
    let mut bad = data.to_vec();
    *bad.last_mut().expect("data") ^= 1;
    assert_eq!(rv(s.verify(m, pk, &bad, &sig)), RvError::SignatureInvalid, "{m:?}");
    sig
}

pub fn token_info_and_mechanisms() {
    let slot = fresh_token();
    let info = p11().get_token_info(slot).unwrap();
    assert!(info.token_initialized());
    assert!(info.user_pin_initialized());
    assert!(info.login_required());
    let mechs = p11().get_mechanism_list(slot).unwrap();
    for m in [
        MechanismType::ECDSA,
        MechanismType::AES_GCM,
        MechanismType::RSA_PKCS_OAEP,
        MechanismType::SHA256_HMAC,
    ] {
        assert!(mechs.contains(&m), "{m}");
        let mi = p11().get_mechanism_info(slot, m).unwrap();
        assert!(mi.max_key_size() >= mi.min_key_size());
    }
    let ecdsa = p11().get_mechanism_info(slot, MechanismType::ECDSA).unwrap();
    assert!(ecdsa.sign() && ecdsa.verify() && !ecdsa.encrypt());
    assert_eq!(
        rv(p11().get_mechanism_info(slot, MechanismType::DES_KEY_GEN)),
        RvError::MechanismInvalid
    );
}

pub fn login_errors_and_pin_lockout() {
    let slot = fresh_token();
    let s = p11().open_rw_session(slot).unwrap();
    let wrong = common::wrong_user_pin();
    assert_eq!(rv(s.login(UserType::User, Some(&wrong))), RvError::PinIncorrect);
    s.login(UserType::User, Some(&user_pin())).unwrap();
    assert_eq!(rv(s.login(UserType::User, Some(&user_pin()))), RvError::UserAlreadyLoggedIn);
    assert_eq!(
        rv(s.login(UserType::So, Some(&common::so_pin()))),
        RvError::UserAnotherAlreadyLoggedIn
    );
    s.logout().unwrap();
    assert_eq!(rv(s.logout()), RvError::UserNotLoggedIn);
    if common::is_softhsm() {
        return; // SoftHSMv2 never locks a PIN.
    }
    if common::skip_remote(
        "PIN lockout: the unlock needs C_InitPIN (a remote user is unlocked with `bulwark user`)",
    ) {
        return;
    }
    for _ in 0..10 {
        assert_eq!(rv(s.login(UserType::User, Some(&wrong))), RvError::PinIncorrect);
    }
    assert_eq!(rv(s.login(UserType::User, Some(&user_pin()))), RvError::PinLocked);
    assert!(p11().get_token_info(slot).unwrap().user_pin_locked());
    // The SO resets the user PIN, which unlocks it.
    s.login(UserType::So, Some(&common::so_pin())).unwrap();
    s.init_pin(&user_pin()).unwrap();
    s.logout().unwrap();
    s.login(UserType::User, Some(&user_pin())).unwrap();
}

pub fn session_state_rules() {
    let slot = fresh_token();
    let ro = p11().open_ro_session(slot).unwrap();
    assert_eq!(ro.get_session_info().unwrap().session_state(), SessionState::RoPublic);
    // An SO cannot log in while a read-only session exists.
    assert_eq!(rv(ro.login(UserType::So, Some(&common::so_pin()))), RvError::SessionReadOnlyExists);
    ro.login(UserType::User, Some(&user_pin())).unwrap();
    assert_eq!(ro.get_session_info().unwrap().session_state(), SessionState::RoUser);
    // Read-only sessions may not create token objects, but may create session objects.
    let tmpl = |token| {
        vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(token),
            Attribute::Private(false),
            Attribute::Label(b"d".to_vec()),
        ]
    };
    assert_eq!(rv(ro.create_object(&tmpl(true))), RvError::SessionReadOnly);
    ro.create_object(&tmpl(false)).unwrap();
    let rw = p11().open_rw_session(slot).unwrap();
    assert_eq!(rw.get_session_info().unwrap().session_state(), SessionState::RwUser);
    let tok = rw.create_object(&tmpl(true)).unwrap();
    assert_eq!(rv(ro.destroy_object(tok)), RvError::SessionReadOnly);
    rw.destroy_object(tok).unwrap();
    assert_eq!(rv(rw.destroy_object(tok)), RvError::ObjectHandleInvalid);
}

pub fn so_session_rules() {
    let slot = fresh_token();
    let rw = p11().open_rw_session(slot).unwrap();
    rw.login(UserType::So, Some(&common::so_pin())).unwrap();
    assert_eq!(rw.get_session_info().unwrap().session_state(), SessionState::RwSecurityOfficer);
    assert_eq!(rv(p11().open_ro_session(slot)), RvError::SessionReadWriteSoExists);
    // A token with open sessions cannot be re-initialized.
    assert_eq!(rv(p11().init_token(slot, &common::so_pin(), "again")), RvError::SessionExists);
}

pub fn generate_every_key_type() {
    let (_, s) = user_session();
    for params in [P256, P384, P521, ED25519_OID] {
        ec_pair(&s, params, false);
    }
    if !common::is_softhsm() {
        // secp256k1, X25519 and the PKCS#11 3.0 printable curve name.
        ec_pair(&s, SECP256K1, false);
        ec_pair(&s, X25519_OID, false);
        let printable = [&[0x13, 12][..], b"edwards25519"].concat();
        ec_pair(&s, &printable, false);
        let sets: [(Mechanism, ParameterSetType); 2] = [
            (Mechanism::MlDsaKeyPairGen, MlDsaParameterSetType::ML_DSA_65.into()),
            (Mechanism::MlKemKeyPairGen, MlKemParameterSetType::ML_KEM_768.into()),
        ];
        for (mech, set) in sets {
            s.generate_key_pair(
                &mech,
                &[Attribute::Token(false), Attribute::ParameterSet(set)],
                &[Attribute::Token(false)],
            )
            .unwrap_or_else(|e| panic!("{mech:?}: {e}"));
        }
    }
    rsa_pair(&s);
    aes_key(&s, false);
    hmac_key(&s);
    for len in [16u64, 24] {
        s.generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(false), Attribute::ValueLen(len.into())],
        )
        .unwrap();
    }
    assert_eq!(
        rv(s.generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::Token(false), Attribute::ValueLen(17.into())]
        )),
        RvError::AttributeValueInvalid
    );
    // Generated keys carry truthful provenance.
    let k = aes_key(&s, false);
    let a = s
        .get_attributes(
            k,
            &[
                AttributeType::Local,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .unwrap();
    assert_eq!(
        a,
        vec![
            Attribute::Local(true),
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true)
        ]
    );
}

pub fn sign_and_verify_every_mechanism() {
    let (_, s) = user_session();
    let msg = b"the quick brown fox jumps over the lazy dog";
    let digest32 = [7u8; 32];
    for params in [P256, P384, P521] {
        let (pk, sk) = ec_pair(&s, params, false);
        let sig = sign_verify(&s, &Mechanism::Ecdsa, sk, pk, &digest32);
        let field = match params {
            P256 => 32,
            P384 => 48,
            _ => 66,
        };
        assert_eq!(sig.len(), 2 * field, "ECDSA signatures are r||s");
        for m in [Mechanism::EcdsaSha256, Mechanism::EcdsaSha384, Mechanism::EcdsaSha512] {
            sign_verify(&s, &m, sk, pk, msg);
        }
    }
    let (pk, sk) = ec_pair(&s, ED25519_OID, false);
    let sig = sign_verify(
        &s,
        &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        sk,
        pk,
        msg,
    );
    assert_eq!(sig.len(), 64);

    let (pk, sk) = rsa_pair(&s);
    for m in [Mechanism::Sha256RsaPkcs, Mechanism::Sha384RsaPkcs, Mechanism::Sha512RsaPkcs] {
        assert_eq!(sign_verify(&s, &m, sk, pk, msg).len(), 256);
    }
    let pss = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    };
    sign_verify(&s, &Mechanism::Sha256RsaPkcsPss(pss), sk, pk, msg);
    sign_verify(&s, &Mechanism::RsaPkcsPss(pss), sk, pk, &digest32);
    // CKM_RSA_PKCS over a DigestInfo(SHA-256).
    let mut di = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    di.extend_from_slice(&digest32);
    sign_verify(&s, &Mechanism::RsaPkcs, sk, pk, &di);

    let k = hmac_key(&s);
    for (m, len) in
        [(Mechanism::Sha256Hmac, 32), (Mechanism::Sha384Hmac, 48), (Mechanism::Sha512Hmac, 64)]
    {
        assert_eq!(sign_verify(&s, &m, k, k, msg).len(), len);
    }

    // Key type / mechanism mismatch.
    let (_, ec_sk) = ec_pair(&s, P256, false);
    assert_eq!(rv(s.sign(&Mechanism::Sha256RsaPkcs, ec_sk, msg)), RvError::KeyTypeInconsistent);
    // A public key cannot sign.
    assert!(matches!(
        rv(s.sign(&Mechanism::Ecdsa, pk, &digest32)),
        RvError::KeyTypeInconsistent | RvError::KeyFunctionNotPermitted
    ));
}

pub fn ml_dsa_sign_verify() {
    if common::is_softhsm() {
        return;
    }
    let (_, s) = user_session();
    let (pk, sk) = s
        .generate_key_pair(
            &Mechanism::MlDsaKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_65.into()),
                Attribute::Verify(true),
            ],
            &[Attribute::Token(false), Attribute::Sign(true)],
        )
        .unwrap();
    let m = Mechanism::MlDsa(cryptoki::mechanism::dsa::SignAdditionalContext::new(
        cryptoki::mechanism::dsa::HedgeType::Preferred,
        None,
    ));
    sign_verify(&s, &m, sk, pk, b"post-quantum");
}

pub fn multipart_sign_and_verify() {
    let (_, s) = user_session();
    let (pk, sk) = ec_pair(&s, P256, false);
    let m = Mechanism::EcdsaSha256;
    s.sign_init(&m, sk).unwrap();
    s.sign_update(b"hello ").unwrap();
    s.sign_update(b"world").unwrap();
    let sig = s.sign_final().unwrap();
    s.verify(&m, pk, b"hello world", &sig).unwrap();
    s.verify_init(&m, pk).unwrap();
    s.verify_update(b"hello").unwrap();
    s.verify_update(b" world").unwrap();
    s.verify_final(&sig).unwrap();
    // Operation state.
    assert_eq!(rv(s.sign_update(b"x")), RvError::OperationNotInitialized);
    s.sign_init(&m, sk).unwrap();
    assert_eq!(rv(s.sign_init(&m, sk)), RvError::OperationActive);
}

pub fn encrypt_and_decrypt() {
    let (_, s) = user_session();
    let k = aes_key(&s, false);
    let pt = b"attack at dawn, bring snacks and a 32-byte block.".to_vec();
    let mut iv = [3u8; 12];
    let aad = b"header";
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap());
    let ct = s.encrypt(&gcm, k, &pt).unwrap();
    assert_eq!(ct.len(), pt.len() + 16);
    assert_eq!(s.decrypt(&gcm, k, &ct).unwrap(), pt);
    let mut bad = ct.clone();
    bad[0] ^= 1;
    assert_eq!(rv(s.decrypt(&gcm, k, &bad)), RvError::EncryptedDataInvalid);
    // Multi-part GCM (buffered) gives the same result.
    s.encrypt_init(&gcm, k).unwrap();
    let mut mp = s.encrypt_update(&pt[..10]).unwrap();
    mp.extend(s.encrypt_update(&pt[10..]).unwrap());
    mp.extend(s.encrypt_final().unwrap());
    assert_eq!(mp, ct);

    let cbc = Mechanism::AesCbcPad([9u8; 16]);
    let ct = s.encrypt(&cbc, k, &pt).unwrap();
    assert_eq!(ct.len() % 16, 0);
    assert_eq!(s.decrypt(&cbc, k, &ct).unwrap(), pt);
    let raw_cbc = Mechanism::AesCbc([9u8; 16]);
    assert_eq!(rv(s.encrypt(&raw_cbc, k, &pt[..15])), RvError::DataLenRange);

    let (pk, sk) = rsa_pair(&s);
    let label = b"label";
    let oaep = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::data_specified(label),
    ));
    let ct = s.encrypt(&oaep, pk, b"secret").unwrap();
    assert_eq!(ct.len(), 256);
    assert_eq!(s.decrypt(&oaep, sk, &ct).unwrap(), b"secret");
    let mut bad = ct.clone();
    bad[5] ^= 1;
    assert_eq!(rv(s.decrypt(&oaep, sk, &bad)), RvError::EncryptedDataInvalid);
    assert_eq!(rv(s.encrypt(&oaep, pk, &[0u8; 300])), RvError::DataLenRange);
    let ct = s.encrypt(&Mechanism::RsaPkcs, pk, b"v1.5").unwrap();
    assert_eq!(s.decrypt(&Mechanism::RsaPkcs, sk, &ct).unwrap(), b"v1.5");
}

pub fn digest_single_and_multipart() {
    let (_, s) = user_session();
    let d = s.digest(&Mechanism::Sha256, b"abc").unwrap();
    assert_eq!(hex::encode(&d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(s.digest(&Mechanism::Sha1, b"abc").unwrap().len(), 20);
    assert_eq!(s.digest(&Mechanism::Sha512, b"abc").unwrap().len(), 64);
}

pub fn wrap_and_unwrap() {
    let (_, s) = user_session();
    let kek = aes_key(&s, false);
    let target = aes_key(&s, true);
    let unwrap_tmpl = [
        Attribute::Token(false),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    // (cryptoki has no CKM_AES_KEY_WRAP_KWP variant; its `AesKeyWrapPad` is CKM_AES_KEY_WRAP_PAD.)
    {
        let m = Mechanism::AesKeyWrap;
        let w = s.wrap_key(&m, kek, target).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(w.len(), 40);
        let k2 = s.unwrap_key(&m, kek, &w, &unwrap_tmpl).unwrap();
        let cbc = Mechanism::AesCbcPad([1u8; 16]);
        let ct = s.encrypt(&cbc, target, b"same key").unwrap();
        assert_eq!(s.decrypt(&cbc, k2, &ct).unwrap(), b"same key");
        let mut bad = w.clone();
        bad[3] ^= 1;
        assert!(matches!(
            rv(s.unwrap_key(&m, kek, &bad, &unwrap_tmpl)),
            RvError::WrappedKeyInvalid | RvError::EncryptedDataInvalid
        ));
    }
    // A non-extractable key never leaves.
    let fixed = aes_key(&s, false);
    assert_eq!(rv(s.wrap_key(&Mechanism::AesKeyWrap, kek, fixed)), RvError::KeyUnextractable);
    // RSA-OAEP wrapping of a secret key.
    let (pk, sk) = rsa_pair(&s);
    let oaep = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    ));
    let w = s.wrap_key(&oaep, pk, target).unwrap();
    let k3 = s.unwrap_key(&oaep, sk, &w, &unwrap_tmpl).unwrap();
    let cbc = Mechanism::AesCbcPad([2u8; 16]);
    let ct = s.encrypt(&cbc, target, b"oaep").unwrap();
    assert_eq!(s.decrypt(&cbc, k3, &ct).unwrap(), b"oaep");
    let gone = aes_key(&s, false);
    s.destroy_object(gone).unwrap();
    assert_eq!(
        rv(s.wrap_key(&Mechanism::AesKeyWrap, gone, target)),
        RvError::WrappingKeyHandleInvalid
    );
}

pub fn derive_ecdh_and_hkdf() {
    let (_, s) = user_session();
    let (apub, apriv) = ec_pair(&s, P256, false);
    let (bpub, bpriv) = ec_pair(&s, P256, false);
    let point = |h| match s.get_attributes(h, &[AttributeType::EcPoint]).unwrap().remove(0) {
        Attribute::EcPoint(p) => p,
        other => panic!("{other:?}"),
    };
    let (pa, pb) = (point(apub), point(bpub));
    assert_eq!(pa[0], 0x04, "CKA_EC_POINT is a DER OCTET STRING");
    let tmpl = [
        Attribute::Token(false),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    let ka = s
        .derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &pb)),
            apriv,
            &tmpl,
        )
        .unwrap();
    let kb = s
        .derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &pa)),
            bpriv,
            &tmpl,
        )
        .unwrap();
    let cbc = Mechanism::AesCbcPad([4u8; 16]);
    let ct = s.encrypt(&cbc, ka, b"agreed").unwrap();
    assert_eq!(s.decrypt(&cbc, kb, &ct).unwrap(), b"agreed");

    if common::is_softhsm() {
        return; // SoftHSMv2 2.6 has no CKM_HKDF_DERIVE.
    }
    let ikm = hmac_key(&s);
    let salt = b"salt";
    let info = b"info";
    let hk = |mech| {
        s.derive_key(
            &Mechanism::HkdfDerive(HkdfParams::new(mech, Some(HkdfSalt::Data(salt)), Some(info))),
            ikm,
            &tmpl,
        )
    };
    let k1 = hk(MechanismType::SHA256).unwrap();
    let k2 = hk(MechanismType::SHA256).unwrap();
    let ct = s.encrypt(&cbc, k1, b"hkdf").unwrap();
    assert_eq!(s.decrypt(&cbc, k2, &ct).unwrap(), b"hkdf", "HKDF is deterministic");
}

/// What readers that rebuild a public key from its attributes (`pkcs11-tool --read-object --type
/// pubkey`, `p11tool --export-pubkey`, OpenSSL's pkcs11 engine) fetch: the key type, then
/// `CKA_EC_PARAMS` and `CKA_EC_POINT` (or the RSA modulus and exponent), each through a size query
/// and a second call. The size query must give the exact length, `CKA_EC_POINT` must be the DER
/// OCTET STRING around the uncompressed point (the 32-byte key for Ed25519), and
/// `CKA_PUBLIC_KEY_INFO` the matching `SubjectPublicKeyInfo`.
pub fn public_key_read_back() {
    let (_, s) = user_session();
    let exact = |h, t: AttributeType| -> Vec<u8> {
        let info = s.get_attribute_info(h, &[t]).unwrap();
        let [AttributeInfo::Available(len)] = info[..] else { panic!("{t:?}: {info:?}") };
        let v = match s.get_attributes(h, &[t]).unwrap().remove(0) {
            Attribute::EcParams(v)
            | Attribute::EcPoint(v)
            | Attribute::Modulus(v)
            | Attribute::PublicExponent(v)
            | Attribute::PublicKeyInfo(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(v.len(), len, "{t:?}: the size query gives the exact length");
        v
    };
    let spki = |h, want: &[u8]| {
        if !common::is_softhsm() {
            // (SoftHSMv2 2.6 leaves CKA_PUBLIC_KEY_INFO empty.)
            assert_eq!(exact(h, AttributeType::PublicKeyInfo), want);
        }
    };
    let key_type = |h| s.get_attributes(h, &[AttributeType::KeyType]).unwrap();

    let (pk, _) = ec_pair(&s, P256, false);
    assert_eq!(key_type(pk), vec![Attribute::KeyType(KeyType::EC)]);
    assert_eq!(exact(pk, AttributeType::EcParams), P256);
    let point = exact(pk, AttributeType::EcPoint);
    assert_eq!(point.len(), 67);
    assert_eq!(point[..3], [0x04, 0x41, 0x04], "DER OCTET STRING of an uncompressed point");
    let mut want = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    want.extend_from_slice(&point[2..]);
    spki(pk, &want);

    let (pk, _) = ec_pair(&s, ED25519_OID, false);
    assert_eq!(key_type(pk), vec![Attribute::KeyType(KeyType::EC_EDWARDS)]);
    let point = exact(pk, AttributeType::EcPoint);
    assert_eq!(point.len(), 34);
    assert_eq!(point[..2], [0x04, 0x20]);
    let mut want = hex::decode("302a300506032b6570032100").unwrap();
    want.extend_from_slice(&point[2..]);
    spki(pk, &want);

    let (pk, _) = rsa_pair(&s);
    assert_eq!(key_type(pk), vec![Attribute::KeyType(KeyType::RSA)]);
    let n = exact(pk, AttributeType::Modulus);
    assert_eq!(n.len(), 256);
    assert_eq!(exact(pk, AttributeType::PublicExponent), [1, 0, 1]);
    let mut want =
        hex::decode("30820122300d06092a864886f70d01010105000382010f003082010a0282010100").unwrap();
    want.extend_from_slice(&n);
    want.extend_from_slice(&[0x02, 0x03, 0x01, 0x00, 0x01]);
    assert!(n[0] & 0x80 != 0, "a 2048-bit modulus, so its INTEGER has a leading zero");
    spki(pk, &want);
}

pub fn find_and_visibility() {
    let (slot, s) = user_session();
    let (_, sk) = ec_pair(&s, P256, true);
    s.update_attributes(sk, &[Attribute::Label(b"findme".to_vec())]).unwrap();
    for i in 0..5 {
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(format!("data-{i}").into_bytes()),
            Attribute::Value(vec![i]),
        ])
        .unwrap();
    }
    let by_label = s.find_objects(&[Attribute::Label(b"data-3".to_vec())]).unwrap();
    assert_eq!(by_label.len(), 1);
    assert_eq!(s.find_objects(&[Attribute::Class(ObjectClass::DATA)]).unwrap().len(), 5);
    assert_eq!(s.find_objects(&[Attribute::Label(b"findme".to_vec())]).unwrap(), vec![sk]);
    // Private objects are invisible before login (and in a new session of another login state).
    s.logout().unwrap();
    assert!(s.find_objects(&[Attribute::Label(b"findme".to_vec())]).unwrap().is_empty());
    // A remote slot shows nothing at all before login: bulwarkd serves no object to a client
    // that has not logged in (docs/pkcs11.md, "Remote slots").
    let public = if common::is_remote() { 0 } else { 5 };
    assert_eq!(s.find_objects(&[Attribute::Class(ObjectClass::DATA)]).unwrap().len(), public);
    assert_eq!(rv(s.get_attributes(sk, &[AttributeType::Label])), RvError::ObjectHandleInvalid);
    // Token objects persist across sessions.
    s.login(UserType::User, Some(&user_pin())).unwrap();
    let s2 = p11().open_ro_session(slot).unwrap();
    assert_eq!(s2.find_objects(&[Attribute::Label(b"findme".to_vec())]).unwrap(), vec![sk]);
}

pub fn session_objects_die_with_their_session() {
    let (slot, s) = user_session();
    let keep = p11().open_rw_session(slot).unwrap();
    let k = aes_key(&s, false);
    assert_eq!(keep.find_objects(&[Attribute::Token(false)]).unwrap(), vec![k]);
    drop(s); // C_CloseSession
    assert!(keep.find_objects(&[Attribute::Token(false)]).unwrap().is_empty());
    assert_eq!(rv(keep.get_attributes(k, &[AttributeType::Label])), RvError::ObjectHandleInvalid);
}

pub fn attribute_semantics() {
    let (_, s) = user_session();
    let k = aes_key(&s, true);
    // Sensitive by default: the value is never returned, other attributes are.
    let info = s.get_attribute_info(k, &[AttributeType::Value, AttributeType::Sensitive]).unwrap();
    assert!(
        matches!(info[..], [AttributeInfo::Sensitive, AttributeInfo::Available(1)]),
        "{info:?}"
    );
    assert!(s.get_attributes(k, &[AttributeType::Value]).unwrap().is_empty());
    let attrs =
        s.get_attributes(k, &[AttributeType::Sensitive, AttributeType::Extractable]).unwrap();
    assert_eq!(attrs, vec![Attribute::Sensitive(true), Attribute::Extractable(true)]);
    // CKA_SENSITIVE can only be set, never cleared; CKA_EXTRACTABLE only cleared.
    assert!(s.update_attributes(k, &[Attribute::Sensitive(false)]).is_err());
    s.update_attributes(k, &[Attribute::Extractable(false)]).unwrap();
    assert!(s.update_attributes(k, &[Attribute::Extractable(true)]).is_err());
    // CKA_CLASS is read-only after creation.
    assert!(s.update_attributes(k, &[Attribute::Class(ObjectClass::DATA)]).is_err());
    // A non-sensitive, extractable secret key shows its value.
    let v = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Value(vec![0x42; 32]),
            Attribute::Sign(true),
        ])
        .unwrap();
    assert_eq!(
        s.get_attributes(v, &[AttributeType::Value]).unwrap(),
        vec![Attribute::Value(vec![0x42; 32])]
    );
    // Template errors.
    assert_eq!(
        rv(s.create_object(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Token(false)])),
        RvError::TemplateIncomplete
    );
    // Non-destroyable objects.
    let nd = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Destroyable(false),
        ])
        .unwrap();
    assert_eq!(rv(s.destroy_object(nd)), RvError::ActionProhibited);
    // A key not allowed to sign.
    let enc_only = aes_key(&s, false);
    assert!(matches!(
        rv(s.sign(&Mechanism::Sha256Hmac, enc_only, b"x")),
        RvError::KeyTypeInconsistent | RvError::KeyFunctionNotPermitted
    ));
}

pub fn allowed_mechanisms_are_enforced() {
    if common::is_softhsm() {
        return;
    }
    let (_, s) = user_session();
    let k = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::AllowedMechanisms(vec![MechanismType::AES_CBC_PAD]),
            ],
        )
        .unwrap();
    s.encrypt(&Mechanism::AesCbcPad([0; 16]), k, b"ok").unwrap();
    let mut iv = [0u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap());
    assert_eq!(rv(s.encrypt(&gcm, k, b"no")), RvError::MechanismInvalid);
}

pub fn random_and_seed() {
    let (_, s) = user_session();
    let a = s.generate_random_vec(32).unwrap();
    let b = s.generate_random_vec(32).unwrap();
    assert_ne!(a, b);
    assert_eq!(rv(s.seed_random(&[1, 2, 3])), RvError::RandomSeedNotSupported);
}

pub fn always_authenticate_needs_context_login() {
    if common::is_softhsm() {
        return;
    }
    let (_, s) = user_session();
    let (pk, sk) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(false), Attribute::EcParams(P256.to_vec()), Attribute::Verify(true)],
            &[Attribute::Token(false), Attribute::Sign(true), Attribute::AlwaysAuthenticate(true)],
        )
        .unwrap();
    assert_eq!(rv(s.sign(&Mechanism::EcdsaSha256, sk, b"m")), RvError::UserNotLoggedIn);
    s.sign_init(&Mechanism::EcdsaSha256, sk).unwrap();
    assert_eq!(
        rv(s.login(UserType::ContextSpecific, Some(&common::wrong_user_pin()))),
        RvError::PinIncorrect
    );
    s.login(UserType::ContextSpecific, Some(&user_pin())).unwrap();
    s.sign_update(b"m").unwrap();
    let sig = s.sign_final().unwrap();
    s.verify(&Mechanism::EcdsaSha256, pk, b"m", &sig).unwrap();
    // Without an operation there is nothing to authenticate for.
    assert_eq!(
        rv(s.login(UserType::ContextSpecific, Some(&user_pin()))),
        RvError::OperationNotInitialized
    );
}

pub fn threads_sign_on_separate_sessions() {
    let (slot, s) = user_session();
    let (pk, sk) = ec_pair(&s, P256, false);
    std::thread::scope(|sc| {
        for t in 0..4u8 {
            sc.spawn(move || {
                let mine = p11().open_rw_session(slot).unwrap();
                for i in 0..100u8 {
                    let msg = [t, i, 1, 2, 3];
                    let sig = mine.sign(&Mechanism::EcdsaSha256, sk, &msg).unwrap();
                    mine.verify(&Mechanism::EcdsaSha256, pk, &msg, &sig).unwrap();
                }
            });
        }
    });
}

/// `C_DestroyObject` of a token key: `CKR_OK`, and the key is gone for PKCS#11 at once (not
/// found, its handle invalid), whether the store destroys at once (an embedded token) or
/// schedules the destruction (a daemon store's 30-day wait; docs/lifecycle.md).
pub fn destroyed_token_key_is_gone() {
    let (_, s) = user_session();
    let label = b"doomed".to_vec();
    let k = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(label.clone()),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
            ],
        )
        .unwrap();
    let mut iv = [1u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap());
    s.encrypt(&gcm, k, b"x").unwrap();
    s.destroy_object(k).unwrap();
    assert!(s.find_objects(&[Attribute::Label(label)]).unwrap().is_empty());
    assert_eq!(rv(s.get_attributes(k, &[AttributeType::Label])), RvError::ObjectHandleInvalid);
    assert!(s.encrypt(&gcm, k, b"x").is_err());
    assert_eq!(rv(s.destroy_object(k)), RvError::ObjectHandleInvalid);
}

/// Every test body, by name (for the wrappers in each test binary).
#[macro_export]
macro_rules! for_each_p11_test {
    ($m:ident) => {
        $m!(
            token_info_and_mechanisms,
            login_errors_and_pin_lockout,
            session_state_rules,
            so_session_rules,
            generate_every_key_type,
            sign_and_verify_every_mechanism,
            ml_dsa_sign_verify,
            multipart_sign_and_verify,
            encrypt_and_decrypt,
            digest_single_and_multipart,
            wrap_and_unwrap,
            derive_ecdh_and_hkdf,
            public_key_read_back,
            find_and_visibility,
            session_objects_die_with_their_session,
            attribute_semantics,
            allowed_mechanisms_are_enforced,
            random_and_seed,
            always_authenticate_needs_context_login,
            threads_sign_on_separate_sessions,
            cipher_updates_stream_every_block,
            rsa_raw_recover_and_pss_parameters,
            aes_cmac_known_answers,
            ecdh_x963_sha1_kdf,
            message_based_gcm_with_token_ivs,
            session_semantics_and_defaults,
            key_lifecycle_states,
            key_versions_are_objects,
            destroyed_token_key_is_gone
        );
    };
}
