//! The PKCS#11 3.0 message-based encryption functions (§5.15, §5.17) for AES-GCM, the
//! recover functions, and the operation-state refusal: C shells over the token layer.
//!
//! Each message call carries a `CK_GCM_MESSAGE_PARAMS`; it is read here into a
//! [`GcmMessage`], and after encryption the generated IV (with `CKG_GENERATE` /
//! `CKG_GENERATE_RANDOM`) and the tag are written back into the caller's `pIv` / `pTag`, within
//! the call that produced them. No pointer is kept after a call returns.

#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_void;

use cryptoki_sys as ck;
use cryptoki_sys::{
    CK_BYTE, CK_FLAGS, CK_MECHANISM, CK_OBJECT_HANDLE, CK_SESSION_HANDLE, CK_ULONG,
};

use super::{ck_entry, mech, module, out_len, read_param, slice, slice_mut, write_out};
use crate::error::{Error, Result};
use crate::token::{GcmMessage, IvSource, MsgOut, Out};

const GCM_IV: usize = 12;
const GCM_TAG: usize = 16;

/// The raw parameter block and where to write results back.
struct Params {
    msg: GcmMessage,
    /// `pIv` when the token generates the IV (12 writable bytes).
    iv_out: Option<*mut u8>,
    /// `pTag` (16 bytes).
    tag: *mut u8,
}

/// Reads a `CK_GCM_MESSAGE_PARAMS`.
///
/// # Safety
/// `p` must be NULL or valid for `n` bytes; its `pIv` valid for `ulIvLen` bytes and its `pTag`
/// for `ulTagBits / 8` bytes (the PKCS#11 caller contract).
unsafe fn gcm_params(p: *mut c_void, n: CK_ULONG, encrypt: bool) -> Result<Params> {
    // SAFETY: forwarded caller contract; CK_GCM_MESSAGE_PARAMS is integers and pointers.
    let g: ck::CK_GCM_MESSAGE_PARAMS =
        unsafe { read_param(p.cast_const(), n) }.ok_or(Error::MechanismParamInvalid)?;
    if g.ulTagBits != 128 || g.pTag.is_null() {
        return Err(Error::MechanismParamInvalid);
    }
    // SAFETY: pIv is valid for ulIvLen bytes (caller).
    let iv = unsafe { slice(g.pIv.cast_const(), g.ulIvLen) }
        .map_err(|_| Error::MechanismParamInvalid)?
        .to_vec();
    let generate = matches!(g.ivGenerator, ck::CKG_GENERATE | ck::CKG_GENERATE_RANDOM);
    let (source, iv_out) = match g.ivGenerator {
        _ if !encrypt => (IvSource::Given(iv), None),
        ck::CKG_NO_GENERATE => (IvSource::Given(iv), None),
        _ if generate => {
            let bits =
                usize::try_from(g.ulIvFixedBits).map_err(|_| Error::MechanismParamInvalid)?;
            if iv.len() != GCM_IV || bits % 8 != 0 || bits / 8 > GCM_IV - 4 {
                return Err(Error::MechanismParamInvalid);
            }
            (IvSource::Generate { fixed: iv[..bits / 8].to_vec() }, Some(g.pIv))
        }
        // CKG_GENERATE_COUNTER(_XOR): a per-operation counter would repeat across operations
        // with the same fixed field; refused so that a nonce is never reused.
        _ => return Err(Error::MechanismParamInvalid),
    };
    let tag = if encrypt {
        Vec::new()
    } else {
        // SAFETY: pTag is valid for ulTagBits / 8 bytes (caller).
        unsafe { slice(g.pTag.cast_const(), GCM_TAG as CK_ULONG)? }.to_vec()
    };
    Ok(Params { msg: GcmMessage { iv: source, aad: Vec::new(), tag }, iv_out, tag: g.pTag })
}

/// Writes a message result: the generated IV and the tag into the parameter block, the data
/// under the buffer convention.
///
/// # Safety
/// As [`gcm_params`] for `params`; `p_out` / `plen` as for [`write_out`].
unsafe fn deliver(
    r: Result<MsgOut>,
    params: &Params,
    p_out: *mut u8,
    plen: &mut CK_ULONG,
) -> Result<()> {
    match r {
        Ok(MsgOut::Len(n)) => {
            // SAFETY: forwarded.
            unsafe { write_out(Ok(Out::Len(n)), p_out, plen) }
        }
        Ok(MsgOut::Data { data, generated_iv, tag }) => {
            if let Some(iv_out) = params.iv_out {
                if generated_iv.len() == GCM_IV {
                    // SAFETY: pIv holds ulIvLen == 12 writable bytes (checked when parsed).
                    unsafe { slice_mut(iv_out, GCM_IV)? }.copy_from_slice(&generated_iv);
                }
            }
            if tag.len() == GCM_TAG {
                // SAFETY: pTag holds ulTagBits / 8 == 16 writable bytes (caller).
                unsafe { slice_mut(params.tag, GCM_TAG)? }.copy_from_slice(&tag);
            }
            // SAFETY: forwarded.
            unsafe { write_out(Ok(Out::Data(data)), p_out, plen) }
        }
        Err(e) => {
            // SAFETY: forwarded.
            unsafe { write_out(Err(e), p_out, plen) }
        }
    }
}

