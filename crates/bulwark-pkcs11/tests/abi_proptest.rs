//! Robustness through the raw C ABI: random templates, attribute arrays, lengths, mechanism
//! parameters, handles and call orders, fed to the built `.so` via its function list.
//!
//! Property: every call returns, and returns a PKCS#11 code that is not `CKR_GENERAL_ERROR`
//! (which is what a caught panic or an internal fault becomes). Buffers passed are always valid
//! for the lengths passed, except where a NULL pointer is paired with a non-zero length, which
//! the module must reject with `CKR_ARGUMENTS_BAD` (anything else would be the caller breaking
//! the C contract, which no module can survive).
//!
//! Also: `CKR_BUFFER_TOO_SMALL` keeps the operation active, and the NULL-output length query.

// This test drives the C ABI through raw function pointers, which needs `unsafe`.
#![allow(unsafe_code)]
// Test harness: every call below passes buffers valid for the lengths given; C-style pointer
// plumbing and short names are clearer here than the pedantic alternatives.
#![allow(
    missing_docs,
    clippy::undocumented_unsafe_blocks,
    clippy::borrow_as_ptr,
    clippy::many_single_char_names,
    clippy::cast_ptr_alignment,
    clippy::manual_c_str_literals
)]

mod common;

use std::ffi::c_void;
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use cryptoki_sys::*;
use proptest::prelude::*;

struct Abi {
    f: &'static CK_FUNCTION_LIST_3_0,
    session: CK_SESSION_HANDLE,
    slot: CK_SLOT_ID,
    aes: CK_OBJECT_HANDLE,
    ec_priv: CK_OBJECT_HANDLE,
    ec_pub: CK_OBJECT_HANDLE,
}

// SAFETY (test): the function list is an immutable static inside the loaded library.
unsafe impl Sync for Abi {}
unsafe impl Send for Abi {}

macro_rules! call {
    ($f:expr, $name:ident $(, $a:expr)* $(,)?) => {
        unsafe { ($f.$name.expect(stringify!($name)))($($a),*) }
    };
}

fn attr(t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE { type_: t, pValue: v.as_ptr() as *mut c_void, ulValueLen: v.len() as CK_ULONG }
}

