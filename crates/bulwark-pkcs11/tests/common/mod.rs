//! Shared set-up for the PKCS#11 suites: loads the module named by `BULWARK_TEST_MODULE` (default:
//! the `libbulwark_pkcs11.so` that `cargo test` built next to this test binary) once per test
//! binary, with a configuration of many fresh slots, and hands each test its own freshly
//! initialized token. The same code drives `SoftHSMv2`
//! (`BULWARK_TEST_MODULE=/usr/lib/softhsm/libsofthsm2.so`), which gets a private token directory.
//!
//! Remote mode ([`use_remote`], set by `p11_remote.rs` before the module loads): one slot on a
//! running `bulwarkd`. A remote token cannot be re-initialized, so [`fresh_token`] empties it
//! instead (every object the crypto officer sees is destroyed), and PINs are `user:password`.
//! Tests then share one token and must run one at a time ([`serial`]).

// These tests call the module's C entry points directly (what a C client does): each block
// says why its pointers are valid.
#![allow(unsafe_code)]
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

pub const SO_PIN: &str = "so-pin-1234";
pub const USER_PIN: &str = "user-pin-1234";
const SLOTS: usize = 64;

/// A remote slot: the module configuration (one `[[slot]]` with an endpoint) and the PINs of
/// the crypto officer and the security officer (`user:password`).
pub struct Remote {
    pub slot_toml: String,
    pub user_pin: String,
    pub so_pin: String,
}

static REMOTE: OnceLock<Remote> = OnceLock::new();

/// Switches this test binary to remote mode. Call before anything loads the module.
pub fn use_remote(r: Remote) {
    assert!(REMOTE.set(r).is_ok(), "use_remote called twice");
}

/// True when the slot under test is a remote slot.
pub fn is_remote() -> bool {
    REMOTE.get().is_some()
}

/// In remote mode, prints why the rest of a test does not apply and returns true.
pub fn skip_remote(reason: &str) -> bool {
    if is_remote() {
        println!("skipped on a remote slot: {reason}");
    }
    is_remote()
}

/// Serializes the tests of a binary whose tests share one token (remote mode).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The module under test.
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BULWARK_TEST_MODULE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    // The test binary lives in target/<profile>/deps, where `cargo test` also builds the cdylib
    // (target/<profile>/libbulwark_pkcs11.so is only refreshed by `cargo build`).
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join("libbulwark_pkcs11.so");
            if p.exists() {
                return p;
            }
        }
    }
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("libbulwark_pkcs11.so");
        if p.exists() {
            return p;
        }
    }
    target.join("debug/libbulwark_pkcs11.so")
}

/// True when the module under test is `SoftHSMv2` (some Bulwark-only checks are skipped).
pub fn is_softhsm() -> bool {
    module_path().to_string_lossy().contains("softhsm")
}

struct Ctx {
    p11: Pkcs11,
    _dir: tempfile::TempDir,
    init_lock: Mutex<u32>,
}

fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        // Bulwark: many slots, each a store that does not exist yet (uninitialized token).
        let mut conf = REMOTE.get().map(|r| r.slot_toml.clone()).unwrap_or_default();
        for i in 0..if is_remote() { 0 } else { SLOTS } {
            let store = dir.path().join(format!("slot{i}/token.db"));
            writeln!(conf, "[[slot]]\nlabel = \"fresh-{i}\"\nstore = \"{}\"", store.display())
                .expect("write to a String");
        }
        let conf_path = dir.path().join("pkcs11.toml");
        std::fs::write(&conf_path, conf).expect("write conf");
        // SoftHSMv2: a private token directory.
        let tokens = dir.path().join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let shconf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &shconf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display()),
        )
        .expect("write softhsm conf");
        // Set once, before the module is loaded, while no other thread reads the environment.
        std::env::set_var("BULWARK_PKCS11_CONF", &conf_path);
        std::env::set_var("SOFTHSM2_CONF", &shconf);
        let p11 = Pkcs11::new(module_path()).expect("load module");
        p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        Ctx { p11, _dir: dir, init_lock: Mutex::new(0) }
    })
}

/// The loaded, initialized module.
pub fn p11() -> &'static Pkcs11 {
    &ctx().p11
}

pub fn so_pin() -> AuthPin {
    AuthPin::new(REMOTE.get().map_or(SO_PIN, |r| r.so_pin.as_str()).into())
}

