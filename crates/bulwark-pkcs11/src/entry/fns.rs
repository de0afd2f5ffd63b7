//! The PKCS#11 functions (PKCS#11 3.2 §5), each a thin C shell over the safe token layer.
//!
//! Each body reads its arguments through the audited helpers of [`super`], calls one
//! [`Module`](crate::token::Module) method and writes the result back. No body dereferences a
//! pointer any other way.

#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_void;

use cryptoki_sys as ck;
use cryptoki_sys::{
    CK_ATTRIBUTE, CK_BBOOL, CK_BYTE, CK_FLAGS, CK_INFO, CK_MECHANISM, CK_MECHANISM_INFO,
    CK_MECHANISM_TYPE, CK_NOTIFY, CK_OBJECT_HANDLE, CK_SESSION_HANDLE, CK_SESSION_INFO, CK_SLOT_ID,
    CK_SLOT_INFO, CK_TOKEN_INFO, CK_ULONG, CK_USER_TYPE, CK_UTF8CHAR,
};
use zeroize::Zeroizing;

use super::{
    ck_entry, mech, module, out, out_len, read_param, read_pin, read_template, slice, slice_mut,
    write_out,
};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::token::{pad, Module, VERSION};

pub(crate) use super::message::{
    C_DecryptMessage, C_DecryptMessageBegin, C_DecryptMessageNext, C_EncryptMessage,
    C_EncryptMessageBegin, C_EncryptMessageNext, C_GetOperationState, C_MessageDecryptFinal,
    C_MessageDecryptInit, C_MessageEncryptFinal, C_MessageEncryptInit, C_SetOperationState,
    C_SignRecover, C_SignRecoverInit, C_VerifyRecover, C_VerifyRecoverInit,
};

/// Copies a list of values to a caller array under the length-query convention.
///
/// # Safety
/// `p` must be NULL or point to `*pn` writable `CK_ULONG`s; `pn` must be NULL or writable.
unsafe fn write_list(values: &[CK_ULONG], p: *mut CK_ULONG, pn: *mut CK_ULONG) -> Result<()> {
    // SAFETY: forwarded caller contract.
    let n = unsafe { out(pn)? };
    if p.is_null() {
        *n = values.len() as CK_ULONG;
        return Ok(());
    }
    let cap = usize::try_from(*n).map_err(|_| Error::ArgumentsBad)?;
    *n = values.len() as CK_ULONG;
    if cap < values.len() {
        return Err(Error::BufferTooSmall(values.len()));
    }
    // SAFETY: the caller declared `cap >= values.len()` writable elements at `p`.
    unsafe { slice_mut(p, values.len())? }.copy_from_slice(values);
    Ok(())
}

fn key_value_rank(e: &Error) -> u8 {
    match e.rv() {
        ck::CKR_ATTRIBUTE_SENSITIVE => 3,
        ck::CKR_ATTRIBUTE_TYPE_INVALID => 2,
        ck::CKR_BUFFER_TOO_SMALL => 1,
        _ => 4,
    }
}