fn abi() -> &'static Abi {
    static ABI: OnceLock<Abi> = OnceLock::new();
    ABI.get_or_init(|| {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let conf = dir.path().join("p.toml");
        std::fs::write(
            &conf,
            format!(
                "[[slot]]\nlabel = \"fz\"\nstore = \"{}\"\n",
                dir.path().join("t.db").display()
            ),
        )
        .unwrap();
        std::env::set_var("BULWARK_PKCS11_CONF", &conf);
        let shconf = dir.path().join("sh.conf");
        std::fs::create_dir_all(dir.path().join("sh")).unwrap();
        std::fs::write(
            &shconf,
            format!("directories.tokendir = {}\n", dir.path().join("sh").display()),
        )
        .unwrap();
        std::env::set_var("SOFTHSM2_CONF", &shconf);
        let lib = Box::leak(Box::new(
            unsafe { libloading::Library::new(common::module_path()) }.expect("load"),
        ));
        let get: libloading::Symbol<
            unsafe extern "C" fn(
                *mut CK_UTF8CHAR,
                *mut CK_VERSION,
                *mut *mut CK_INTERFACE,
                CK_FLAGS,
            ) -> CK_RV,
        > = unsafe { lib.get(b"C_GetInterface") }.expect("C_GetInterface");
        let mut v = CK_VERSION { major: 3, minor: 0 };
        let mut iface: *mut CK_INTERFACE = null_mut();
        assert_eq!(unsafe { get(b"PKCS 11\0".as_ptr().cast_mut(), &mut v, &mut iface, 0) }, CKR_OK);
        let f: &'static CK_FUNCTION_LIST_3_0 =
            unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_0) };
        assert_eq!(call!(f, C_Initialize, null_mut()), CKR_OK);
        let mut n: CK_ULONG = 4;
        let mut slots = [0 as CK_SLOT_ID; 4];
        assert_eq!(call!(f, C_GetSlotList, CK_FALSE, slots.as_mut_ptr(), &mut n), CKR_OK);
        let slot = slots[0];
        let mut label = [b' '; 32];
        label[..2].copy_from_slice(b"fz");
        let so = b"so-pin-1234";
        let user = b"user-pin-1234";
        assert_eq!(
            call!(
                f,
                C_InitToken,
                slot,
                so.as_ptr().cast_mut(),
                so.len() as CK_ULONG,
                label.as_mut_ptr()
            ),
            CKR_OK
        );
        // SoftHSM re-numbers an initialized slot; take the first initialized one.
        let mut n: CK_ULONG = 4;
        assert_eq!(call!(f, C_GetSlotList, CK_TRUE, slots.as_mut_ptr(), &mut n), CKR_OK);
        let slot = (0..n as usize)
            .map(|i| slots[i])
            .find(|s| {
                let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
                call!(f, C_GetTokenInfo, *s, &mut ti) == CKR_OK
                    && ti.flags & CKF_TOKEN_INITIALIZED != 0
            })
            .expect("initialized slot");
        let mut h: CK_SESSION_HANDLE = 0;
        assert_eq!(
            call!(
                f,
                C_OpenSession,
                slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                None,
                &mut h
            ),
            CKR_OK
        );
        assert_eq!(
            call!(f, C_Login, h, CKU_SO, so.as_ptr().cast_mut(), so.len() as CK_ULONG),
            CKR_OK
        );
        assert_eq!(
            call!(f, C_InitPIN, h, user.as_ptr().cast_mut(), user.len() as CK_ULONG),
            CKR_OK
        );
        assert_eq!(call!(f, C_Logout, h), CKR_OK);
        assert_eq!(
            call!(f, C_Login, h, CKU_USER, user.as_ptr().cast_mut(), user.len() as CK_ULONG),
            CKR_OK
        );
        let t = [1u8];
        let f0 = [0u8];
        let len32 = 32u64.to_ne_bytes();
        let mut aes_t = [
            attr(CKA_TOKEN, &f0),
            attr(CKA_VALUE_LEN, &len32),
            attr(CKA_ENCRYPT, &t),
            attr(CKA_DECRYPT, &t),
            attr(CKA_SIGN, &t),
        ];
        let mut m =
            CK_MECHANISM { mechanism: CKM_AES_KEY_GEN, pParameter: null_mut(), ulParameterLen: 0 };
        let mut aes = 0;
        assert_eq!(call!(f, C_GenerateKey, h, &mut m, aes_t.as_mut_ptr(), 4, &mut aes), CKR_OK);
        let p256 = [0x06u8, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let mut pub_t = [attr(CKA_TOKEN, &f0), attr(CKA_EC_PARAMS, &p256), attr(CKA_VERIFY, &t)];
        let mut priv_t = [attr(CKA_TOKEN, &f0), attr(CKA_SIGN, &t)];
        let mut m = CK_MECHANISM {
            mechanism: CKM_EC_KEY_PAIR_GEN,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let (mut ec_pub, mut ec_priv) = (0, 0);
        assert_eq!(
            call!(
                f,
                C_GenerateKeyPair,
                h,
                &mut m,
                pub_t.as_mut_ptr(),
                3,
                priv_t.as_mut_ptr(),
                2,
                &mut ec_pub,
                &mut ec_priv
            ),
            CKR_OK
        );
        Abi { f, session: h, slot, aes, ec_priv, ec_pub }
    })
}

const ATTR_TYPES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_VALUE,
    CKA_KEY_TYPE,
    CKA_ID,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_VALUE_LEN,
    CKA_EXTRACTABLE,
    CKA_MODIFIABLE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_MODULUS_BITS,
    CKA_ALLOWED_MECHANISMS,
    CKA_START_DATE,
    CKA_DESTROYABLE,
    CKA_COPYABLE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_UNIQUE_ID,
    CKA_APPLICATION,
    CKA_CERTIFICATE_TYPE,
    0x8000_0001,
    0xdead,
];

const MECHS: &[CK_MECHANISM_TYPE] = &[
    CKM_AES_GCM,
    CKM_AES_CBC,
    CKM_AES_CBC_PAD,
    CKM_AES_CTR,
    CKM_AES_KEY_WRAP,
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_SHA256_HMAC,
    CKM_EDDSA,
    CKM_RSA_PKCS_PSS,
    CKM_RSA_PKCS_OAEP,
    CKM_SHA256,
    CKM_ECDH1_DERIVE,
    CKM_HKDF_DERIVE,
    CKM_AES_KEY_GEN,
    CKM_EC_KEY_PAIR_GEN,
    0x4242,
];

