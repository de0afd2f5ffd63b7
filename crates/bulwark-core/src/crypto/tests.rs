//! Unit tests of the engine: self-test fault injection, PCT, round trips for every key spec and
//! mechanism, sizes, encodings and error mapping. Each positive case has a tampered twin.

use super::*;
use crate::mechanism::{EcdhKdf, EdDsaParams, Mechanism};

fn p() -> &'static Provider {
    Provider::get().expect("self-tests pass")
}

fn gen(spec: KeySpec) -> (GeneratedKey, LoadedKey) {
    let g = p().generate(spec).unwrap();
    let l = p().load(&g.material).unwrap();
    (g, l)
}

fn sign_round_trip(key: &LoadedKey, mech: &Mechanism, msg: &[u8]) {
    let sig = key.sign(p(), mech, msg).unwrap();
    assert!(sig.len() <= key.signature_len(mech), "{mech:?}");
    key.verify(p(), mech, msg, &sig).unwrap();
    let public = p().load_public(key.public().unwrap()).unwrap();
    public.verify(p(), mech, msg, &sig).unwrap();
    let mut bad = sig.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x01;
    assert!(key.verify(p(), mech, msg, &bad).is_err(), "tampered sig {mech:?}");
    assert!(key.verify(p(), mech, b"another message", &sig).is_err(), "other msg {mech:?}");
}

#[test]
fn power_on_self_tests_pass() {
    let report = p().self_test_report();
    assert_eq!(report.len(), 21);
    assert!(report.iter().all(|r| r.passed), "{report:?}");
    assert_eq!(crate::selftest::run_all().len(), 21);
}

#[test]
fn every_kat_can_fail_and_the_provider_then_refuses_everything() {
    let good = p();
    let (aes, aes_key) = gen(KeySpec::Aes { bytes: 32 });
    let (_, ec_key) = gen(KeySpec::Ec(Curve::P256));
    for r in good.self_test_report() {
        let bad = Provider::with_fault(Fault::Kat(r.name));
        let failed: Vec<_> = bad.self_test_report().into_iter().filter(|x| !x.passed).collect();
        assert_eq!(failed.len(), 1, "{}: {failed:?}", r.name);
        assert_eq!(failed[0].name, r.name);
        let refused = |e: Error| matches!(e, Error::ErrorState(ref n) if n == r.name);
        assert!(refused(bad.check().unwrap_err()));
        assert!(refused(bad.random(&mut [0u8; 8]).unwrap_err()));
        assert!(refused(bad.digest(DigestAlg::Sha256, b"x").unwrap_err()));
        assert!(refused(bad.generate(KeySpec::Aes { bytes: 16 }).unwrap_err()));
        assert!(refused(bad.import_secret(KeySpec::Aes { bytes: 16 }, &[0; 16]).unwrap_err()));
        assert!(refused(bad.load(&aes.material).unwrap_err()));
        let gcm = Mechanism::AesGcm { iv: vec![0; 12], aad: vec![], tag_bits: 128 };
        assert!(refused(aes_key.encrypt(&bad, &gcm, b"x").unwrap_err()));
        assert!(refused(aes_key.decrypt(&bad, &gcm, &[0; 16]).unwrap_err()));
        assert!(refused(aes_key.wrap(&bad, &Mechanism::AesKeyWrapPad, &aes.material).unwrap_err()));
        assert!(refused(ec_key.sign(&bad, &Mechanism::EcdsaSha256, b"x").unwrap_err()));
        assert!(refused(ec_key.verify(&bad, &Mechanism::EcdsaSha256, b"x", &[0; 64]).unwrap_err()));
    }
    assert!(good.check().is_ok(), "the process-wide provider is unaffected");
}

