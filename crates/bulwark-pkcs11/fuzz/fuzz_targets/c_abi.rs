//! Feeds fuzzer bytes through the C ABI in-process: each input is decoded into a template
//! (attribute type, length, value) and a small call sequence on one logged-in session. The
//! target asserts the same property as `tests/abi_proptest.rs`: every call returns a PKCS#11
//! code that is not CKR_GENERAL_ERROR, and nothing crashes.
#![no_main]

use std::ptr::null_mut;
use std::sync::OnceLock;

use cryptoki_sys::*;
use libfuzzer_sys::fuzz_target;

struct Ctx(&'static CK_FUNCTION_LIST, CK_SESSION_HANDLE);
// SAFETY: the function list is an immutable static.
unsafe impl Sync for Ctx {}
unsafe impl Send for Ctx {}

fn ctx() -> &'static Ctx {
    static C: OnceLock<Ctx> = OnceLock::new();
    C.get_or_init(|| unsafe {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let conf = dir.path().join("p.toml");
        std::fs::write(&conf, format!("[[slot]]\nstore = \"{}\"\n", dir.path().join("t.db").display())).unwrap();
        std::env::set_var("BULWARK_PKCS11_CONF", &conf);
        let mut f: *mut CK_FUNCTION_LIST = null_mut();
        assert_eq!(bulwark_pkcs11::C_GetFunctionList(&mut f), CKR_OK);
        let f: &'static CK_FUNCTION_LIST = &*f;
        assert_eq!(f.C_Initialize.unwrap()(null_mut()), CKR_OK);
        let mut label = [b' '; 32];
        let so = b"so-pin-1234";
        let pin = b"user-pin-1234";
        assert_eq!(f.C_InitToken.unwrap()(0, so.as_ptr().cast_mut(), so.len() as _, label.as_mut_ptr()), CKR_OK);
        let mut h = 0;
        assert_eq!(f.C_OpenSession.unwrap()(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, null_mut(), None, &mut h), CKR_OK);
        assert_eq!(f.C_Login.unwrap()(h, CKU_SO, so.as_ptr().cast_mut(), so.len() as _), CKR_OK);
        assert_eq!(f.C_InitPIN.unwrap()(h, pin.as_ptr().cast_mut(), pin.len() as _), CKR_OK);
        assert_eq!(f.C_Logout.unwrap()(h), CKR_OK);
        assert_eq!(f.C_Login.unwrap()(h, CKU_USER, pin.as_ptr().cast_mut(), pin.len() as _), CKR_OK);
        Ctx(f, h)
    })
}

fuzz_target!(|data: &[u8]| {
    let c = ctx();
    let (f, h) = (c.0, c.1);
    // Decode: [selector][n x (type:u8 index or raw u32, len:u8, value)]
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut types = Vec::new();
    while rest.len() >= 5 {
        let t = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as CK_ULONG;
        let n = (rest[4] as usize).min(rest.len() - 5);
        types.push(if t % 3 == 0 { t % 0x180 } else { t });
        values.push(rest[5..5 + n].to_vec());
        rest = &rest[5 + n..];
    }
    let mut tmpl: Vec<CK_ATTRIBUTE> = types
        .iter()
        .zip(values.iter_mut())
        .map(|(t, v)| CK_ATTRIBUTE { type_: *t, pValue: v.as_mut_ptr().cast(), ulValueLen: v.len() as CK_ULONG })
        .collect();
    let n = tmpl.len() as CK_ULONG;
    let mut out = 0;
    let rv = unsafe {
        match sel % 4 {
            0 => f.C_CreateObject.unwrap()(h, tmpl.as_mut_ptr(), n, &mut out),
            1 => {
                let rv = f.C_FindObjectsInit.unwrap()(h, tmpl.as_mut_ptr(), n);
                let mut hs = [0; 8];
                let mut k = 0;
                f.C_FindObjects.unwrap()(h, hs.as_mut_ptr(), 8, &mut k);
                f.C_FindObjectsFinal.unwrap()(h);
                rv
            }
            2 => {
                let mut m = CK_MECHANISM { mechanism: CKM_AES_KEY_GEN, pParameter: null_mut(), ulParameterLen: 0 };
                f.C_GenerateKey.unwrap()(h, &mut m, tmpl.as_mut_ptr(), n, &mut out)
            }
            _ => f.C_GetAttributeValue.unwrap()(h, CK_OBJECT_HANDLE::from(sel), tmpl.as_mut_ptr(), n),
        }
    };
    assert_ne!(rv, CKR_GENERAL_ERROR);
    if rv == CKR_OK && out != 0 {
        unsafe { f.C_DestroyObject.unwrap()(h, out) };
    }
});