/// One random attribute: a type, a value, and whether pValue is NULL.
fn an_attr() -> impl Strategy<Value = (CK_ATTRIBUTE_TYPE, Vec<u8>, bool)> {
    (
        prop_oneof![prop::sample::select(ATTR_TYPES), any::<u64>()],
        prop_oneof![
            Just(vec![1u8]),
            Just(vec![0u8]),
            Just(32u64.to_ne_bytes().to_vec()),
            Just(CKO_SECRET_KEY.to_ne_bytes().to_vec()),
            Just(CKO_DATA.to_ne_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ],
        prop::bool::weighted(0.05),
    )
}

fn template(v: &[(CK_ATTRIBUTE_TYPE, Vec<u8>, bool)]) -> Vec<CK_ATTRIBUTE> {
    v.iter()
        .map(|(t, val, null)| CK_ATTRIBUTE {
            type_: *t,
            // NULL with a non-zero length must be refused with CKR_ARGUMENTS_BAD.
            pValue: if *null { null_mut() } else { val.as_ptr() as *mut c_void },
            ulValueLen: val.len() as CK_ULONG,
        })
        .collect()
}

fn ok_rv(rv: CK_RV, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(rv != CKR_GENERAL_ERROR, "{what} returned CKR_GENERAL_ERROR");
    prop_assert!(rv < 0x8000_0000 || rv == CKR_VENDOR_DEFINED, "{what}: not a CKR code: {rv:#x}");
    Ok(())
}

/// A mechanism with well-formed or deliberately wrong-size parameters (never dangling).
#[derive(Debug, Clone)]
struct Mech {
    ty: CK_MECHANISM_TYPE,
    param: Vec<u8>,
    iv: Vec<u8>,
    tag_bits: u64,
    shape: u8,
}

fn a_mech() -> impl Strategy<Value = Mech> {
    (
        prop::sample::select(MECHS),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..20),
        prop_oneof![Just(128u64), any::<u64>()],
        0u8..4,
    )
        .prop_map(|(ty, param, iv, tag_bits, shape)| Mech { ty, param, iv, tag_bits, shape })
}

/// Calls `go` with a `CK_MECHANISM` built from `m` (its parameter memory lives for the call).
fn with_mech<R>(m: &Mech, go: impl FnOnce(*mut CK_MECHANISM) -> R) -> R {
    let mut gcm = CK_GCM_PARAMS {
        pIv: m.iv.as_ptr().cast_mut(),
        ulIvLen: m.iv.len() as CK_ULONG,
        ulIvBits: (m.iv.len() * 8) as CK_ULONG,
        pAAD: m.param.as_ptr().cast_mut(),
        ulAADLen: m.param.len() as CK_ULONG,
        ulTagBits: m.tag_bits,
    };
    let mut raw = m.param.clone();
    let (p, len): (*mut c_void, usize) = match m.shape {
        0 => (null_mut(), 0),
        // NULL with a length: CKR_ARGUMENTS_BAD or CKR_MECHANISM_PARAM_INVALID.
        1 => (null_mut(), m.param.len()),
        2 if m.ty == CKM_AES_GCM => ((&raw mut gcm).cast(), std::mem::size_of::<CK_GCM_PARAMS>()),
        // Raw bytes: only ever read as a struct when the length matches exactly, so make sure it
        // never does for pointer-carrying structs.
        _ => {
            if matches!(raw.len(), 24 | 32 | 40 | 48 | 72) {
                raw.push(0);
            }
            (raw.as_mut_ptr().cast(), raw.len())
        }
    };
    let mut mech = CK_MECHANISM { mechanism: m.ty, pParameter: p, ulParameterLen: len as CK_ULONG };
    go(&mut mech)
}

#[derive(Debug, Clone)]
enum Op {
    SignInit(Mech, u8),
    Sign(usize, Option<usize>),
    SignUpdate(usize),
    SignFinal(Option<usize>),
    VerifyInit(Mech, u8),
    Verify(usize, usize),
    EncryptInit(Mech, u8),
    Encrypt(usize, Option<usize>),
    EncryptUpdate(usize, Option<usize>),
    EncryptFinal(Option<usize>),
    DecryptInit(Mech, u8),
    Decrypt(usize, Option<usize>),
    DigestInit(Mech),
    Digest(usize, Option<usize>),
    FindInit(Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>, bool)>),
    Find(usize),
    FindFinal,
    GetAttr(u8, Vec<(CK_ATTRIBUTE_TYPE, Option<usize>)>),
    Random(usize),
    SessionInfo,
}