#[test]
fn pct_failure_enters_the_error_state() {
    let bad = Provider::with_fault(Fault::Pct);
    assert!(bad.check().is_ok(), "KATs passed");
    assert!(bad.generate(KeySpec::Aes { bytes: 16 }).is_ok(), "no PCT for secret keys");
    let e = bad.generate(KeySpec::Ec(Curve::P256)).unwrap_err();
    assert!(matches!(e, Error::ErrorState(ref n) if n == "pairwise consistency test"), "{e:?}");
    assert!(bad.generate(KeySpec::Aes { bytes: 16 }).is_err(), "sticky");
    for spec in [KeySpec::Ed25519, KeySpec::X25519, KeySpec::MlKem(MlKemParam::MlKem512)] {
        let bad = Provider::with_fault(Fault::Pct);
        assert!(bad.generate(spec).is_err(), "{spec:?}");
        assert!(bad.is_error_state());
    }
}

#[test]
fn signatures_round_trip_for_every_key_spec() {
    let msg = b"the quick brown fox";
    for bits in [2048, 3072] {
        let (g, key) = gen(KeySpec::Rsa { bits });
        assert_eq!(g.public.as_ref().unwrap().rsa_modulus().unwrap().len() * 8, bits);
        assert_eq!(g.public.as_ref().unwrap().rsa_public_exponent().unwrap(), [1, 0, 1]);
        for mech in [Mechanism::Sha256RsaPkcs, Mechanism::Sha384RsaPkcs, Mechanism::Sha512RsaPkcs] {
            sign_round_trip(&key, &mech, msg);
        }
        for d in [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
            sign_round_trip(&key, &Mechanism::pss(d, false), msg);
            let digest = p().digest(d, msg).unwrap();
            sign_round_trip(&key, &Mechanism::pss(d, true), &digest);
            sign_round_trip(&key, &Mechanism::RsaPkcs, &rsa_digest_info(&digest).unwrap());
        }
    }
    for curve in Curve::ALL {
        let (_, key) = gen(KeySpec::Ec(curve));
        for mech in [Mechanism::EcdsaSha256, Mechanism::EcdsaSha384, Mechanism::EcdsaSha512] {
            sign_round_trip(&key, &mech, msg);
            assert_eq!(key.signature_len(&mech), 2 * curve.field_bytes());
        }
        for len in [20, 28, 32, 48, 64] {
            sign_round_trip(&key, &Mechanism::Ecdsa, &vec![0xa5; len]);
        }
        assert!(matches!(key.sign(p(), &Mechanism::Ecdsa, &[1; 19]), Err(Error::DataLenRange)));
        assert!(matches!(key.sign(p(), &Mechanism::Ecdsa, &[1; 65]), Err(Error::DataLenRange)));
    }
    let (_, ed) = gen(KeySpec::Ed25519);
    sign_round_trip(&ed, &Mechanism::EdDsa(None), msg);
    for param in [MlDsaParam::MlDsa44, MlDsaParam::MlDsa65, MlDsaParam::MlDsa87] {
        let (_, key) = gen(KeySpec::MlDsa(param));
        sign_round_trip(&key, &Mechanism::MlDsa { context: vec![] }, msg);
    }
    for d in [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512] {
        let (_, key) = gen(KeySpec::GenericSecret { bytes: 32 });
        let tag = key.sign(p(), &Mechanism::Hmac(d), msg).unwrap();
        assert_eq!(tag.len(), d.output_len());
        key.verify(p(), &Mechanism::Hmac(d), msg, &tag).unwrap();
        let mut bad = tag.clone();
        bad[0] ^= 1;
        assert!(matches!(
            key.verify(p(), &Mechanism::Hmac(d), msg, &bad),
            Err(Error::SignatureInvalid)
        ));
        assert!(matches!(
            key.verify(p(), &Mechanism::Hmac(d), msg, &tag[1..]),
            Err(Error::SignatureLenRange)
        ));
    }
}