ck_entry! {
    /// `C_Initialize` (§5.4). Accepts NULL or a `CK_C_INITIALIZE_ARGS`; the module always uses
    /// OS locking primitives (`CKF_OS_LOCKING_OK`), which also satisfies callers that pass mutex
    /// callbacks.
    fn C_Initialize(p_init_args: *mut c_void) {
        if !p_init_args.is_null() {
            // SAFETY: a non-NULL argument points to a CK_C_INITIALIZE_ARGS (caller contract).
            let a: ck::CK_C_INITIALIZE_ARGS = unsafe {
                read_param(p_init_args, std::mem::size_of::<ck::CK_C_INITIALIZE_ARGS>() as CK_ULONG)
            }
            .ok_or(Error::ArgumentsBad)?;
            if !a.pReserved.is_null() {
                return Err(Error::ArgumentsBad);
            }
            let fns = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if fns.iter().any(|x| *x) && !fns.iter().all(|x| *x) {
                return Err(Error::ArgumentsBad);
            }
        }
        super::publish(|| Ok(Module::new(Config::load()?)))
    }

    /// `C_Finalize` (§5.4): closes every session and wipes all keys and master keys from memory.
    fn C_Finalize(p_reserved: *mut c_void) {
        if !p_reserved.is_null() {
            return Err(Error::ArgumentsBad);
        }
        super::unpublish()
    }

    /// `C_GetInfo` (§5.4).
    fn C_GetInfo(p_info: *mut CK_INFO) {
        module()?;
        // SAFETY: caller contract for an output pointer.
        let info = unsafe { out(p_info)? };
        *info = CK_INFO {
            cryptokiVersion: ck::CK_VERSION { major: 3, minor: 2 },
            manufacturerID: pad("Bulwark"),
            flags: 0,
            libraryDescription: pad("Bulwark PKCS#11 module"),
            libraryVersion: VERSION,
        };
        Ok(())
    }

    /// `C_GetSlotList` (§5.5).
    fn C_GetSlotList(_token_present: CK_BBOOL, p_slot_list: *mut CK_SLOT_ID, pul_count: *mut CK_ULONG) {
        let ids = module()?.slot_list();
        // SAFETY: forwarded caller contract.
        unsafe { write_list(&ids, p_slot_list, pul_count) }
    }

    /// `C_GetSlotInfo` (§5.5).
    fn C_GetSlotInfo(slot_id: CK_SLOT_ID, p_info: *mut CK_SLOT_INFO) {
        let info = module()?.slot_info(slot_id)?;
        // SAFETY: caller contract for an output pointer.
        *unsafe { out(p_info)? } = info;
        Ok(())
    }

    /// `C_GetTokenInfo` (§5.5).
    fn C_GetTokenInfo(slot_id: CK_SLOT_ID, p_info: *mut CK_TOKEN_INFO) {
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(p_info)? };
        *dst = module()?.token_info(slot_id)?;
        Ok(())
    }

    /// `C_GetMechanismList` (§5.5).
    fn C_GetMechanismList(slot_id: CK_SLOT_ID, p_list: *mut CK_MECHANISM_TYPE, pul_count: *mut CK_ULONG) {
        let l = module()?.mechanism_list(slot_id)?;
        // SAFETY: forwarded caller contract.
        unsafe { write_list(&l, p_list, pul_count) }
    }

    /// `C_GetMechanismInfo` (§5.5).
    fn C_GetMechanismInfo(slot_id: CK_SLOT_ID, typ: CK_MECHANISM_TYPE, p_info: *mut CK_MECHANISM_INFO) {
        let i = module()?.mechanism_info(slot_id, typ)?;
        // SAFETY: caller contract for an output pointer.
        *unsafe { out(p_info)? } = i;
        Ok(())
    }

    /// `C_InitToken` (§5.5). The label is the 32-byte blank-padded field.
    fn C_InitToken(slot_id: CK_SLOT_ID, p_pin: *mut CK_UTF8CHAR, ul_pin_len: CK_ULONG, p_label: *mut CK_UTF8CHAR) {
        let m = module()?;
        // SAFETY: PIN buffer valid for its length (caller).
        let pin = unsafe { read_pin(p_pin, ul_pin_len)? };
        if p_label.is_null() {
            return Err(Error::ArgumentsBad);
        }
        // SAFETY: the label is a 32-byte field (caller contract).
        let raw = unsafe { slice(p_label.cast_const(), 32)? };
        let label = String::from_utf8_lossy(raw);
        let label = label.trim_end_matches([' ', '\0']);
        m.init_token(slot_id, &pin, label)
    }

    /// `C_InitPIN` (§5.5).
    fn C_InitPIN(h: CK_SESSION_HANDLE, p_pin: *mut CK_UTF8CHAR, ul_pin_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: PIN buffer valid for its length (caller).
        let pin = unsafe { read_pin(p_pin, ul_pin_len)? };
        m.init_pin(h, &pin)
    }

    /// `C_SetPIN` (§5.5).
    fn C_SetPIN(h: CK_SESSION_HANDLE, p_old: *mut CK_UTF8CHAR, ul_old: CK_ULONG, p_new: *mut CK_UTF8CHAR, ul_new: CK_ULONG) {
        let m = module()?;
        // SAFETY: PIN buffers valid for their lengths (caller).
        let old = unsafe { read_pin(p_old, ul_old)? };
        // SAFETY: as above.
        let new = unsafe { read_pin(p_new, ul_new)? };
        m.set_pin(h, &old, &new)
    }

    /// `C_OpenSession` (§5.6). Notification callbacks are never called.
    fn C_OpenSession(slot_id: CK_SLOT_ID, flags: CK_FLAGS, _app: *mut c_void, _notify: CK_NOTIFY, ph: *mut CK_SESSION_HANDLE) {
        let m = module()?;
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(ph)? };
        *dst = m.open_session(slot_id, flags)?;
        Ok(())
    }

    /// `C_CloseSession` (§5.6).
    fn C_CloseSession(h: CK_SESSION_HANDLE) {
        module()?.close_session(h)
    }

    /// `C_CloseAllSessions` (§5.6).
    fn C_CloseAllSessions(slot_id: CK_SLOT_ID) {
        module()?.close_all_sessions(slot_id)
    }

    /// `C_GetSessionInfo` (§5.6).
    fn C_GetSessionInfo(h: CK_SESSION_HANDLE, p_info: *mut CK_SESSION_INFO) {
        let i = module()?.session_info(h)?;
        // SAFETY: caller contract for an output pointer.
        *unsafe { out(p_info)? } = i;
        Ok(())
    }

    /// `C_SessionCancel` (§5.6, 3.0).
    fn C_SessionCancel(h: CK_SESSION_HANDLE, flags: CK_FLAGS) {
        module()?.session_cancel(h, flags)
    }

    /// `C_Login` (§5.6).
    fn C_Login(h: CK_SESSION_HANDLE, user: CK_USER_TYPE, p_pin: *mut CK_UTF8CHAR, ul_pin_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: PIN buffer valid for its length (caller).
        let pin = unsafe { read_pin(p_pin, ul_pin_len)? };
        m.login(h, user, &pin)
    }

    /// `C_LoginUser` (§5.6, 3.0). The embedded token has one user per type; the name must be
    /// readable but is otherwise ignored.
    fn C_LoginUser(h: CK_SESSION_HANDLE, user: CK_USER_TYPE, p_pin: *mut CK_UTF8CHAR, ul_pin_len: CK_ULONG, p_name: *mut CK_UTF8CHAR, ul_name_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: name buffer valid for its length (caller).
        unsafe { slice(p_name.cast_const(), ul_name_len)? };
        // SAFETY: PIN buffer valid for its length (caller).
        let pin = unsafe { read_pin(p_pin, ul_pin_len)? };
        m.login(h, user, &pin)
    }

    /// `C_Logout` (§5.6).
    fn C_Logout(h: CK_SESSION_HANDLE) {
        module()?.logout(h)
    }

    /// `C_CreateObject` (§5.7).
    fn C_CreateObject(h: CK_SESSION_HANDLE, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG, ph_object: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: template valid for `n` attributes (caller).
        let t = unsafe { read_template(p_t, n)? };
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(ph_object)? };
        *dst = m.create_object(h, &t)?;
        Ok(())
    }

    /// `C_CopyObject` (§5.7).
    fn C_CopyObject(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG, ph_new: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        // SAFETY: template valid for `n` attributes (caller).
        let t = unsafe { read_template(p_t, n)? };
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(ph_new)? };
        *dst = m.copy_object(h, obj, &t)?;
        Ok(())
    }

    /// `C_DestroyObject` (§5.7).
    fn C_DestroyObject(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) {
        module()?.destroy_object(h, obj)
    }

    /// `C_GetObjectSize` (§5.7): always `CK_UNAVAILABLE_INFORMATION`.
    fn C_GetObjectSize(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, pul_size: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(pul_size)? };
        *dst = m.object_size(h, obj)?;
        Ok(())
    }

    /// `C_GetAttributeValue` (§5.7): per-attribute results, `CK_UNAVAILABLE_INFORMATION` for
    /// sensitive, unknown or too-small entries, and the NULL-`pValue` length query.
    fn C_GetAttributeValue(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG) {
        let m = module()?;
        let n = usize::try_from(n).map_err(|_| Error::ArgumentsBad)?;
        // SAFETY: template valid and writable for `n` attributes (caller).
        let attrs = unsafe { slice_mut(p_t, n)? };
        let types: Vec<CK_ULONG> = attrs.iter().map(|a| a.type_).collect();
        let values = m.attribute_values(h, obj, &types)?;
        let mut worst: Option<Error> = None;
        for (a, v) in attrs.iter_mut().zip(values) {
            let r = v.and_then(|v| {
                let v = Zeroizing::new(v);
                if a.pValue.is_null() {
                    a.ulValueLen = v.len() as CK_ULONG;
                    return Ok(());
                }
                let cap = usize::try_from(a.ulValueLen).map_err(|_| Error::ArgumentsBad)?;
                if cap < v.len() {
                    return Err(Error::BufferTooSmall(v.len()));
                }
                // SAFETY: the caller declared `ulValueLen >= v.len()` writable bytes at pValue.
                unsafe { slice_mut(a.pValue.cast::<u8>(), v.len())? }.copy_from_slice(&v);
                a.ulValueLen = v.len() as CK_ULONG;
                Ok(())
            });
            if let Err(e) = r {
                a.ulValueLen = ck::CK_UNAVAILABLE_INFORMATION;
                if worst.as_ref().is_none_or(|w| key_value_rank(&e) > key_value_rank(w)) {
                    worst = Some(e);
                }
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// `C_SetAttributeValue` (§5.7).
    fn C_SetAttributeValue(h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG) {
        let m = module()?;
        // SAFETY: template valid for `n` attributes (caller).
        let t = unsafe { read_template(p_t, n)? };
        m.set_attributes(h, obj, &t)
    }

    /// `C_FindObjectsInit` (§5.7).
    fn C_FindObjectsInit(h: CK_SESSION_HANDLE, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: template valid for `n` attributes (caller).
        let t = unsafe { read_template(p_t, n)? };
        m.find_init(h, &t)
    }

    /// `C_FindObjects` (§5.7).
    fn C_FindObjects(h: CK_SESSION_HANDLE, ph: *mut CK_OBJECT_HANDLE, max: CK_ULONG, pul_count: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: caller contract for an output pointer.
        let count = unsafe { out(pul_count)? };
        let max = usize::try_from(max).map_err(|_| Error::ArgumentsBad)?;
        if max > 0 && ph.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let found = m.find_next(h, max)?;
        // SAFETY: the caller provides `max >= found.len()` writable handles at `ph`.
        unsafe { slice_mut(ph, found.len())? }.copy_from_slice(&found);
        *count = found.len() as CK_ULONG;
        Ok(())
    }

    /// `C_FindObjectsFinal` (§5.7).
    fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) {
        module()?.find_final(h)
    }

    /// `C_EncryptInit` (§5.8).
    fn C_EncryptInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        m.encrypt_init(h, mech, key)
    }

    /// `C_Encrypt` (§5.8).
    fn C_Encrypt(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG, p_out: *mut CK_BYTE, pul_out: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: input valid for its length; output pointer/length pair per caller contract.
        let (data, (cap, l)) = unsafe { (slice(p_data.cast_const(), ul_len)?, out_len(p_out, pul_out)?) };
        // SAFETY: `p_out` holds `cap` bytes.
        unsafe { write_out(m.encrypt(h, data, cap), p_out, l) }
    }

    /// `C_EncryptUpdate` (§5.8): every complete block at once (see `bulwark_core::stream`).
    fn C_EncryptUpdate(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG, p_out: *mut CK_BYTE, pul_out: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: as C_Encrypt.
        let (data, (cap, l)) = unsafe { (slice(p_data.cast_const(), ul_len)?, out_len(p_out, pul_out)?) };
        // SAFETY: as C_Encrypt.
        unsafe { write_out(m.encrypt_update(h, data, cap), p_out, l) }
    }

    /// `C_EncryptFinal` (§5.8).
    fn C_EncryptFinal(h: CK_SESSION_HANDLE, p_out: *mut CK_BYTE, pul_out: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: output pointer/length pair per caller contract.
        let (cap, l) = unsafe { out_len(p_out, pul_out)? };
        // SAFETY: `p_out` holds `cap` bytes.
        unsafe { write_out(m.encrypt_final(h, cap), p_out, l) }
    }

    /// `C_DecryptInit` (§5.9).
    fn C_DecryptInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        m.decrypt_init(h, mech, key)
    }

    /// `C_Decrypt` (§5.9).
    fn C_Decrypt(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG, p_out: *mut CK_BYTE, pul_out: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: as C_Encrypt.
        let (data, (cap, l)) = unsafe { (slice(p_data.cast_const(), ul_len)?, out_len(p_out, pul_out)?) };
        // SAFETY: `p_out` holds `cap` bytes.
        unsafe { write_out(m.decrypt(h, data, cap), p_out, l) }
    }

    /// `C_DecryptUpdate` (§5.9): buffered.
    fn C_DecryptUpdate(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG, p_out: *mut CK_BYTE, pul_out: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: as C_Encrypt.
        let (data, (cap, l)) = unsafe { (slice(p_data.cast_const(), ul_len)?, out_len(p_out, pul_out)?) };
        // SAFETY: as C_Encrypt.
        unsafe { write_out(m.decrypt_update(h, data, cap), p_out, l) }
    }

    /// `C_DecryptFinal` (§5.9).
    fn C_DecryptFinal(h: CK_SESSION_HANDLE, p_out: *mut CK_BYTE, pul_out: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: output pointer/length pair per caller contract.
        let (cap, l) = unsafe { out_len(p_out, pul_out)? };
        // SAFETY: `p_out` holds `cap` bytes.
        unsafe { write_out(m.decrypt_final(h, cap), p_out, l) }
    }

    /// `C_DigestInit` (§5.10).
    fn C_DigestInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        m.digest_init(h, &mech)
    }

    /// `C_Digest` (§5.10).
    fn C_Digest(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG, p_out: *mut CK_BYTE, pul_out: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: as C_Encrypt.
        let (data, (cap, l)) = unsafe { (slice(p_data.cast_const(), ul_len)?, out_len(p_out, pul_out)?) };
        // SAFETY: `p_out` holds `cap` bytes.
        unsafe { write_out(m.digest(h, data, cap), p_out, l) }
    }

    /// `C_DigestUpdate` (§5.10).
    fn C_DigestUpdate(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: input valid for its length (caller).
        let data = unsafe { slice(p_data.cast_const(), ul_len)? };
        m.digest_update(h, data)
    }

    /// `C_DigestKey` (§5.10): key values are never digested (`CKR_KEY_INDIGESTIBLE`).
    fn C_DigestKey(h: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
        module()?.digest_key(h, key)
    }

    /// `C_DigestFinal` (§5.10).
    fn C_DigestFinal(h: CK_SESSION_HANDLE, p_out: *mut CK_BYTE, pul_out: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: output pointer/length pair per caller contract.
        let (cap, l) = unsafe { out_len(p_out, pul_out)? };
        // SAFETY: `p_out` holds `cap` bytes.
        unsafe { write_out(m.digest_final(h, cap), p_out, l) }
    }

    /// `C_SignInit` (§5.11).
    fn C_SignInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        m.sign_init(h, mech, key)
    }

    /// `C_Sign` (§5.11).
    fn C_Sign(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG, p_sig: *mut CK_BYTE, pul_sig: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: as C_Encrypt.
        let (data, (cap, l)) = unsafe { (slice(p_data.cast_const(), ul_len)?, out_len(p_sig, pul_sig)?) };
        // SAFETY: `p_sig` holds `cap` bytes.
        unsafe { write_out(m.sign(h, data, cap), p_sig, l) }
    }

    /// `C_SignUpdate` (§5.11).
    fn C_SignUpdate(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: input valid for its length (caller).
        let data = unsafe { slice(p_data.cast_const(), ul_len)? };
        m.sign_update(h, data)
    }

    /// `C_SignFinal` (§5.11).
    fn C_SignFinal(h: CK_SESSION_HANDLE, p_sig: *mut CK_BYTE, pul_sig: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: output pointer/length pair per caller contract.
        let (cap, l) = unsafe { out_len(p_sig, pul_sig)? };
        // SAFETY: `p_sig` holds `cap` bytes.
        unsafe { write_out(m.sign_final(h, cap), p_sig, l) }
    }

    /// `C_VerifyInit` (§5.12).
    fn C_VerifyInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        m.verify_init(h, mech, key)
    }

    /// `C_Verify` (§5.12).
    fn C_Verify(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG, p_sig: *mut CK_BYTE, ul_sig: CK_ULONG) {
        let m = module()?;
        // SAFETY: inputs valid for their lengths (caller).
        let (data, sig) = unsafe { (slice(p_data.cast_const(), ul_len)?, slice(p_sig.cast_const(), ul_sig)?) };
        m.verify(h, data, sig)
    }

    /// `C_VerifyUpdate` (§5.12).
    fn C_VerifyUpdate(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: input valid for its length (caller).
        let data = unsafe { slice(p_data.cast_const(), ul_len)? };
        m.verify_update(h, data)
    }

    /// `C_VerifyFinal` (§5.12).
    fn C_VerifyFinal(h: CK_SESSION_HANDLE, p_sig: *mut CK_BYTE, ul_sig: CK_ULONG) {
        let m = module()?;
        // SAFETY: input valid for its length (caller).
        let sig = unsafe { slice(p_sig.cast_const(), ul_sig)? };
        m.verify_final(h, sig)
    }

    /// `C_VerifySignatureInit` (3.2 §5.13): the signature is given up front.
    fn C_VerifySignatureInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE, p_sig: *mut CK_BYTE, ul_sig: CK_ULONG) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        // SAFETY: input valid for its length (caller).
        let sig = unsafe { slice(p_sig.cast_const(), ul_sig)? };
        m.verify_signature_init(h, mech, key, sig)
    }

    /// `C_VerifySignature` (3.2 §5.13).
    fn C_VerifySignature(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: input valid for its length (caller).
        let data = unsafe { slice(p_data.cast_const(), ul_len)? };
        m.verify_signature(h, data)
    }

    /// `C_VerifySignatureUpdate` (3.2 §5.13).
    fn C_VerifySignatureUpdate(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: input valid for its length (caller).
        let data = unsafe { slice(p_data.cast_const(), ul_len)? };
        m.verify_signature_update(h, data)
    }

    /// `C_VerifySignatureFinal` (3.2 §5.13).
    fn C_VerifySignatureFinal(h: CK_SESSION_HANDLE) {
        module()?.verify_signature_final(h)
    }

    /// `C_EncapsulateKey` (3.2 §5.18): ML-KEM encapsulation; the shared secret becomes a new
    /// secret-key object described by the template, the ciphertext goes to the caller.
    fn C_EncapsulateKey(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG, p_ct: *mut CK_BYTE, pul_ct: *mut CK_ULONG, ph_key: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        // SAFETY: template valid for `n` attributes (caller).
        let t = unsafe { read_template(p_t, n)? };
        // SAFETY: output pointer/length pair and key handle pointer per caller contract.
        let ((cap, l), dst) = unsafe { (out_len(p_ct, pul_ct)?, out(ph_key)?) };
        let r = m.encapsulate_key(h, &mech, key, &t, cap);
        let r = r.map(|(ct, handle)| {
            if let Some(hk) = handle {
                *dst = hk;
            }
            match cap {
                None => crate::token::Out::Len(ct.len()),
                Some(_) => crate::token::Out::Data(crate::token::Output::Public(ct)),
            }
        });
        // SAFETY: `p_ct` holds `cap` bytes.
        unsafe { write_out(r, p_ct, l) }
    }

    /// `C_DecapsulateKey` (3.2 §5.18).
    fn C_DecapsulateKey(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG, p_ct: *mut CK_BYTE, ul_ct: CK_ULONG, ph_key: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        // SAFETY: template valid for `n` attributes (caller).
        let t = unsafe { read_template(p_t, n)? };
        // SAFETY: input valid for its length (caller).
        let ct = unsafe { slice(p_ct.cast_const(), ul_ct)? };
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(ph_key)? };
        *dst = m.decapsulate_key(h, &mech, key, &t, ct)?;
        Ok(())
    }

    /// `C_GenerateKey` (§5.14).
    fn C_GenerateKey(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG, ph_key: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism valid (caller).
        let mech = mech::keygen(&unsafe { mech::read(p_mech)? })?;
        // SAFETY: template valid for `n` attributes (caller).
        let t = unsafe { read_template(p_t, n)? };
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(ph_key)? };
        *dst = m.generate_key(h, mech, &t)?;
        Ok(())
    }

    /// `C_GenerateKeyPair` (§5.14).
    fn C_GenerateKeyPair(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, p_pub: *mut CK_ATTRIBUTE, n_pub: CK_ULONG, p_priv: *mut CK_ATTRIBUTE, n_priv: CK_ULONG, ph_pub: *mut CK_OBJECT_HANDLE, ph_priv: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism valid (caller).
        let mech = mech::keygen(&unsafe { mech::read(p_mech)? })?;
        // SAFETY: templates valid for their counts (caller).
        let (pub_t, priv_t) = unsafe { (read_template(p_pub, n_pub)?, read_template(p_priv, n_priv)?) };
        // SAFETY: caller contract for output pointers.
        let (dst_pub, dst_priv) = unsafe { (out(ph_pub)?, out(ph_priv)?) };
        let (a, b) = m.generate_key_pair(h, mech, &pub_t, &priv_t)?;
        *dst_pub = a;
        *dst_priv = b;
        Ok(())
    }

    /// `C_WrapKey` (§5.14).
    fn C_WrapKey(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, wrapping: CK_OBJECT_HANDLE, key: CK_OBJECT_HANDLE, p_out: *mut CK_BYTE, pul_out: *mut CK_ULONG) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        // SAFETY: output pointer/length pair per caller contract.
        let (cap, l) = unsafe { out_len(p_out, pul_out)? };
        let w = Zeroizing::new(m.wrap_key(h, &mech, wrapping, key)?);
        let r = match cap {
            None => Ok(crate::token::Out::Len(w.len())),
            Some(c) if c < w.len() => Err(Error::BufferTooSmall(w.len())),
            Some(_) => Ok(crate::token::Out::Data(crate::token::Output::Secret(w))),
        };
        // SAFETY: `p_out` holds `cap` bytes.
        unsafe { write_out(r, p_out, l) }
    }

    /// `C_UnwrapKey` (§5.14).
    fn C_UnwrapKey(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, unwrapping: CK_OBJECT_HANDLE, p_wrapped: *mut CK_BYTE, ul_wrapped: CK_ULONG, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG, ph_key: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        // SAFETY: input valid for its length (caller).
        let wrapped = unsafe { slice(p_wrapped.cast_const(), ul_wrapped)? };
        // SAFETY: template valid for `n` attributes (caller).
        let t = unsafe { read_template(p_t, n)? };
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(ph_key)? };
        *dst = m.unwrap_key(h, &mech, unwrapping, wrapped, &t)?;
        Ok(())
    }

    /// `C_DeriveKey` (§5.14).
    fn C_DeriveKey(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, base: CK_OBJECT_HANDLE, p_t: *mut CK_ATTRIBUTE, n: CK_ULONG, ph_key: *mut CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        // SAFETY: template valid for `n` attributes (caller).
        let t = unsafe { read_template(p_t, n)? };
        // SAFETY: caller contract for an output pointer.
        let dst = unsafe { out(ph_key)? };
        *dst = m.derive_key(h, &mech, base, &t)?;
        Ok(())
    }

    /// `C_SeedRandom` (§5.15): `CKR_RANDOM_SEED_NOT_SUPPORTED`.
    fn C_SeedRandom(h: CK_SESSION_HANDLE, p_seed: *mut CK_BYTE, ul_len: CK_ULONG) {
        let m = module()?;
        // SAFETY: input valid for its length (caller).
        unsafe { slice(p_seed.cast_const(), ul_len)? };
        m.seed_random(h)
    }

    /// `C_GenerateRandom` (§5.15).
    fn C_GenerateRandom(h: CK_SESSION_HANDLE, p_out: *mut CK_BYTE, ul_len: CK_ULONG) {
        let m = module()?;
        let n = usize::try_from(ul_len).map_err(|_| Error::ArgumentsBad)?;
        // SAFETY: output buffer writable for `ul_len` bytes (caller).
        let buf = unsafe { slice_mut(p_out, n)? };
        m.generate_random(h, buf)
    }

    /// `C_GetFunctionStatus` (§5.16, legacy): `CKR_FUNCTION_NOT_PARALLEL`.
    fn C_GetFunctionStatus(h: CK_SESSION_HANDLE) {
        module()?.session(h)?;
        Err(Error::FunctionNotParallel)
    }

    /// `C_CancelFunction` (§5.16, legacy): `CKR_FUNCTION_NOT_PARALLEL`.
    fn C_CancelFunction(h: CK_SESSION_HANDLE) {
        module()?.session(h)?;
        Err(Error::FunctionNotParallel)
    }
}