fn an_op() -> impl Strategy<Value = Op> {
    let len = 0usize..300;
    let cap = prop::option::weighted(0.8, 0usize..300);
    prop_oneof![
        (a_mech(), any::<u8>()).prop_map(|(m, k)| Op::SignInit(m, k)),
        (len.clone(), cap.clone()).prop_map(|(l, c)| Op::Sign(l, c)),
        len.clone().prop_map(Op::SignUpdate),
        cap.clone().prop_map(Op::SignFinal),
        (a_mech(), any::<u8>()).prop_map(|(m, k)| Op::VerifyInit(m, k)),
        (len.clone(), 0usize..200).prop_map(|(l, s)| Op::Verify(l, s)),
        (a_mech(), any::<u8>()).prop_map(|(m, k)| Op::EncryptInit(m, k)),
        (len.clone(), cap.clone()).prop_map(|(l, c)| Op::Encrypt(l, c)),
        (len.clone(), cap.clone()).prop_map(|(l, c)| Op::EncryptUpdate(l, c)),
        cap.clone().prop_map(Op::EncryptFinal),
        (a_mech(), any::<u8>()).prop_map(|(m, k)| Op::DecryptInit(m, k)),
        (len.clone(), cap.clone()).prop_map(|(l, c)| Op::Decrypt(l, c)),
        a_mech().prop_map(Op::DigestInit),
        (len.clone(), cap.clone()).prop_map(|(l, c)| Op::Digest(l, c)),
        prop::collection::vec(an_attr(), 0..4).prop_map(Op::FindInit),
        (0usize..8).prop_map(Op::Find),
        Just(Op::FindFinal),
        (
            any::<u8>(),
            prop::collection::vec(
                (prop::sample::select(ATTR_TYPES), prop::option::of(0usize..80)),
                0..6
            )
        )
            .prop_map(|(k, a)| Op::GetAttr(k, a)),
        (0usize..100).prop_map(Op::Random),
        Just(Op::SessionInfo),
    ]
}

fn key(a: &Abi, k: u8) -> CK_OBJECT_HANDLE {
    match k % 5 {
        0 => a.aes,
        1 => a.ec_priv,
        2 => a.ec_pub,
        3 => 0,
        _ => u64::from(k) << 40 | 7,
    }
}

/// Output buffer of `cap` bytes (None = length query with a NULL pointer).
fn out_call(cap: Option<usize>, go: impl FnOnce(*mut u8, *mut CK_ULONG) -> CK_RV) -> CK_RV {
    let mut buf = vec![0u8; cap.unwrap_or(0)];
    let mut l = cap.unwrap_or(0) as CK_ULONG;
    let p = if cap.is_some() { buf.as_mut_ptr() } else { null_mut() };
    let rv = go(p, &mut l);
    if rv == CKR_OK {
        if let Some(c) = cap {
            assert!(l as usize <= c, "wrote past the declared capacity");
        }
    }
    rv
}