/// Reads only the mechanism type of a message-based init (`CKM_AES_GCM` takes no parameter).
///
/// # Safety
/// `p` must be NULL or point to a readable `CK_MECHANISM`.
unsafe fn message_mech(p: *mut CK_MECHANISM) -> Result<ck::CK_MECHANISM_TYPE> {
    // SAFETY: forwarded caller contract.
    let m = unsafe { mech::read(p)? };
    Ok(m.mechanism)
}

ck_entry! {
    /// `C_MessageEncryptInit` (§5.15).
    fn C_MessageEncryptInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism readable (caller).
        let ckm = unsafe { message_mech(p_mech)? };
        m.message_encrypt_init(h, ckm, key)
    }

    /// `C_EncryptMessage` (§5.15): one message; the tag goes to `pTag`, a generated IV to `pIv`.
    fn C_EncryptMessage(h: CK_SESSION_HANDLE, p_param: *mut c_void, ul_param: CK_ULONG, p_aad: *mut CK_BYTE, ul_aad: CK_ULONG, p_pt: *mut CK_BYTE, ul_pt: CK_ULONG, p_ct: *mut CK_BYTE, pul_ct: *mut CK_ULONG) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: parameter block, AAD, plaintext and output per caller contract.
        let (mut params, aad, pt, (cap, l)) = unsafe {
            (gcm_params(p_param, ul_param, true)?, slice(p_aad.cast_const(), ul_aad)?, slice(p_pt.cast_const(), ul_pt)?, out_len(p_ct, pul_ct)?)
        };
        params.msg.aad = aad.to_vec();
        let r = m.one_message(h, true, &params.msg, pt, cap);
        // SAFETY: as read above.
        unsafe { deliver(r, &params, p_ct, l) }
    }

    /// `C_EncryptMessageBegin` (§5.15).
    fn C_EncryptMessageBegin(h: CK_SESSION_HANDLE, p_param: *mut c_void, ul_param: CK_ULONG, p_aad: *mut CK_BYTE, ul_aad: CK_ULONG) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: parameter block and AAD per caller contract.
        let (mut params, aad) = unsafe { (gcm_params(p_param, ul_param, true)?, slice(p_aad.cast_const(), ul_aad)?) };
        params.msg.aad = aad.to_vec();
        m.message_begin(h, true, params.msg)
    }

    /// `C_EncryptMessageNext` (§5.15): parts are held until `CKF_END_OF_MESSAGE`, which returns
    /// the whole ciphertext and writes the tag (and a generated IV) into this call's block.
    fn C_EncryptMessageNext(h: CK_SESSION_HANDLE, p_param: *mut c_void, ul_param: CK_ULONG, p_pt: *mut CK_BYTE, ul_pt: CK_ULONG, p_ct: *mut CK_BYTE, pul_ct: *mut CK_ULONG, flags: CK_FLAGS) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: parameter block, part and output per caller contract.
        let (params, pt, (cap, l)) = unsafe {
            (gcm_params(p_param, ul_param, true)?, slice(p_pt.cast_const(), ul_pt)?, out_len(p_ct, pul_ct)?)
        };
        let end = flags & ck::CKF_END_OF_MESSAGE != 0;
        let r = m.message_next(h, true, pt, end, Vec::new(), cap);
        // SAFETY: as read above.
        unsafe { deliver(r, &params, p_ct, l) }
    }

    /// `C_MessageEncryptFinal` (§5.15).
    fn C_MessageEncryptFinal(h: CK_SESSION_HANDLE) {
        module()?.message_final(h, true)
    }

    /// `C_MessageDecryptInit` (§5.17).
    fn C_MessageDecryptInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism readable (caller).
        let ckm = unsafe { message_mech(p_mech)? };
        m.message_decrypt_init(h, ckm, key)
    }

    /// `C_DecryptMessage` (§5.17): the tag comes from `pTag`.
    fn C_DecryptMessage(h: CK_SESSION_HANDLE, p_param: *mut c_void, ul_param: CK_ULONG, p_aad: *mut CK_BYTE, ul_aad: CK_ULONG, p_ct: *mut CK_BYTE, ul_ct: CK_ULONG, p_pt: *mut CK_BYTE, pul_pt: *mut CK_ULONG) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: parameter block, AAD, ciphertext and output per caller contract.
        let (mut params, aad, ct, (cap, l)) = unsafe {
            (gcm_params(p_param, ul_param, false)?, slice(p_aad.cast_const(), ul_aad)?, slice(p_ct.cast_const(), ul_ct)?, out_len(p_pt, pul_pt)?)
        };
        params.msg.aad = aad.to_vec();
        let r = m.one_message(h, false, &params.msg, ct, cap);
        // SAFETY: as read above.
        unsafe { deliver(r, &params, p_pt, l) }
    }

    /// `C_DecryptMessageBegin` (§5.17).
    fn C_DecryptMessageBegin(h: CK_SESSION_HANDLE, p_param: *mut c_void, ul_param: CK_ULONG, p_aad: *mut CK_BYTE, ul_aad: CK_ULONG) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: parameter block and AAD per caller contract.
        let (mut params, aad) = unsafe { (gcm_params(p_param, ul_param, false)?, slice(p_aad.cast_const(), ul_aad)?) };
        params.msg.aad = aad.to_vec();
        m.message_begin(h, false, params.msg)
    }

    /// `C_DecryptMessageNext` (§5.17): no plaintext before `CKF_END_OF_MESSAGE` (the tag, read
    /// from this last call's block, is checked first).
    fn C_DecryptMessageNext(h: CK_SESSION_HANDLE, p_param: *mut c_void, ul_param: CK_ULONG, p_ct: *mut CK_BYTE, ul_ct: CK_ULONG, p_pt: *mut CK_BYTE, pul_pt: *mut CK_ULONG, flags: CK_FLAGS) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: parameter block, part and output per caller contract.
        let (params, ct, (cap, l)) = unsafe {
            (gcm_params(p_param, ul_param, false)?, slice(p_ct.cast_const(), ul_ct)?, out_len(p_pt, pul_pt)?)
        };
        let end = flags & ck::CKF_END_OF_MESSAGE != 0;
        let r = m.message_next(h, false, ct, end, params.msg.tag.clone(), cap);
        // SAFETY: as read above.
        unsafe { deliver(r, &params, p_pt, l) }
    }

    /// `C_MessageDecryptFinal` (§5.17).
    fn C_MessageDecryptFinal(h: CK_SESSION_HANDLE) {
        module()?.message_final(h, false)
    }

    /// `C_SignRecoverInit` (§5.13): `CKM_RSA_PKCS`.
    fn C_SignRecoverInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        m.sign_recover_init(h, mech, key)
    }

    /// `C_SignRecover` (§5.13).
    fn C_SignRecover(h: CK_SESSION_HANDLE, p_data: *mut CK_BYTE, ul_len: CK_ULONG, p_sig: *mut CK_BYTE, pul_sig: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: input valid for its length; output pointer/length pair per caller contract.
        let (data, (cap, l)) = unsafe { (slice(p_data.cast_const(), ul_len)?, out_len(p_sig, pul_sig)?) };
        // SAFETY: `p_sig` holds `cap` bytes.
        unsafe { write_out(m.sign_recover(h, data, cap), p_sig, l) }
    }

    /// `C_VerifyRecoverInit` (§5.14): `CKM_RSA_PKCS`.
    fn C_VerifyRecoverInit(h: CK_SESSION_HANDLE, p_mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: mechanism and its parameters valid (caller).
        let mech = unsafe { mech::operation(&mech::read(p_mech)?)? };
        m.verify_recover_init(h, mech, key)
    }

    /// `C_VerifyRecover` (§5.14).
    fn C_VerifyRecover(h: CK_SESSION_HANDLE, p_sig: *mut CK_BYTE, ul_sig: CK_ULONG, p_data: *mut CK_BYTE, pul_data: *mut CK_ULONG) {
        let m = module()?;
        // SAFETY: as C_SignRecover.
        let (sig, (cap, l)) = unsafe { (slice(p_sig.cast_const(), ul_sig)?, out_len(p_data, pul_data)?) };
        // SAFETY: `p_data` holds `cap` bytes.
        unsafe { write_out(m.verify_recover(h, sig, cap), p_data, l) }
    }

    /// `C_GetOperationState` (§5.6): refused. A saved state would carry a prepared key's
    /// authorization (and, mid-operation, plaintext) out of the token into caller memory, and
    /// a restored one could replay a counter or an IV; so with an operation active the answer is
    /// `CKR_STATE_UNSAVEABLE`, and with none `CKR_OPERATION_NOT_INITIALIZED`.
    fn C_GetOperationState(h: CK_SESSION_HANDLE, _p_state: *mut CK_BYTE, pul_len: *mut CK_ULONG) {
        let m = module()?;
        if pul_len.is_null() {
            return Err(Error::ArgumentsBad);
        }
        m.operation_state(h)
    }

    /// `C_SetOperationState` (§5.6): no state is ever saved, so none can be restored:
    /// `CKR_SAVED_STATE_INVALID`.
    fn C_SetOperationState(h: CK_SESSION_HANDLE, p_state: *mut CK_BYTE, ul_len: CK_ULONG, _enc: CK_OBJECT_HANDLE, _auth: CK_OBJECT_HANDLE) {
        let m = module()?;
        m.session(h)?;
        // SAFETY: the state is valid for its length (caller); only checked, never interpreted.
        unsafe { slice(p_state.cast_const(), ul_len)? };
        Err(Error::SavedStateInvalid)
    }
}