pub fn user_pin() -> AuthPin {
    AuthPin::new(REMOTE.get().map_or(USER_PIN, |r| r.user_pin.as_str()).into())
}

/// A wrong user PIN (remote: the right user with a wrong password, so the HSM checks it).
pub fn wrong_user_pin() -> AuthPin {
    AuthPin::new(if is_remote() { "crypto:wrong-password" } else { "wrong-pin" }.into())
}

/// A freshly initialized token (SO and user PIN set) that no other test uses. Remote: the one
/// remote token, emptied.
pub fn fresh_token() -> Slot {
    let c = ctx();
    if is_remote() {
        let slot = c.p11.get_all_slots().expect("slots")[0];
        let s = c.p11.open_rw_session(slot).expect("open session");
        s.login(UserType::User, Some(&user_pin())).expect("user login");
        for h in s.find_objects(&[]).expect("find") {
            let _ = s.destroy_object(h);
        }
        assert!(s.find_objects(&[]).expect("find").is_empty(), "remote token not emptied");
        s.logout().expect("logout");
        return slot;
    }
    let mut n = c.init_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *n += 1;
    let label = format!("test-{}", *n);
    let slot = c
        .p11
        .get_all_slots()
        .expect("slots")
        .into_iter()
        .find(|s| c.p11.get_token_info(*s).is_ok_and(|t| !t.token_initialized()))
        .expect("an uninitialized slot is left");
    c.p11.init_token(slot, &so_pin(), &label).expect("C_InitToken");
    // SoftHSM moves an initialized token to a new slot ID; find it by label.
    let slot = c
        .p11
        .get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|s| c.p11.get_token_info(*s).is_ok_and(|t| t.label() == label))
        .expect("token by label");
    let s = c.p11.open_rw_session(slot).expect("open session");
    s.login(UserType::So, Some(&so_pin())).expect("SO login");
    s.init_pin(&user_pin()).expect("C_InitPIN");
    s.logout().expect("logout");
    drop(s);
    slot
}

/// An R/W session on a fresh token, logged in as the normal user.
pub fn user_session() -> (Slot, Session) {
    let slot = fresh_token();
    let s = p11().open_rw_session(slot).expect("open session");
    s.login(UserType::User, Some(&user_pin())).expect("user login");
    (slot, s)
}

/// The `CKR_*` of a failed call.
pub fn rv<T: std::fmt::Debug>(r: Result<T, Error>) -> RvError {
    match r {
        Err(Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// The 3.0 function list of the module under test: the very library `p11()` loaded (a second
/// `dlopen` of the same file returns the same instance), for the calls the `cryptoki` crate does
/// not wrap (CTR parameters, the recover functions, operation state, raw length queries).
/// Session handles come from `Session::handle()`.
pub fn raw() -> &'static cryptoki_sys::CK_FUNCTION_LIST_3_0 {
    type GetInterface = unsafe extern "C" fn(
        *mut cryptoki_sys::CK_UTF8CHAR,
        *mut cryptoki_sys::CK_VERSION,
        *mut *mut cryptoki_sys::CK_INTERFACE,
        cryptoki_sys::CK_FLAGS,
    ) -> cryptoki_sys::CK_RV;
    static RAW: OnceLock<usize> = OnceLock::new();
    p11();
    let p = *RAW.get_or_init(|| {
        // SAFETY: loading the module the suite already loaded runs no new initializer.
        let lib =
            Box::leak(Box::new(unsafe { libloading::Library::new(module_path()) }.expect("load")));
        // SAFETY: the symbol has this PKCS#11 3.0 signature.
        let get: libloading::Symbol<GetInterface> =
            unsafe { lib.get(b"C_GetInterface") }.expect("C_GetInterface");
        let mut v = cryptoki_sys::CK_VERSION { major: 3, minor: 0 };
        let mut iface: *mut cryptoki_sys::CK_INTERFACE = std::ptr::null_mut();
        let name = c"PKCS 11";
        // SAFETY: valid name, version and out pointer.
        let rv = unsafe { get(name.as_ptr().cast_mut().cast(), &raw mut v, &raw mut iface, 0) };
        assert_eq!(rv, cryptoki_sys::CKR_OK);
        // SAFETY: the module returned a valid interface whose list lives as long as the library.
        unsafe { (*iface).pFunctionList as usize }
    });
    // SAFETY: a static function list of the leaked library.
    unsafe { &*(p as *const cryptoki_sys::CK_FUNCTION_LIST_3_0) }
}
