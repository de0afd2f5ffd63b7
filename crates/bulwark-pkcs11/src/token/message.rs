//! The PKCS#11 3.0 message-based encryption API for AES-GCM (`C_MessageEncryptInit`,
//! `C_EncryptMessage`, `C_EncryptMessageBegin` / `Next`, `C_MessageEncryptFinal` and the decrypt
//! side), in safe Rust; the C parameter blocks are read and written in `entry/message.rs`.
//!
//! One `C_MessageEncryptInit` passes the policy gate once; each message is then one ordinary
//! encryption on the prepared key with its own IV, so every message is gated and counted like a
//! `C_Encrypt`. With `CKG_GENERATE` / `CKG_GENERATE_RANDOM` the IV is made **inside the token**
//! (the daemon, for a remote slot) as part of the encryption itself
//! ([`Mechanism::AesGcmGenerated`]) and handed back to the caller, so a caller cannot reuse a
//! nonce. A message assembled with `Begin` / `Next` is held until `CKF_END_OF_MESSAGE` (GCM's
//! tag covers the whole message, and decryption must not release unauthenticated plaintext);
//! with a generated IV, the IV is written back into the parameter block of that last call.

use zeroize::Zeroizing;

use bulwark_core::mechanism::Mechanism;
use bulwark_core::token::Usage;

use super::ops::key_handle;
use super::session::MessageOp;
use super::{lock, Module, Output};
use crate::error::{Error, Result};

const GCM_IV: usize = 12;
const GCM_TAG: usize = 16;

/// Where a message's IV comes from.
#[derive(Clone, Debug)]
pub(crate) enum IvSource {
    /// `CKG_NO_GENERATE`: the caller's IV (and always for decryption).
    Given(Vec<u8>),
    /// `CKG_GENERATE` / `CKG_GENERATE_RANDOM`: the token makes it; `fixed` are the caller's
    /// leading bytes (`ulIvFixedBits / 8`).
    Generate {
        /// The fixed leading bytes.
        fixed: Vec<u8>,
    },
}

/// One message's `CK_GCM_MESSAGE_PARAMS` and associated data, parsed.
#[derive(Clone, Debug)]
pub(crate) struct GcmMessage {
    pub(crate) iv: IvSource,
    pub(crate) aad: Vec<u8>,
    /// Decryption: the tag from `pTag` (empty for encryption).
    pub(crate) tag: Vec<u8>,
}

/// What a message call hands back.
#[derive(Debug)]
pub enum MsgOut {
    /// Only the length (NULL output buffer).
    Len(usize),
    /// The output, and for encryption the IV used (to return when generated) and the tag.
    Data {
        /// Ciphertext or plaintext.
        data: Output,
        /// The IV the token generated (empty when the caller gave it).
        generated_iv: Vec<u8>,
        /// The tag (encryption only; empty otherwise).
        tag: Vec<u8>,
    },
}

fn check_len(cap: Option<usize>, n: usize) -> Result<Option<MsgOut>> {
    match cap {
        None => Ok(Some(MsgOut::Len(n))),
        Some(c) if c < n => Err(Error::BufferTooSmall(n)),
        Some(_) => Ok(None),
    }
}

impl Module {
    fn message_init(&self, sh: u64, ckm: u64, key: u64, encrypt: bool) -> Result<()> {
        let s = self.session(sh)?;
        if ckm != cryptoki_sys::CKM_AES_GCM {
            return Err(Error::MechanismInvalid);
        }
        let mut st = lock(&s.state);
        let slot = if encrypt { &mut st.msg_encrypt } else { &mut st.msg_decrypt };
        if slot.is_some() {
            return Err(Error::OperationActive);
        }
        // The gate sees the mechanism each message will use; encryption is prepared for a
        // token-generated IV (a message with a caller IV is gated again when it runs).
        let (usage, mech) = if encrypt {
            (
                Usage::Encrypt,
                Mechanism::AesGcmGenerated { fixed: vec![], aad: vec![], tag_bits: 128 },
            )
        } else {
            (Usage::Decrypt, Mechanism::AesGcm { iv: vec![0; GCM_IV], aad: vec![], tag_bits: 128 })
        };
        let prepared = s.hsm.prepare(key, usage, &mech).map_err(key_handle)?;
        *slot = Some(MessageOp { key: prepared, part: None });
        Ok(())
    }

    /// `C_MessageEncryptInit` (`CKM_AES_GCM`, no parameter).
    pub fn message_encrypt_init(&self, sh: u64, ckm: u64, key: u64) -> Result<()> {
        self.message_init(sh, ckm, key, true)
    }

    /// `C_MessageDecryptInit` (`CKM_AES_GCM`, no parameter).
    pub fn message_decrypt_init(&self, sh: u64, ckm: u64, key: u64) -> Result<()> {
        self.message_init(sh, ckm, key, false)
    }