fn run(a: &Abi, h: CK_SESSION_HANDLE, op: &Op) -> CK_RV {
    let f = a.f;
    let data = |n: usize| vec![0x5a_u8; n];
    match op {
        Op::SignInit(m, k) => with_mech(m, |pm| call!(f, C_SignInit, h, pm, key(a, *k))),
        Op::Sign(n, c) => {
            let d = data(*n);
            out_call(*c, |p, l| {
                call!(f, C_Sign, h, d.as_ptr().cast_mut(), d.len() as CK_ULONG, p, l)
            })
        }
        Op::SignUpdate(n) => {
            let d = data(*n);
            call!(f, C_SignUpdate, h, d.as_ptr().cast_mut(), d.len() as CK_ULONG)
        }
        Op::SignFinal(c) => out_call(*c, |p, l| call!(f, C_SignFinal, h, p, l)),
        Op::VerifyInit(m, k) => with_mech(m, |pm| call!(f, C_VerifyInit, h, pm, key(a, *k))),
        Op::Verify(n, s) => {
            let (d, sig) = (data(*n), data(*s));
            call!(
                f,
                C_Verify,
                h,
                d.as_ptr().cast_mut(),
                d.len() as CK_ULONG,
                sig.as_ptr().cast_mut(),
                sig.len() as CK_ULONG
            )
        }
        Op::EncryptInit(m, k) => with_mech(m, |pm| call!(f, C_EncryptInit, h, pm, key(a, *k))),
        Op::Encrypt(n, c) => {
            let d = data(*n);
            out_call(*c, |p, l| {
                call!(f, C_Encrypt, h, d.as_ptr().cast_mut(), d.len() as CK_ULONG, p, l)
            })
        }
        Op::EncryptUpdate(n, c) => {
            let d = data(*n);
            out_call(*c, |p, l| {
                call!(f, C_EncryptUpdate, h, d.as_ptr().cast_mut(), d.len() as CK_ULONG, p, l)
            })
        }
        Op::EncryptFinal(c) => out_call(*c, |p, l| call!(f, C_EncryptFinal, h, p, l)),
        Op::DecryptInit(m, k) => with_mech(m, |pm| call!(f, C_DecryptInit, h, pm, key(a, *k))),
        Op::Decrypt(n, c) => {
            let d = data(*n);
            out_call(*c, |p, l| {
                call!(f, C_Decrypt, h, d.as_ptr().cast_mut(), d.len() as CK_ULONG, p, l)
            })
        }
        Op::DigestInit(m) => with_mech(m, |pm| call!(f, C_DigestInit, h, pm)),
        Op::Digest(n, c) => {
            let d = data(*n);
            out_call(*c, |p, l| {
                call!(f, C_Digest, h, d.as_ptr().cast_mut(), d.len() as CK_ULONG, p, l)
            })
        }
        Op::FindInit(t) => {
            let mut t = template(t);
            call!(f, C_FindObjectsInit, h, t.as_mut_ptr(), t.len() as CK_ULONG)
        }
        Op::Find(max) => {
            let mut hs = vec![0 as CK_OBJECT_HANDLE; *max];
            let mut n = 0;
            let p = if *max == 0 { null_mut() } else { hs.as_mut_ptr() };
            call!(f, C_FindObjects, h, p, *max as CK_ULONG, &mut n)
        }
        Op::FindFinal => call!(f, C_FindObjectsFinal, h),
        Op::GetAttr(k, want) => {
            let mut bufs: Vec<Vec<u8>> =
                want.iter().map(|(_, c)| vec![0u8; c.unwrap_or(0)]).collect();
            let mut t: Vec<CK_ATTRIBUTE> = want
                .iter()
                .zip(bufs.iter_mut())
                .map(|((ty, c), b)| CK_ATTRIBUTE {
                    type_: *ty,
                    pValue: if c.is_some() { b.as_mut_ptr().cast() } else { null_mut() },
                    ulValueLen: b.len() as CK_ULONG,
                })
                .collect();
            let rv =
                call!(f, C_GetAttributeValue, h, key(a, *k), t.as_mut_ptr(), t.len() as CK_ULONG);
            for (attr, b) in t.iter().zip(&bufs) {
                if !attr.pValue.is_null() && attr.ulValueLen != CK_UNAVAILABLE_INFORMATION {
                    assert!(
                        attr.ulValueLen as usize <= b.len(),
                        "attribute written past its buffer"
                    );
                }
            }
            rv
        }
        Op::Random(n) => {
            let mut b = vec![0u8; *n];
            call!(f, C_GenerateRandom, h, b.as_mut_ptr(), b.len() as CK_ULONG)
        }
        Op::SessionInfo => {
            let mut i: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
            call!(f, C_GetSessionInfo, h, &mut i)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random call sequences on a fresh session: only CKR codes, never a crash or a general error.
    #[test]
    fn random_call_orders(ops in prop::collection::vec(an_op(), 1..25)) {
        let a = abi();
        let f = a.f;
        let mut h = 0;
        prop_assert_eq!(call!(f, C_OpenSession, a.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, null_mut(), None, &mut h), CKR_OK);
        for op in &ops {
            let rv = run(a, h, op);
            ok_rv(rv, &format!("{op:?}"))?;
        }
        prop_assert_eq!(call!(f, C_CloseSession, h), CKR_OK);
        // A closed session is gone.
        prop_assert_eq!(run(a, h, &Op::SessionInfo), CKR_SESSION_HANDLE_INVALID);
    }

    /// Random templates through every template-taking function.
    #[test]
    fn random_templates(t in prop::collection::vec(an_attr(), 0..8), which in 0u8..4) {
        let a = abi();
        let f = a.f;
        let mut tmpl = template(&t);
        let n = tmpl.len() as CK_ULONG;
        let mut out: CK_OBJECT_HANDLE = 0;
        let rv = match which {
            0 => call!(f, C_CreateObject, a.session, tmpl.as_mut_ptr(), n, &mut out),
            1 => {
                let mut m = CK_MECHANISM { mechanism: CKM_AES_KEY_GEN, pParameter: null_mut(), ulParameterLen: 0 };
                call!(f, C_GenerateKey, a.session, &mut m, tmpl.as_mut_ptr(), n, &mut out)
            }
            2 => call!(f, C_SetAttributeValue, a.session, a.aes, tmpl.as_mut_ptr(), n),
            _ => {
                let mut m = CK_MECHANISM { mechanism: CKM_EC_KEY_PAIR_GEN, pParameter: null_mut(), ulParameterLen: 0 };
                let mut o2 = 0;
                call!(f, C_GenerateKeyPair, a.session, &mut m, tmpl.as_mut_ptr(), n, tmpl.as_mut_ptr(), n, &mut out, &mut o2)
            }
        };
        ok_rv(rv, "template call")?;
        if t.iter().any(|(_, v, null)| *null && !v.is_empty()) && which != 2 {
            prop_assert!(rv != CKR_OK, "a NULL value with a length was accepted");
        }
        if rv == CKR_OK && which == 0 {
            prop_assert_eq!(call!(f, C_DestroyObject, a.session, out), CKR_OK);
        }
    }
}

#[test]
fn null_and_dangling_arguments_are_refused() {
    let a = abi();
    let f = a.f;
    assert_eq!(call!(f, C_GetInfo, null_mut()), CKR_ARGUMENTS_BAD);
    assert_eq!(call!(f, C_GetSlotList, CK_FALSE, null_mut(), null_mut()), CKR_ARGUMENTS_BAD);
    assert_eq!(
        call!(f, C_OpenSession, a.slot, CKF_SERIAL_SESSION, null_mut(), None, null_mut()),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(call!(f, C_GenerateRandom, a.session, null_mut(), 16), CKR_ARGUMENTS_BAD);
    assert_eq!(call!(f, C_FindObjectsInit, a.session, null_mut(), 3), CKR_ARGUMENTS_BAD);
    assert_eq!(call!(f, C_SignInit, a.session, null_mut(), a.ec_priv), CKR_ARGUMENTS_BAD);
    // Parallel sessions are not a thing.
    let mut h = 0;
    assert_eq!(
        call!(f, C_OpenSession, a.slot, 0, null_mut(), None, &mut h),
        CKR_SESSION_PARALLEL_NOT_SUPPORTED
    );
    // Second initialization.
    assert_eq!(call!(f, C_Initialize, null_mut()), CKR_CRYPTOKI_ALREADY_INITIALIZED);
    let _ = null::<u8>();
}

#[test]
fn buffer_too_small_keeps_the_operation() {
    let a = abi();
    let f = a.f;
    let mut h = 0;
    assert_eq!(
        call!(
            f,
            C_OpenSession,
            a.slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            null_mut(),
            None,
            &mut h
        ),
        CKR_OK
    );
    let mut m = CK_MECHANISM { mechanism: CKM_ECDSA, pParameter: null_mut(), ulParameterLen: 0 };
    let digest = [9u8; 32];
    assert_eq!(call!(f, C_SignInit, h, &mut m, a.ec_priv), CKR_OK);
    // Length query.
    let mut l: CK_ULONG = 0;
    assert_eq!(call!(f, C_Sign, h, digest.as_ptr().cast_mut(), 32, null_mut(), &mut l), CKR_OK);
    assert_eq!(l, 64);
    // Too small: CKR_BUFFER_TOO_SMALL, the needed length, and the operation stays active.
    let mut small = [0u8; 10];
    let mut l: CK_ULONG = 10;
    assert_eq!(
        call!(f, C_Sign, h, digest.as_ptr().cast_mut(), 32, small.as_mut_ptr(), &mut l),
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(l, 64);
    let mut sig = [0u8; 64];
    let mut l: CK_ULONG = 64;
    assert_eq!(
        call!(f, C_Sign, h, digest.as_ptr().cast_mut(), 32, sig.as_mut_ptr(), &mut l),
        CKR_OK
    );
    // Now it is over.
    assert_eq!(
        call!(f, C_Sign, h, digest.as_ptr().cast_mut(), 32, sig.as_mut_ptr(), &mut l),
        CKR_OPERATION_NOT_INITIALIZED
    );
    let mut m = CK_MECHANISM { mechanism: CKM_ECDSA, pParameter: null_mut(), ulParameterLen: 0 };
    assert_eq!(call!(f, C_VerifyInit, h, &mut m, a.ec_pub), CKR_OK);
    assert_eq!(call!(f, C_Verify, h, digest.as_ptr().cast_mut(), 32, sig.as_mut_ptr(), 64), CKR_OK);

    // GetAttributeValue: length query, too small, and unknown types, per attribute.
    let mut point = [0u8; 4];
    let mut t = [
        CK_ATTRIBUTE { type_: CKA_EC_POINT, pValue: null_mut(), ulValueLen: 0 },
        CK_ATTRIBUTE { type_: CKA_EC_POINT, pValue: point.as_mut_ptr().cast(), ulValueLen: 4 },
        CK_ATTRIBUTE { type_: 0xdead_beef, pValue: null_mut(), ulValueLen: 0 },
    ];
    let rv = call!(f, C_GetAttributeValue, h, a.ec_pub, t.as_mut_ptr(), 3);
    assert!(rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_BUFFER_TOO_SMALL, "{rv:#x}");
    assert_eq!(t[0].ulValueLen, 67);
    assert_eq!(t[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(t[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    // A sensitive attribute.
    let mut v = [0u8; 64];
    let mut t = [CK_ATTRIBUTE { type_: CKA_VALUE, pValue: v.as_mut_ptr().cast(), ulValueLen: 64 }];
    assert_eq!(call!(f, C_GetAttributeValue, h, a.aes, t.as_mut_ptr(), 1), CKR_ATTRIBUTE_SENSITIVE);
    assert_eq!(t[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(call!(f, C_CloseSession, h), CKR_OK);
}

#[test]
fn every_function_list_slot_is_filled() {
    let lib = unsafe { libloading::Library::new(common::module_path()) }.unwrap();
    let list: libloading::Symbol<unsafe extern "C" fn(*mut CK_INTERFACE, *mut CK_ULONG) -> CK_RV> =
        unsafe { lib.get(b"C_GetInterfaceList") }.unwrap();
    let mut n: CK_ULONG = 0;
    assert_eq!(unsafe { list(null_mut(), &mut n) }, CKR_OK);
    let mut v =
        vec![
            CK_INTERFACE { pInterfaceName: null_mut(), pFunctionList: null_mut(), flags: 0 };
            n as usize
        ];
    assert_eq!(unsafe { list(v.as_mut_ptr(), &mut n) }, CKR_OK);
    for i in &v {
        let ver = unsafe { *(i.pFunctionList as *const CK_VERSION) };
        let bytes = match (ver.major, ver.minor) {
            (2, _) => std::mem::size_of::<CK_FUNCTION_LIST>(),
            (3, 0) => std::mem::size_of::<CK_FUNCTION_LIST_3_0>(),
            _ => std::mem::size_of::<CK_FUNCTION_LIST_3_2>(),
        };
        let slots = (bytes - 8) / 8;
        let ptrs = unsafe {
            std::slice::from_raw_parts((i.pFunctionList as *const u8).add(8).cast::<usize>(), slots)
        };
        assert!(ptrs.iter().all(|p| *p != 0), "NULL slot in the {}.{} list", ver.major, ver.minor);
    }
    assert!(v.len() >= 2);
}

#[test]
fn verify_signature_3_2() {
    let a = abi();
    let lib = unsafe { libloading::Library::new(common::module_path()) }.unwrap();
    let get: libloading::Symbol<
        unsafe extern "C" fn(
            *mut CK_UTF8CHAR,
            *mut CK_VERSION,
            *mut *mut CK_INTERFACE,
            CK_FLAGS,
        ) -> CK_RV,
    > = unsafe { lib.get(b"C_GetInterface") }.unwrap();
    let mut v = CK_VERSION { major: 3, minor: 2 };
    let mut iface: *mut CK_INTERFACE = null_mut();
    assert_eq!(unsafe { get(null_mut(), &mut v, &mut iface, 0) }, CKR_OK);
    let f32: &CK_FUNCTION_LIST_3_2 =
        unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_2) };
    assert_eq!((f32.version.major, f32.version.minor), (3, 2));
    let f = a.f;
    let mut h = 0;
    assert_eq!(
        call!(f, C_OpenSession, a.slot, CKF_SERIAL_SESSION, null_mut(), None, &mut h),
        CKR_OK
    );
    let mut m =
        CK_MECHANISM { mechanism: CKM_ECDSA_SHA256, pParameter: null_mut(), ulParameterLen: 0 };
    let msg = b"verify me";
    assert_eq!(call!(f, C_SignInit, h, &mut m, a.ec_priv), CKR_OK);
    let mut sig = [0u8; 64];
    let mut l: CK_ULONG = 64;
    assert_eq!(
        call!(
            f,
            C_Sign,
            h,
            msg.as_ptr().cast_mut(),
            msg.len() as CK_ULONG,
            sig.as_mut_ptr(),
            &mut l
        ),
        CKR_OK
    );
    assert_eq!(
        call!(f32, C_VerifySignatureInit, h, &mut m, a.ec_pub, sig.as_mut_ptr(), 64),
        CKR_OK
    );
    assert_eq!(
        call!(f32, C_VerifySignature, h, msg.as_ptr().cast_mut(), msg.len() as CK_ULONG),
        CKR_OK
    );
    assert_eq!(
        call!(f32, C_VerifySignatureInit, h, &mut m, a.ec_pub, sig.as_mut_ptr(), 64),
        CKR_OK
    );
    assert_eq!(call!(f32, C_VerifySignatureUpdate, h, msg.as_ptr().cast_mut(), 4), CKR_OK);
    assert_eq!(
        call!(
            f32,
            C_VerifySignatureUpdate,
            h,
            msg[4..].as_ptr().cast_mut(),
            (msg.len() - 4) as CK_ULONG
        ),
        CKR_OK
    );
    assert_eq!(call!(f32, C_VerifySignatureFinal, h), CKR_OK);
    sig[0] ^= 1;
    assert_eq!(
        call!(f32, C_VerifySignatureInit, h, &mut m, a.ec_pub, sig.as_mut_ptr(), 64),
        CKR_OK
    );
    assert_eq!(
        call!(f32, C_VerifySignature, h, msg.as_ptr().cast_mut(), msg.len() as CK_ULONG),
        CKR_SIGNATURE_INVALID
    );
    assert_eq!(call!(f32, C_VerifySignatureFinal, h), CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(call!(f, C_CloseSession, h), CKR_OK);
}

#[test]
fn ml_kem_encapsulate_and_decapsulate_3_2() {
    if common::is_softhsm() {
        return;
    }
    let a = abi();
    let lib = unsafe { libloading::Library::new(common::module_path()) }.unwrap();
    let get: libloading::Symbol<
        unsafe extern "C" fn(
            *mut CK_UTF8CHAR,
            *mut CK_VERSION,
            *mut *mut CK_INTERFACE,
            CK_FLAGS,
        ) -> CK_RV,
    > = unsafe { lib.get(b"C_GetInterface") }.unwrap();
    let mut v = CK_VERSION { major: 3, minor: 2 };
    let mut iface: *mut CK_INTERFACE = null_mut();
    assert_eq!(unsafe { get(null_mut(), &mut v, &mut iface, 0) }, CKR_OK);
    let f: &CK_FUNCTION_LIST_3_2 =
        unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_2) };
    let mut h = 0;
    assert_eq!(
        call!(
            f,
            C_OpenSession,
            a.slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            null_mut(),
            None,
            &mut h
        ),
        CKR_OK
    );
    let (t, f0) = ([1u8], [0u8]);
    let set = CKP_ML_KEM_768.to_ne_bytes();
    let mut pub_t = [attr(CKA_TOKEN, &f0), attr(CKA_PARAMETER_SET, &set)];
    let mut priv_t = [attr(CKA_TOKEN, &f0)];
    let mut m = CK_MECHANISM {
        mechanism: CKM_ML_KEM_KEY_PAIR_GEN,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    let (mut pk, mut sk) = (0, 0);
    assert_eq!(
        call!(
            f,
            C_GenerateKeyPair,
            h,
            &mut m,
            pub_t.as_mut_ptr(),
            2,
            priv_t.as_mut_ptr(),
            1,
            &mut pk,
            &mut sk
        ),
        CKR_OK
    );
    let aes = CKK_AES.to_ne_bytes();
    let len = 32u64.to_ne_bytes();
    let mut kt = [
        attr(CKA_TOKEN, &f0),
        attr(CKA_KEY_TYPE, &aes),
        attr(CKA_VALUE_LEN, &len),
        attr(CKA_SENSITIVE, &f0),
        attr(CKA_EXTRACTABLE, &t),
    ];
    let mut m = CK_MECHANISM { mechanism: CKM_ML_KEM, pParameter: null_mut(), ulParameterLen: 0 };
    // Length query: no key is made.
    let mut ct_len: CK_ULONG = 0;
    let mut k1 = 0;
    assert_eq!(
        call!(
            f,
            C_EncapsulateKey,
            h,
            &mut m,
            pk,
            kt.as_mut_ptr(),
            5,
            null_mut(),
            &mut ct_len,
            &mut k1
        ),
        CKR_OK
    );
    assert_eq!(ct_len, 1088);
    assert_eq!(k1, 0);
    let mut ct = vec![0u8; 1088];
    assert_eq!(
        call!(
            f,
            C_EncapsulateKey,
            h,
            &mut m,
            pk,
            kt.as_mut_ptr(),
            5,
            ct.as_mut_ptr(),
            &mut ct_len,
            &mut k1
        ),
        CKR_OK
    );
    let mut k2 = 0;
    assert_eq!(
        call!(
            f,
            C_DecapsulateKey,
            h,
            &mut m,
            sk,
            kt.as_mut_ptr(),
            5,
            ct.as_mut_ptr(),
            ct_len,
            &mut k2
        ),
        CKR_OK
    );
    let value = |k| {
        let mut b = [0u8; 32];
        let mut at =
            [CK_ATTRIBUTE { type_: CKA_VALUE, pValue: b.as_mut_ptr().cast(), ulValueLen: 32 }];
        assert_eq!(call!(f, C_GetAttributeValue, h, k, at.as_mut_ptr(), 1), CKR_OK);
        b
    };
    assert_eq!(value(k1), value(k2), "both sides hold the same shared secret");
    // Not a KEM key: an EC public key has no CKA_ENCAPSULATE (and is the wrong type).
    let rv = call!(
        f,
        C_EncapsulateKey,
        h,
        &mut m,
        a.ec_pub,
        kt.as_mut_ptr(),
        5,
        ct.as_mut_ptr(),
        &mut ct_len,
        &mut k1
    );
    assert!(rv == CKR_KEY_FUNCTION_NOT_PERMITTED || rv == CKR_KEY_TYPE_INCONSISTENT, "{rv:#x}");
    assert_eq!(call!(f, C_CloseSession, h), CKR_OK);
}