#[test]
fn raw_ecdsa_equals_fips_186_truncation_checked_by_aws_lc() {
    use aws_lc_rs::signature as sig;
    let msg = b"cross-check";
    let cases: [(Curve, Mechanism, &'static sig::EcdsaVerificationAlgorithm); 3] = [
        (Curve::P256, Mechanism::EcdsaSha512, &sig::ECDSA_P256_SHA512_ASN1),
        (Curve::P384, Mechanism::EcdsaSha256, &sig::ECDSA_P384_SHA256_ASN1),
        (Curve::P521, Mechanism::EcdsaSha256, &sig::ECDSA_P521_SHA256_ASN1),
    ];
    for (curve, mech, alg) in cases {
        let (g, key) = gen(KeySpec::Ec(curve));
        let raw = key.sign(p(), &mech, msg).unwrap();
        let der_sig = ecdsa_raw_to_der(curve, &raw).unwrap();
        assert_eq!(ecdsa_der_to_raw(curve, &der_sig).unwrap(), raw);
        let point = g.public.unwrap().raw().to_vec();
        sig::UnparsedPublicKey::new(alg, &point).verify(msg, &der_sig).unwrap();
        assert!(sig::UnparsedPublicKey::new(alg, &point).verify(b"other", &der_sig).is_err());
    }
}

#[test]
fn secp256k1_signatures_are_low_s() {
    let half_n =
        hex::decode("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0").unwrap();
    let (_, key) = gen(KeySpec::Ec(Curve::Secp256k1));
    for i in 0..64u8 {
        let s = key.sign(p(), &Mechanism::EcdsaSha256, &[i]).unwrap();
        assert!(s[32..] <= half_n[..], "high S produced");
        key.verify(p(), &Mechanism::EcdsaSha256, &[i], &s).unwrap();
    }
    // n - 1 becomes 1; a low value stays.
    let n =
        hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141").unwrap();
    let mut sig = vec![0u8; 64];
    sig[32..].copy_from_slice(&n);
    sig[63] -= 1;
    sign::secp256k1_low_s(&mut sig);
    let mut one = [0u8; 32];
    one[31] = 1;
    assert_eq!(&sig[32..], &one);
    sign::secp256k1_low_s(&mut sig);
    assert_eq!(&sig[32..], &one);
}

#[test]
fn symmetric_ciphers_round_trip_and_reject_tampering() {
    for bytes in [16, 24, 32] {
        let (_, key) = gen(KeySpec::Aes { bytes });
        let pt: Vec<u8> = (0..100u8).collect();
        let mechs = [
            Mechanism::AesGcm { iv: vec![7; 12], aad: b"hdr".to_vec(), tag_bits: 128 },
            Mechanism::AesCbcPad { iv: [3; 16] },
            Mechanism::AesCtr { counter_block: [9; 16], counter_bits: 32 },
        ];
        for mech in &mechs {
            let ct = key.encrypt(p(), mech, &pt).unwrap();
            assert_eq!(ct.len(), key.encrypt_len(mech, pt.len()), "{mech:?}");
            assert_ne!(&ct[..pt.len().min(ct.len())], &pt[..pt.len().min(ct.len())]);
            let back = key.decrypt(p(), mech, &ct).unwrap();
            assert_eq!(back.expose_secret(), &pt[..]);
            assert!(back.len() <= key.decrypt_len_max(mech, ct.len()));
        }
        let gcm = &mechs[0];
        let mut ct = key.encrypt(p(), gcm, &pt).unwrap();
        ct[0] ^= 1;
        assert!(matches!(key.decrypt(p(), gcm, &ct), Err(Error::EncryptedDataInvalid)));
        let other_aad = Mechanism::AesGcm { iv: vec![7; 12], aad: b"hdR".to_vec(), tag_bits: 128 };
        ct[0] ^= 1;
        assert!(key.decrypt(p(), &other_aad, &ct).is_err());
        let cbc = Mechanism::AesCbc { iv: [1; 16] };
        let ct = key.encrypt(p(), &cbc, &pt[..96]).unwrap();
        assert_eq!(key.decrypt(p(), &cbc, &ct).unwrap().expose_secret(), &pt[..96]);
        assert!(matches!(key.encrypt(p(), &cbc, &pt[..95]), Err(Error::DataLenRange)));
        let bad_iv = Mechanism::AesGcm { iv: vec![7; 16], aad: vec![], tag_bits: 128 };
        assert!(matches!(key.encrypt(p(), &bad_iv, &pt), Err(Error::MechanismParamInvalid(_))));
        let bad_tag = Mechanism::AesGcm { iv: vec![7; 12], aad: vec![], tag_bits: 96 };
        assert!(matches!(key.encrypt(p(), &bad_tag, &pt), Err(Error::MechanismParamInvalid(_))));
    }
}

#[test]
fn rsa_encryption_round_trips() {
    let (_, key) = gen(KeySpec::Rsa { bits: 2048 });
    let public = p().load_public(key.public().unwrap()).unwrap();
    for (hash, label) in [
        (DigestAlg::Sha1, vec![]),
        (DigestAlg::Sha256, b"lbl".to_vec()),
        (DigestAlg::Sha512, vec![]),
    ] {
        let mech = Mechanism::RsaOaep { hash, mgf_hash: hash, label: label.clone() };
        let ct = public.encrypt(p(), &mech, b"secret").unwrap();
        assert_eq!(ct.len(), 256);
        assert_eq!(key.decrypt(p(), &mech, &ct).unwrap().expose_secret(), b"secret");
        let other = Mechanism::RsaOaep { hash, mgf_hash: hash, label: b"x".to_vec() };
        assert!(matches!(key.decrypt(p(), &other, &ct), Err(Error::EncryptedDataInvalid)));
        let mut bad = ct.clone();
        bad[10] ^= 1;
        assert!(key.decrypt(p(), &mech, &bad).is_err());
    }
    let ct = key.encrypt(p(), &Mechanism::RsaPkcs, b"v15").unwrap();
    assert_eq!(key.decrypt(p(), &Mechanism::RsaPkcs, &ct).unwrap().expose_secret(), b"v15");
    let mixed =
        Mechanism::RsaOaep { hash: DigestAlg::Sha256, mgf_hash: DigestAlg::Sha1, label: vec![] };
    assert!(matches!(public.encrypt(p(), &mixed, b"x"), Err(Error::MechanismParamInvalid(_))));
    let oaep =
        Mechanism::RsaOaep { hash: DigestAlg::Sha256, mgf_hash: DigestAlg::Sha256, label: vec![] };
    assert!(matches!(public.encrypt(p(), &oaep, &[0; 200]), Err(Error::DataLenRange)));
}

#[test]
fn wrap_and_unwrap() {
    let (_, kek) = gen(KeySpec::Aes { bytes: 32 });
    let (aes, _) = gen(KeySpec::Aes { bytes: 16 });
    let (ec, ec_loaded) = gen(KeySpec::Ec(Curve::P384));
    let w = kek.wrap(p(), &Mechanism::AesKeyWrap, &aes.material).unwrap();
    let back = kek.unwrap(p(), &Mechanism::AesKeyWrap, &w, KeySpec::Aes { bytes: 0 }).unwrap();
    assert_eq!(back.expose_secret(), aes.material.expose_secret());
    assert!(kek.wrap(p(), &Mechanism::AesKeyWrap, &ec.material).is_err(), "KW wraps secrets only");
    let w = kek.wrap(p(), &Mechanism::AesKeyWrapPad, &ec.material).unwrap();
    let back = kek.unwrap(p(), &Mechanism::AesKeyWrapPad, &w, KeySpec::Ec(Curve::P384)).unwrap();
    let reloaded = p().load(&back).unwrap();
    assert_eq!(reloaded.public(), ec_loaded.public());
    assert!(matches!(
        kek.unwrap(p(), &Mechanism::AesKeyWrapPad, &w, KeySpec::Ec(Curve::P256)),
        Err(Error::WrappedKeyInvalid)
    ));
    let mut bad = w.clone();
    bad[5] ^= 1;
    assert!(matches!(
        kek.unwrap(p(), &Mechanism::AesKeyWrapPad, &bad, KeySpec::Ec(Curve::P384)),
        Err(Error::WrappedKeyInvalid)
    ));
    let (rsa, _) = gen(KeySpec::Rsa { bits: 2048 });
    let rsa_key = p().load(&rsa.material).unwrap();
    let oaep =
        Mechanism::RsaOaep { hash: DigestAlg::Sha256, mgf_hash: DigestAlg::Sha256, label: vec![] };
    let public = p().load_public(rsa.public.as_ref().unwrap()).unwrap();
    let w = public.wrap(p(), &oaep, &aes.material).unwrap();
    let back = rsa_key.unwrap(p(), &oaep, &w, KeySpec::Aes { bytes: 16 }).unwrap();
    assert_eq!(back.expose_secret(), aes.material.expose_secret());
    assert!(matches!(
        rsa_key.unwrap(p(), &oaep, &w, KeySpec::Aes { bytes: 32 }),
        Err(Error::WrappedKeyInvalid)
    ));
}

#[test]
#[allow(clippy::many_single_char_names)]
fn derivation_agrees_both_ways() {
    for spec in [
        KeySpec::Ec(Curve::P256),
        KeySpec::Ec(Curve::P384),
        KeySpec::Ec(Curve::P521),
        KeySpec::X25519,
    ] {
        let (a, ka) = gen(spec);
        let (b, kb) = gen(spec);
        for kdf in [EcdhKdf::Null, EcdhKdf::X963(DigestAlg::Sha256)] {
            let shared = if kdf == EcdhKdf::Null { vec![] } else { b"ctx".to_vec() };
            let m = |peer: &GeneratedKey, der: bool| Mechanism::Ecdh1Derive {
                kdf,
                shared_data: shared.clone(),
                public_data: if der {
                    peer.public.as_ref().unwrap().ec_point_der().unwrap()
                } else {
                    peer.public.as_ref().unwrap().raw().to_vec()
                },
            };
            let x = ka.derive(p(), &m(&b, false), 32).unwrap();
            let y = kb.derive(p(), &m(&a, true), 32).unwrap();
            assert!(x.ct_eq(y.expose_secret()), "{spec:?} {kdf:?}");
        }
        let bad = Mechanism::Ecdh1Derive {
            kdf: EcdhKdf::Null,
            shared_data: vec![],
            public_data: vec![4; 5],
        };
        assert!(matches!(ka.derive(p(), &bad, 0), Err(Error::MechanismParamInvalid(_))));
    }
    let (_, k1) = gen(KeySpec::Ec(Curve::Secp256k1));
    let m = Mechanism::Ecdh1Derive { kdf: EcdhKdf::Null, shared_data: vec![], public_data: vec![] };
    assert!(matches!(k1.derive(p(), &m, 0), Err(Error::KeyTypeInconsistent)));
    let (_, ikm) = gen(KeySpec::GenericSecret { bytes: 32 });
    let hk = |extract, expand| Mechanism::Hkdf {
        extract,
        expand,
        hash: DigestAlg::Sha384,
        salt: Some(b"s".to_vec()),
        info: b"i".to_vec(),
    };
    let prk = ikm.derive(p(), &hk(true, false), 0).unwrap();
    let both = ikm.derive(p(), &hk(true, true), 80).unwrap();
    let prk_key = p()
        .load(
            &p().import_secret(KeySpec::GenericSecret { bytes: 48 }, prk.expose_secret()).unwrap(),
        )
        .unwrap();
    let expanded = prk_key.derive(p(), &hk(false, true), 80).unwrap();
    assert!(both.ct_eq(expanded.expose_secret()));
    assert!(ikm.derive(p(), &hk(false, false), 32).is_err());
    assert!(ikm.derive(p(), &hk(true, true), 255 * 48 + 1).is_err());
}

#[test]
fn ml_kem_round_trips() {
    for param in [MlKemParam::MlKem512, MlKemParam::MlKem768, MlKemParam::MlKem1024] {
        let (g, key) = gen(KeySpec::MlKem(param));
        let public = p().load_public(g.public.as_ref().unwrap()).unwrap();
        let (ct, ss) = public.encapsulate(p()).unwrap();
        assert_eq!(ct.len(), param.ciphertext_len());
        assert!(key.decapsulate(p(), &ct).unwrap().ct_eq(ss.expose_secret()));
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(
            !key.decapsulate(p(), &bad).unwrap().ct_eq(ss.expose_secret()),
            "implicit rejection"
        );
        assert!(matches!(key.decapsulate(p(), &ct[1..]), Err(Error::EncryptedDataLenRange)));
        let reparsed = PublicKey::from_spki_der(g.public.as_ref().unwrap().spki_der()).unwrap();
        assert_eq!(&reparsed, g.public.as_ref().unwrap());
    }
}

#[test]
fn import_export_and_encodings() {
    let specs = [
        KeySpec::Rsa { bits: 2048 },
        KeySpec::Ec(Curve::P256),
        KeySpec::Ec(Curve::P521),
        KeySpec::Ec(Curve::Secp256k1),
        KeySpec::Ed25519,
        KeySpec::X25519,
        KeySpec::MlDsa(MlDsaParam::MlDsa65),
    ];
    for spec in specs {
        let (g, _) = gen(spec);
        let public = g.public.clone().unwrap();
        let imported = p().import_private_pkcs8(g.material.expose_secret()).unwrap();
        assert_eq!(imported.material.spec(), spec);
        assert_eq!(imported.public.as_ref(), Some(&public));
        assert_eq!(PublicKey::from_spki_der(public.spki_der()).unwrap(), public);
        let pem = public.to_pem();
        assert!(
            pem.starts_with("-----BEGIN PUBLIC KEY-----\n")
                && pem.ends_with("-----END PUBLIC KEY-----\n")
        );
        assert!(pem.lines().all(|l| l.len() <= 64));
        if let KeySpec::Ec(c) = spec {
            assert_eq!(public.raw().len(), 1 + 2 * c.field_bytes());
            let point = public.ec_point_der().unwrap();
            assert_eq!(PublicKey::from_parts(spec, &point).unwrap(), public);
        }
        let mut truncated = g.material.expose_secret().to_vec();
        truncated.pop();
        assert!(p().import_private_pkcs8(&truncated).is_err());
    }
    assert!(matches!(
        p().import_secret(KeySpec::Aes { bytes: 16 }, &[0; 15]),
        Err(Error::KeySizeRange)
    ));
    assert!(matches!(
        p().import_secret(KeySpec::GenericSecret { bytes: 0 }, &[]),
        Err(Error::KeySizeRange)
    ));
    assert!(matches!(p().generate(KeySpec::Rsa { bits: 1024 }), Err(Error::KeySizeRange)));
    assert!(matches!(p().generate(KeySpec::Rsa { bits: 8192 }), Err(Error::KeySizeRange)));
    assert!(matches!(p().generate(KeySpec::Aes { bytes: 20 }), Err(Error::KeySizeRange)));
}

#[test]
fn mechanism_misuse_is_reported_precisely() {
    let (_, ed) = gen(KeySpec::Ed25519);
    let (_, mldsa) = gen(KeySpec::MlDsa(MlDsaParam::MlDsa44));
    let (_, rsa) = gen(KeySpec::Rsa { bits: 2048 });
    let (_, aes) = gen(KeySpec::Aes { bytes: 32 });
    let ph = Mechanism::EdDsa(Some(EdDsaParams { prehash: true, context: vec![] }));
    assert!(matches!(ed.sign(p(), &ph, b"m"), Err(Error::MechanismParamInvalid(_))));
    let ctx = Mechanism::MlDsa { context: b"ctx".to_vec() };
    assert!(matches!(mldsa.sign(p(), &ctx, b"m"), Err(Error::MechanismParamInvalid(_))));
    // Any salt the key allows is accepted (and verified as exactly that salt length).
    let salty = |salt_len| Mechanism::Sha256RsaPkcsPss {
        hash: DigestAlg::Sha256,
        mgf_hash: DigestAlg::Sha1,
        salt_len,
    };
    let sig = rsa.sign(p(), &salty(20), b"m").unwrap();
    rsa.verify(p(), &salty(20), b"m", &sig).unwrap();
    assert!(matches!(rsa.verify(p(), &salty(32), b"m", &sig), Err(Error::SignatureInvalid)));
    assert!(matches!(rsa.sign(p(), &salty(300), b"m"), Err(Error::MechanismParamInvalid(_))));
    let wrong_hash = Mechanism::Sha256RsaPkcsPss {
        hash: DigestAlg::Sha384,
        mgf_hash: DigestAlg::Sha384,
        salt_len: 48,
    };
    assert!(matches!(rsa.sign(p(), &wrong_hash, b"m"), Err(Error::MechanismParamInvalid(_))));
    // Raw PKCS#1 v1.5 signs any input of up to k - 11 bytes, and nothing longer.
    let sig = rsa.sign(p(), &Mechanism::RsaPkcs, &[7; 36]).unwrap();
    rsa.verify(p(), &Mechanism::RsaPkcs, &[7; 36], &sig).unwrap();
    assert_eq!(rsa.verify_recover(p(), &Mechanism::RsaPkcs, &sig).unwrap(), vec![7; 36]);
    assert!(rsa.sign(p(), &Mechanism::RsaPkcs, &[0; 245]).is_ok());
    assert!(matches!(rsa.sign(p(), &Mechanism::RsaPkcs, &[0; 246]), Err(Error::DataLenRange)));
    assert!(matches!(ed.sign(p(), &Mechanism::EcdsaSha256, b"m"), Err(Error::KeyTypeInconsistent)));
    assert!(matches!(
        aes.sign(p(), &Mechanism::Hmac(DigestAlg::Sha256), b"m"),
        Err(Error::KeyTypeInconsistent)
    ));
    assert!(matches!(aes.sign(p(), &Mechanism::AesKeyWrap, b"m"), Err(Error::MechanismInvalid(_))));
    assert!(matches!(
        ed.verify(p(), &Mechanism::EdDsa(None), b"m", &[0; 63]),
        Err(Error::SignatureLenRange)
    ));
    assert!(matches!(
        rsa.verify(p(), &Mechanism::Sha256RsaPkcs, b"m", &[0; 255]),
        Err(Error::SignatureLenRange)
    ));
    assert_eq!(rsa.signature_len(&Mechanism::pss(DigestAlg::Sha512, false)), 256);
    assert_eq!(mldsa.signature_len(&Mechanism::MlDsa { context: vec![] }), 2420);
    assert_eq!(rsa.encrypt_len(&Mechanism::RsaPkcs, 10), 256);
    assert_eq!(aes.encrypt_len(&Mechanism::AesCbcPad { iv: [0; 16] }, 16), 32);
}

#[test]
fn random_fills_and_debug_redacts() {
    let mut a = [0u8; 33];
    let mut b = [0u8; 33];
    p().random(&mut a).unwrap();
    p().random(&mut b).unwrap();
    assert_ne!(a, b);
    p().random(&mut []).unwrap();
    let key = p().import_secret(KeySpec::Aes { bytes: 16 }, &[0x42; 16]).unwrap();
    let loaded = p().load(&key).unwrap();
    for s in [format!("{key:?}"), format!("{loaded:?}")] {
        assert!(!s.contains("42, 42") && !s.contains("4242") && !s.contains("66"), "{s}");
    }
}