/// Generates entry points that exist (every function-list slot must) but are not supported.
macro_rules! unsupported {
    ($($name:ident($($ty:ty),*);)*) => {$(
        #[doc = concat!("`", stringify!($name), "`: not supported (`CKR_FUNCTION_NOT_SUPPORTED`).")]
        ///
        /// # Safety
        /// Reads none of its arguments.
        #[allow(non_snake_case)]
        pub(crate) unsafe extern "C" fn $name($(_: $ty),*) -> cryptoki_sys::CK_RV {
            cryptoki_sys::CKR_FUNCTION_NOT_SUPPORTED
        }
    )*};
}

unsupported! {
    C_DigestEncryptUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_DecryptDigestUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_SignEncryptUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_DecryptVerifyUpdate(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_WaitForSlotEvent(CK_FLAGS, *mut CK_SLOT_ID, *mut c_void);
    C_MessageSignInit(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    C_SignMessage(CK_SESSION_HANDLE, *mut c_void, CK_ULONG, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_SignMessageBegin(CK_SESSION_HANDLE, *mut c_void, CK_ULONG);
    C_SignMessageNext(CK_SESSION_HANDLE, *mut c_void, CK_ULONG, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_MessageSignFinal(CK_SESSION_HANDLE);
    C_MessageVerifyInit(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    C_VerifyMessage(CK_SESSION_HANDLE, *mut c_void, CK_ULONG, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, CK_ULONG);
    C_VerifyMessageBegin(CK_SESSION_HANDLE, *mut c_void, CK_ULONG);
    C_VerifyMessageNext(CK_SESSION_HANDLE, *mut c_void, CK_ULONG, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, CK_ULONG);
    C_MessageVerifyFinal(CK_SESSION_HANDLE);
    C_GetSessionValidationFlags(CK_SESSION_HANDLE, ck::CK_SESSION_VALIDATION_FLAGS_TYPE, *mut CK_FLAGS);
    C_AsyncComplete(CK_SESSION_HANDLE, *mut CK_UTF8CHAR, *mut ck::CK_ASYNC_DATA);
    C_AsyncGetID(CK_SESSION_HANDLE, *mut CK_UTF8CHAR, *mut CK_ULONG);
    C_AsyncJoin(CK_SESSION_HANDLE, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_BYTE, CK_ULONG);
    C_WrapKeyAuthenticated(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    C_UnwrapKeyAuthenticated(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_BYTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
}