    /// `C_MessageEncryptFinal` / `C_MessageDecryptFinal`: ends the operation (a message left
    /// half-assembled is discarded).
    pub fn message_final(&self, sh: u64, encrypt: bool) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let slot = if encrypt { &mut st.msg_encrypt } else { &mut st.msg_decrypt };
        slot.take().map(|_| ()).ok_or(Error::OperationNotInitialized)
    }

    /// One whole message with the prepared key.
    fn run_message(op: &MessageOp, encrypt: bool, msg: &GcmMessage, data: &[u8]) -> Result<MsgOut> {
        if encrypt {
            let (mech, generated) = match &msg.iv {
                IvSource::Given(iv) => (
                    Mechanism::AesGcm { iv: iv.clone(), aad: msg.aad.clone(), tag_bits: 128 },
                    false,
                ),
                IvSource::Generate { fixed } => (
                    Mechanism::AesGcmGenerated {
                        fixed: fixed.clone(),
                        aad: msg.aad.clone(),
                        tag_bits: 128,
                    },
                    true,
                ),
            };
            let mut out = op.key.encrypt(&mech, data)?;
            let iv_len = if generated { GCM_IV } else { 0 };
            if out.len() != iv_len + data.len() + GCM_TAG {
                return Err(Error::General("unexpected GCM output length"));
            }
            let tag = out.split_off(out.len() - GCM_TAG);
            let ct = out.split_off(iv_len);
            Ok(MsgOut::Data { data: Output::Public(ct), generated_iv: out, tag })
        } else {
            let IvSource::Given(iv) = &msg.iv else { return Err(Error::MechanismParamInvalid) };
            if msg.tag.len() != GCM_TAG {
                return Err(Error::MechanismParamInvalid);
            }
            let mech = Mechanism::AesGcm { iv: iv.clone(), aad: msg.aad.clone(), tag_bits: 128 };
            let mut input = Zeroizing::new(Vec::with_capacity(data.len() + GCM_TAG));
            input.extend_from_slice(data);
            input.extend_from_slice(&msg.tag);
            let pt = op.key.decrypt(&mech, &input)?;
            Ok(MsgOut::Data {
                data: Output::Secret(Zeroizing::new(pt.expose_secret().to_vec())),
                generated_iv: Vec::new(),
                tag: Vec::new(),
            })
        }
    }

    /// `C_EncryptMessage` / `C_DecryptMessage`: one message in one call. GCM output is as long
    /// as its input, so a length query or a short buffer runs nothing.
    pub(crate) fn one_message(
        &self,
        sh: u64,
        encrypt: bool,
        msg: &GcmMessage,
        data: &[u8],
        cap: Option<usize>,
    ) -> Result<MsgOut> {
        let s = self.session(sh)?;
        let st = lock(&s.state);
        let op = if encrypt { &st.msg_encrypt } else { &st.msg_decrypt };
        let op = op.as_ref().ok_or(Error::OperationNotInitialized)?;
        if op.part.is_some() {
            return Err(Error::OperationActive);
        }
        if let Some(len) = check_len(cap, data.len())? {
            return Ok(len);
        }
        Self::run_message(op, encrypt, msg, data)
    }

    /// `C_EncryptMessageBegin` / `C_DecryptMessageBegin`.
    pub(crate) fn message_begin(&self, sh: u64, encrypt: bool, msg: GcmMessage) -> Result<()> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let op = if encrypt { &mut st.msg_encrypt } else { &mut st.msg_decrypt };
        let op = op.as_mut().ok_or(Error::OperationNotInitialized)?;
        if op.part.is_some() {
            return Err(Error::OperationActive);
        }
        op.part = Some((msg, Zeroizing::new(Vec::new())));
        Ok(())
    }

    /// `C_EncryptMessageNext` / `C_DecryptMessageNext`. Parts are held until `end`
    /// (`CKF_END_OF_MESSAGE`); decryption takes the tag from `end_tag` (the last call's
    /// parameter block).
    pub fn message_next(
        &self,
        sh: u64,
        encrypt: bool,
        part: &[u8],
        end: bool,
        end_tag: Vec<u8>,
        cap: Option<usize>,
    ) -> Result<MsgOut> {
        let s = self.session(sh)?;
        let mut st = lock(&s.state);
        let slot = if encrypt { &mut st.msg_encrypt } else { &mut st.msg_decrypt };
        let op = slot.as_mut().ok_or(Error::OperationNotInitialized)?;
        let (_, buf) = op.part.as_mut().ok_or(Error::OperationNotInitialized)?;
        if !end {
            if cap.is_some() {
                buf.extend_from_slice(part);
            }
            return Ok(if cap.is_some() {
                MsgOut::Data { data: Output::empty(), generated_iv: vec![], tag: vec![] }
            } else {
                MsgOut::Len(0)
            });
        }
        if let Some(len) = check_len(cap, buf.len() + part.len())? {
            return Ok(len);
        }
        let (mut msg, mut buf) = op.part.take().ok_or(Error::OperationNotInitialized)?;
        buf.extend_from_slice(part);
        if !encrypt {
            msg.tag = end_tag;
        }
        Self::run_message(op, encrypt, &msg, &buf)
    }
}
