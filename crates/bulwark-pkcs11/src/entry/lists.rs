//! The three function lists (2.40, 3.0, 3.2), the interface table, and the only three exported
//! symbols. Generated field by field from the spec's order; every slot points at a real
//! function (a NULL slot crashes real clients).

#![allow(non_snake_case)]

use std::ffi::c_void;

use cryptoki_sys as ck;
use cryptoki_sys::{CK_FLAGS, CK_INTERFACE, CK_RV, CK_ULONG, CK_UTF8CHAR, CK_VERSION};

use super::{fns, guard, out, slice, slice_mut};
use crate::error::Error;

static LIST_2_40: ck::CK_FUNCTION_LIST = ck::CK_FUNCTION_LIST {
    version: CK_VERSION { major: 2, minor: 40 },
    C_Initialize: Some(fns::C_Initialize),
    C_Finalize: Some(fns::C_Finalize),
    C_GetInfo: Some(fns::C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(fns::C_GetSlotList),
    C_GetSlotInfo: Some(fns::C_GetSlotInfo),
    C_GetTokenInfo: Some(fns::C_GetTokenInfo),
    C_GetMechanismList: Some(fns::C_GetMechanismList),
    C_GetMechanismInfo: Some(fns::C_GetMechanismInfo),
    C_InitToken: Some(fns::C_InitToken),
    C_InitPIN: Some(fns::C_InitPIN),
    C_SetPIN: Some(fns::C_SetPIN),
    C_OpenSession: Some(fns::C_OpenSession),
    C_CloseSession: Some(fns::C_CloseSession),
    C_CloseAllSessions: Some(fns::C_CloseAllSessions),
    C_GetSessionInfo: Some(fns::C_GetSessionInfo),
    C_GetOperationState: Some(fns::C_GetOperationState),
    C_SetOperationState: Some(fns::C_SetOperationState),
    C_Login: Some(fns::C_Login),
    C_Logout: Some(fns::C_Logout),
    C_CreateObject: Some(fns::C_CreateObject),
    C_CopyObject: Some(fns::C_CopyObject),
    C_DestroyObject: Some(fns::C_DestroyObject),
    C_GetObjectSize: Some(fns::C_GetObjectSize),
    C_GetAttributeValue: Some(fns::C_GetAttributeValue),
    C_SetAttributeValue: Some(fns::C_SetAttributeValue),
    C_FindObjectsInit: Some(fns::C_FindObjectsInit),
    C_FindObjects: Some(fns::C_FindObjects),
    C_FindObjectsFinal: Some(fns::C_FindObjectsFinal),
    C_EncryptInit: Some(fns::C_EncryptInit),
    C_Encrypt: Some(fns::C_Encrypt),
    C_EncryptUpdate: Some(fns::C_EncryptUpdate),
    C_EncryptFinal: Some(fns::C_EncryptFinal),
    C_DecryptInit: Some(fns::C_DecryptInit),
    C_Decrypt: Some(fns::C_Decrypt),
    C_DecryptUpdate: Some(fns::C_DecryptUpdate),
    C_DecryptFinal: Some(fns::C_DecryptFinal),
    C_DigestInit: Some(fns::C_DigestInit),
    C_Digest: Some(fns::C_Digest),
    C_DigestUpdate: Some(fns::C_DigestUpdate),
    C_DigestKey: Some(fns::C_DigestKey),
    C_DigestFinal: Some(fns::C_DigestFinal),
    C_SignInit: Some(fns::C_SignInit),
    C_Sign: Some(fns::C_Sign),
    C_SignUpdate: Some(fns::C_SignUpdate),
    C_SignFinal: Some(fns::C_SignFinal),
    C_SignRecoverInit: Some(fns::C_SignRecoverInit),
    C_SignRecover: Some(fns::C_SignRecover),
    C_VerifyInit: Some(fns::C_VerifyInit),
    C_Verify: Some(fns::C_Verify),
    C_VerifyUpdate: Some(fns::C_VerifyUpdate),
    C_VerifyFinal: Some(fns::C_VerifyFinal),
    C_VerifyRecoverInit: Some(fns::C_VerifyRecoverInit),
    C_VerifyRecover: Some(fns::C_VerifyRecover),
    C_DigestEncryptUpdate: Some(fns::C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(fns::C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(fns::C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(fns::C_DecryptVerifyUpdate),
    C_GenerateKey: Some(fns::C_GenerateKey),
    C_GenerateKeyPair: Some(fns::C_GenerateKeyPair),
    C_WrapKey: Some(fns::C_WrapKey),
    C_UnwrapKey: Some(fns::C_UnwrapKey),
    C_DeriveKey: Some(fns::C_DeriveKey),
    C_SeedRandom: Some(fns::C_SeedRandom),
    C_GenerateRandom: Some(fns::C_GenerateRandom),
    C_GetFunctionStatus: Some(fns::C_GetFunctionStatus),
    C_CancelFunction: Some(fns::C_CancelFunction),
    C_WaitForSlotEvent: Some(fns::C_WaitForSlotEvent),
};

static LIST_3_0: ck::CK_FUNCTION_LIST_3_0 = ck::CK_FUNCTION_LIST_3_0 {
    version: CK_VERSION { major: 3, minor: 0 },
    C_Initialize: Some(fns::C_Initialize),
    C_Finalize: Some(fns::C_Finalize),
    C_GetInfo: Some(fns::C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(fns::C_GetSlotList),
    C_GetSlotInfo: Some(fns::C_GetSlotInfo),
    C_GetTokenInfo: Some(fns::C_GetTokenInfo),
    C_GetMechanismList: Some(fns::C_GetMechanismList),
    C_GetMechanismInfo: Some(fns::C_GetMechanismInfo),
    C_InitToken: Some(fns::C_InitToken),
    C_InitPIN: Some(fns::C_InitPIN),
    C_SetPIN: Some(fns::C_SetPIN),
    C_OpenSession: Some(fns::C_OpenSession),
    C_CloseSession: Some(fns::C_CloseSession),
    C_CloseAllSessions: Some(fns::C_CloseAllSessions),
    C_GetSessionInfo: Some(fns::C_GetSessionInfo),
    C_GetOperationState: Some(fns::C_GetOperationState),
    C_SetOperationState: Some(fns::C_SetOperationState),
    C_Login: Some(fns::C_Login),
    C_Logout: Some(fns::C_Logout),
    C_CreateObject: Some(fns::C_CreateObject),
    C_CopyObject: Some(fns::C_CopyObject),
    C_DestroyObject: Some(fns::C_DestroyObject),
    C_GetObjectSize: Some(fns::C_GetObjectSize),
    C_GetAttributeValue: Some(fns::C_GetAttributeValue),
    C_SetAttributeValue: Some(fns::C_SetAttributeValue),
    C_FindObjectsInit: Some(fns::C_FindObjectsInit),
    C_FindObjects: Some(fns::C_FindObjects),
    C_FindObjectsFinal: Some(fns::C_FindObjectsFinal),
    C_EncryptInit: Some(fns::C_EncryptInit),
    C_Encrypt: Some(fns::C_Encrypt),
    C_EncryptUpdate: Some(fns::C_EncryptUpdate),
    C_EncryptFinal: Some(fns::C_EncryptFinal),
    C_DecryptInit: Some(fns::C_DecryptInit),
    C_Decrypt: Some(fns::C_Decrypt),
    C_DecryptUpdate: Some(fns::C_DecryptUpdate),
    C_DecryptFinal: Some(fns::C_DecryptFinal),
    C_DigestInit: Some(fns::C_DigestInit),
    C_Digest: Some(fns::C_Digest),
    C_DigestUpdate: Some(fns::C_DigestUpdate),
    C_DigestKey: Some(fns::C_DigestKey),
    C_DigestFinal: Some(fns::C_DigestFinal),
    C_SignInit: Some(fns::C_SignInit),
    C_Sign: Some(fns::C_Sign),
    C_SignUpdate: Some(fns::C_SignUpdate),
    C_SignFinal: Some(fns::C_SignFinal),
    C_SignRecoverInit: Some(fns::C_SignRecoverInit),
    C_SignRecover: Some(fns::C_SignRecover),
    C_VerifyInit: Some(fns::C_VerifyInit),
    C_Verify: Some(fns::C_Verify),
    C_VerifyUpdate: Some(fns::C_VerifyUpdate),
    C_VerifyFinal: Some(fns::C_VerifyFinal),
    C_VerifyRecoverInit: Some(fns::C_VerifyRecoverInit),
    C_VerifyRecover: Some(fns::C_VerifyRecover),
    C_DigestEncryptUpdate: Some(fns::C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(fns::C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(fns::C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(fns::C_DecryptVerifyUpdate),
    C_GenerateKey: Some(fns::C_GenerateKey),
    C_GenerateKeyPair: Some(fns::C_GenerateKeyPair),
    C_WrapKey: Some(fns::C_WrapKey),
    C_UnwrapKey: Some(fns::C_UnwrapKey),
    C_DeriveKey: Some(fns::C_DeriveKey),
    C_SeedRandom: Some(fns::C_SeedRandom),
    C_GenerateRandom: Some(fns::C_GenerateRandom),
    C_GetFunctionStatus: Some(fns::C_GetFunctionStatus),
    C_CancelFunction: Some(fns::C_CancelFunction),
    C_WaitForSlotEvent: Some(fns::C_WaitForSlotEvent),
    C_GetInterfaceList: Some(C_GetInterfaceList),
    C_GetInterface: Some(C_GetInterface),
    C_LoginUser: Some(fns::C_LoginUser),
    C_SessionCancel: Some(fns::C_SessionCancel),
    C_MessageEncryptInit: Some(fns::C_MessageEncryptInit),
    C_EncryptMessage: Some(fns::C_EncryptMessage),
    C_EncryptMessageBegin: Some(fns::C_EncryptMessageBegin),
    C_EncryptMessageNext: Some(fns::C_EncryptMessageNext),
    C_MessageEncryptFinal: Some(fns::C_MessageEncryptFinal),
    C_MessageDecryptInit: Some(fns::C_MessageDecryptInit),
    C_DecryptMessage: Some(fns::C_DecryptMessage),
    C_DecryptMessageBegin: Some(fns::C_DecryptMessageBegin),
    C_DecryptMessageNext: Some(fns::C_DecryptMessageNext),
    C_MessageDecryptFinal: Some(fns::C_MessageDecryptFinal),
    C_MessageSignInit: Some(fns::C_MessageSignInit),
    C_SignMessage: Some(fns::C_SignMessage),
    C_SignMessageBegin: Some(fns::C_SignMessageBegin),
    C_SignMessageNext: Some(fns::C_SignMessageNext),
    C_MessageSignFinal: Some(fns::C_MessageSignFinal),
    C_MessageVerifyInit: Some(fns::C_MessageVerifyInit),
    C_VerifyMessage: Some(fns::C_VerifyMessage),
    C_VerifyMessageBegin: Some(fns::C_VerifyMessageBegin),
    C_VerifyMessageNext: Some(fns::C_VerifyMessageNext),
    C_MessageVerifyFinal: Some(fns::C_MessageVerifyFinal),
};

static LIST_3_2: ck::CK_FUNCTION_LIST_3_2 = ck::CK_FUNCTION_LIST_3_2 {
    version: CK_VERSION { major: 3, minor: 2 },
    C_Initialize: Some(fns::C_Initialize),
    C_Finalize: Some(fns::C_Finalize),
    C_GetInfo: Some(fns::C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(fns::C_GetSlotList),
    C_GetSlotInfo: Some(fns::C_GetSlotInfo),
    C_GetTokenInfo: Some(fns::C_GetTokenInfo),
    C_GetMechanismList: Some(fns::C_GetMechanismList),
    C_GetMechanismInfo: Some(fns::C_GetMechanismInfo),
    C_InitToken: Some(fns::C_InitToken),
    C_InitPIN: Some(fns::C_InitPIN),
    C_SetPIN: Some(fns::C_SetPIN),
    C_OpenSession: Some(fns::C_OpenSession),
    C_CloseSession: Some(fns::C_CloseSession),
    C_CloseAllSessions: Some(fns::C_CloseAllSessions),
    C_GetSessionInfo: Some(fns::C_GetSessionInfo),
    C_GetOperationState: Some(fns::C_GetOperationState),
    C_SetOperationState: Some(fns::C_SetOperationState),
    C_Login: Some(fns::C_Login),
    C_Logout: Some(fns::C_Logout),
    C_CreateObject: Some(fns::C_CreateObject),
    C_CopyObject: Some(fns::C_CopyObject),
    C_DestroyObject: Some(fns::C_DestroyObject),
    C_GetObjectSize: Some(fns::C_GetObjectSize),
    C_GetAttributeValue: Some(fns::C_GetAttributeValue),
    C_SetAttributeValue: Some(fns::C_SetAttributeValue),
    C_FindObjectsInit: Some(fns::C_FindObjectsInit),
    C_FindObjects: Some(fns::C_FindObjects),
    C_FindObjectsFinal: Some(fns::C_FindObjectsFinal),
    C_EncryptInit: Some(fns::C_EncryptInit),
    C_Encrypt: Some(fns::C_Encrypt),
    C_EncryptUpdate: Some(fns::C_EncryptUpdate),
    C_EncryptFinal: Some(fns::C_EncryptFinal),
    C_DecryptInit: Some(fns::C_DecryptInit),
    C_Decrypt: Some(fns::C_Decrypt),
    C_DecryptUpdate: Some(fns::C_DecryptUpdate),
    C_DecryptFinal: Some(fns::C_DecryptFinal),
    C_DigestInit: Some(fns::C_DigestInit),
    C_Digest: Some(fns::C_Digest),
    C_DigestUpdate: Some(fns::C_DigestUpdate),
    C_DigestKey: Some(fns::C_DigestKey),
    C_DigestFinal: Some(fns::C_DigestFinal),
    C_SignInit: Some(fns::C_SignInit),
    C_Sign: Some(fns::C_Sign),
    C_SignUpdate: Some(fns::C_SignUpdate),
    C_SignFinal: Some(fns::C_SignFinal),
    C_SignRecoverInit: Some(fns::C_SignRecoverInit),
    C_SignRecover: Some(fns::C_SignRecover),
    C_VerifyInit: Some(fns::C_VerifyInit),
    C_Verify: Some(fns::C_Verify),
    C_VerifyUpdate: Some(fns::C_VerifyUpdate),
    C_VerifyFinal: Some(fns::C_VerifyFinal),
    C_VerifyRecoverInit: Some(fns::C_VerifyRecoverInit),
    C_VerifyRecover: Some(fns::C_VerifyRecover),
    C_DigestEncryptUpdate: Some(fns::C_DigestEncryptUpdate),
    C_DecryptDigestUpdate: Some(fns::C_DecryptDigestUpdate),
    C_SignEncryptUpdate: Some(fns::C_SignEncryptUpdate),
    C_DecryptVerifyUpdate: Some(fns::C_DecryptVerifyUpdate),
    C_GenerateKey: Some(fns::C_GenerateKey),
    C_GenerateKeyPair: Some(fns::C_GenerateKeyPair),
    C_WrapKey: Some(fns::C_WrapKey),
    C_UnwrapKey: Some(fns::C_UnwrapKey),
    C_DeriveKey: Some(fns::C_DeriveKey),
    C_SeedRandom: Some(fns::C_SeedRandom),
    C_GenerateRandom: Some(fns::C_GenerateRandom),
    C_GetFunctionStatus: Some(fns::C_GetFunctionStatus),
    C_CancelFunction: Some(fns::C_CancelFunction),
    C_WaitForSlotEvent: Some(fns::C_WaitForSlotEvent),
    C_GetInterfaceList: Some(C_GetInterfaceList),
    C_GetInterface: Some(C_GetInterface),
    C_LoginUser: Some(fns::C_LoginUser),
    C_SessionCancel: Some(fns::C_SessionCancel),
    C_MessageEncryptInit: Some(fns::C_MessageEncryptInit),
    C_EncryptMessage: Some(fns::C_EncryptMessage),
    C_EncryptMessageBegin: Some(fns::C_EncryptMessageBegin),
    C_EncryptMessageNext: Some(fns::C_EncryptMessageNext),
    C_MessageEncryptFinal: Some(fns::C_MessageEncryptFinal),
    C_MessageDecryptInit: Some(fns::C_MessageDecryptInit),
    C_DecryptMessage: Some(fns::C_DecryptMessage),
    C_DecryptMessageBegin: Some(fns::C_DecryptMessageBegin),
    C_DecryptMessageNext: Some(fns::C_DecryptMessageNext),
    C_MessageDecryptFinal: Some(fns::C_MessageDecryptFinal),
    C_MessageSignInit: Some(fns::C_MessageSignInit),
    C_SignMessage: Some(fns::C_SignMessage),
    C_SignMessageBegin: Some(fns::C_SignMessageBegin),
    C_SignMessageNext: Some(fns::C_SignMessageNext),
    C_MessageSignFinal: Some(fns::C_MessageSignFinal),
    C_MessageVerifyInit: Some(fns::C_MessageVerifyInit),
    C_VerifyMessage: Some(fns::C_VerifyMessage),
    C_VerifyMessageBegin: Some(fns::C_VerifyMessageBegin),
    C_VerifyMessageNext: Some(fns::C_VerifyMessageNext),
    C_MessageVerifyFinal: Some(fns::C_MessageVerifyFinal),
    C_EncapsulateKey: Some(fns::C_EncapsulateKey),
    C_DecapsulateKey: Some(fns::C_DecapsulateKey),
    C_VerifySignatureInit: Some(fns::C_VerifySignatureInit),
    C_VerifySignature: Some(fns::C_VerifySignature),
    C_VerifySignatureUpdate: Some(fns::C_VerifySignatureUpdate),
    C_VerifySignatureFinal: Some(fns::C_VerifySignatureFinal),
    C_GetSessionValidationFlags: Some(fns::C_GetSessionValidationFlags),
    C_AsyncComplete: Some(fns::C_AsyncComplete),
    C_AsyncGetID: Some(fns::C_AsyncGetID),
    C_AsyncJoin: Some(fns::C_AsyncJoin),
    C_WrapKeyAuthenticated: Some(fns::C_WrapKeyAuthenticated),
    C_UnwrapKeyAuthenticated: Some(fns::C_UnwrapKeyAuthenticated),
};

/// The interface name every list is offered under.
static NAME: &[u8; 8] = b"PKCS 11\0";

/// The interfaces, 3.0 first (the default). Built fresh for every caller: clients may write
/// into the `CK_INTERFACE` they receive (the `OpenSC` spy swaps in its own function list), so no
/// shared copy is ever handed out.
fn interfaces() -> [CK_INTERFACE; 3] {
    let i = |list: *const c_void| CK_INTERFACE {
        pInterfaceName: NAME.as_ptr().cast_mut(),
        pFunctionList: list.cast_mut(),
        flags: 0,
    };
    [
        i((&raw const LIST_3_0).cast::<c_void>()),
        i((&raw const LIST_3_2).cast::<c_void>()),
        i((&raw const LIST_2_40).cast::<c_void>()),
    ]
}

fn versions() -> [CK_VERSION; 3] {
    [LIST_3_0.version, LIST_3_2.version, LIST_2_40.version]
}

/// `C_GetFunctionList` (§5.4): the 2.40 list, for 2.x callers.
///
/// # Safety
/// `pp` must be NULL or point to a writable `CK_FUNCTION_LIST_PTR`.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(pp: *mut *mut ck::CK_FUNCTION_LIST) -> CK_RV {
    guard(|| {
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(pp)? };
        *dst = (&raw const LIST_2_40).cast_mut();
        Ok(())
    })
}

/// `C_GetInterfaceList` (§5.4, 3.0): the 3.0 (default), 3.2 and 2.40 interfaces.
///
/// # Safety
/// `p_list` must be NULL or point to `*pul_count` writable `CK_INTERFACE`s; `pul_count` must be
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterfaceList(
    p_list: *mut CK_INTERFACE,
    pul_count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: caller contract for an output pointer.
        let n = unsafe { out(pul_count)? };
        let all = interfaces();
        if p_list.is_null() {
            *n = all.len() as CK_ULONG;
            return Ok(());
        }
        let cap = usize::try_from(*n).map_err(|_| Error::ArgumentsBad)?;
        *n = all.len() as CK_ULONG;
        if cap < all.len() {
            return Err(Error::BufferTooSmall(all.len()));
        }
        // SAFETY: the caller declared `cap >= all.len()` writable entries.
        unsafe { slice_mut(p_list, all.len())? }.copy_from_slice(&all);
        Ok(())
    })
}

/// `C_GetInterface` (§5.4, 3.0): by name ("PKCS 11" or NULL) and version. Without a version
/// the default is 3.0: clients built against the 3.0 headers (the `OpenSC` spy, `p11-kit`) compare
/// the version, and the 3.2 list extends the 3.0 one, so a 3.2 caller asks for it by version. No interface has flags, so a non-zero `flags` request matches none.
///
/// # Safety
/// `p_name` must be NULL or a NUL-terminated string; `p_version` NULL or readable; `pp`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterface(
    p_name: *mut CK_UTF8CHAR,
    p_version: *mut CK_VERSION,
    pp: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    guard(|| {
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(pp)? };
        if !p_name.is_null() {
            // SAFETY: a non-NULL name is NUL-terminated (caller contract).
            let name = unsafe { std::ffi::CStr::from_ptr(p_name.cast_const().cast()) };
            if name.to_bytes() != b"PKCS 11" {
                return Err(Error::ArgumentsBad);
            }
        }
        let want = if p_version.is_null() {
            None
        } else {
            // SAFETY: a non-NULL version points to a readable CK_VERSION (caller contract).
            Some(unsafe { slice(p_version.cast_const(), 1)? }[0])
        };
        if flags != 0 {
            return Err(Error::ArgumentsBad);
        }
        let i = match want {
            None => 0,
            Some(v) => versions()
                .iter()
                .position(|x| x.major == v.major && x.minor == v.minor)
                .ok_or(Error::ArgumentsBad)?,
        };
        // One small allocation per call, never freed: the caller owns the returned pointer for
        // the life of the process and may write into it (see `interfaces`).
        *dst = Box::leak(Box::new(interfaces()[i]));
        Ok(())
    })
}
