//! Multi-part encryption and decryption (`C_EncryptUpdate` / `C_DecryptUpdate`) as streams of
//! stateless one-shot calls on a [`PreparedKey`].
//!
//! Each `update` hands back every byte the mode can already produce, as PKCS#11 applications
//! expect (NSS never calls `C_DecryptFinal` once it has the data it wants):
//!
//! | mode | an update returns | kept back |
//! |---|---|---|
//! | ECB, CBC | every complete block | a partial block |
//! | CBC-PAD, encrypt | every complete block | a partial block (padded at final) |
//! | CBC-PAD, decrypt | every complete block but the last | the last block (it holds the padding) |
//! | CTR | every byte | nothing |
//! | GCM, RSA | nothing | everything, until final (GCM must check the tag before releasing plaintext) |
//!
//! The stream keeps only the chaining state (the last ciphertext block, the counter block and
//! its offset) and the held-back bytes; each chunk is one ordinary call on the prepared key with
//! the same mechanism type and an updated IV, so the policy gate, the allowed-mechanism list and
//! the audit record apply to every chunk, and a remote HSM needs no per-stream state. The one
//! chunk kind that is not an ordinary call is CBC-PAD without its padding
//! ([`Mechanism::AesCbcPadPart`]), which yields exactly what PKCS#11's own `C_DecryptUpdate`
//! yields for CBC-PAD. For CTR a chunk that starts inside a block is sent with the counter block
//! of that block and a zero prefix whose output is dropped: that output is keystream the caller
//! could compute from its own plaintext and ciphertext, so it reveals nothing new.
//!
//! This module never sees key material; buffered plaintext (encrypt input, decrypt output) is
//! wiped when the stream drops.

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::hsm::PreparedKey;
use crate::mechanism::Mechanism;
use crate::secret::SecretBytes;

const BLOCK: usize = 16;

/// Which way a stream runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `C_EncryptUpdate`.
    Encrypt,
    /// `C_DecryptUpdate`.
    Decrypt,
}

/// What an update or final call produced.
#[derive(Debug)]
pub enum StreamOutput {
    /// Ciphertext (not secret).
    Ciphertext(Vec<u8>),
    /// Plaintext, wiped on drop.
    Plaintext(SecretBytes),
}

impl StreamOutput {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            StreamOutput::Ciphertext(v) => v,
            StreamOutput::Plaintext(s) => s.expose_secret(),
        }
    }
}

#[derive(Clone, Debug)]
enum Mode {
    Ecb,
    Cbc {
        chain: [u8; BLOCK],
    },
    CbcPad {
        chain: [u8; BLOCK],
    },
    Ctr {
        block: [u8; BLOCK],
        bits: usize,
        offset: usize,
        exhausted: bool,
    },
    /// Everything is held until final (AEAD, RSA).
    Buffered,
}

/// One multi-part encryption or decryption in progress.
pub struct CipherStream {
    dir: Direction,
    mech: Mechanism,
    mode: Mode,
    /// Input not yet processed: a partial block, the held-back CBC-PAD block, or (buffered
    /// modes) all input. Wiped on drop.
    pending: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CipherStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CipherStream")
            .field("dir", &self.dir)
            .field("mech", &self.mech.ck_type())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Adds `n` to the low `bits` of a big-endian counter block (the caller has checked that it
/// does not wrap).
fn ctr_add(block: &mut [u8; BLOCK], bits: usize, n: u128) {
    let mask = if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 };
    let v = u128::from_be_bytes(*block);
    let counter = (v & mask).wrapping_add(n) & mask;
    *block = ((v & !mask) | counter).to_be_bytes();
}

/// How many more blocks the counter can serve after the current one.
fn ctr_room(block: &[u8; BLOCK], bits: usize) -> u128 {
    let mask = if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 };
    mask - (u128::from_be_bytes(*block) & mask)
}

impl CipherStream {
    /// A stream for `mech`. Every encryption mechanism streams; modes without a streaming form
    /// hold their input until [`CipherStream::finish`].
    pub fn new(dir: Direction, mech: &Mechanism) -> CipherStream {
        let mode = match mech {
            Mechanism::AesEcb => Mode::Ecb,
            Mechanism::AesCbc { iv } => Mode::Cbc { chain: *iv },
            Mechanism::AesCbcPad { iv } => Mode::CbcPad { chain: *iv },
            Mechanism::AesCtr { counter_block, counter_bits } => Mode::Ctr {
                block: *counter_block,
                bits: *counter_bits,
                offset: 0,
                exhausted: false,
            },
            _ => Mode::Buffered,
        };
        CipherStream { dir, mech: mech.clone(), mode, pending: Zeroizing::new(Vec::new()) }
    }

    /// A stream that holds all input until [`CipherStream::finish`] runs the mechanism once,
    /// whatever its mode (for keys whose every use needs its own authentication).
    pub fn buffered(dir: Direction, mech: &Mechanism) -> CipherStream {
        CipherStream {
            dir,
            mech: mech.clone(),
            mode: Mode::Buffered,
            pending: Zeroizing::new(Vec::new()),
        }
    }

    /// The exact number of bytes [`CipherStream::update`] returns for `in_len` more input bytes
    /// (so a length query or a short buffer need not run anything).
    pub fn update_len(&self, in_len: usize) -> usize {
        let total = self.pending.len().saturating_add(in_len);
        match self.mode {
            Mode::Ecb | Mode::Cbc { .. } => total / BLOCK * BLOCK,
            Mode::CbcPad { .. } if self.dir == Direction::Encrypt => total / BLOCK * BLOCK,
            // Decrypt keeps back the last complete block: it carries the padding.
            Mode::CbcPad { .. } => total.saturating_sub(1) / BLOCK * BLOCK,
            Mode::Ctr { .. } => in_len,
            Mode::Buffered => 0,
        }
    }

    /// The number of input bytes held so far (buffered modes: the whole input).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The mechanism this stream was made for.
    pub fn mechanism(&self) -> &Mechanism {
        &self.mech
    }

    fn run(&self, key: &dyn PreparedKey, mech: &Mechanism, data: &[u8]) -> Result<StreamOutput> {
        Ok(match self.dir {
            Direction::Encrypt => StreamOutput::Ciphertext(key.encrypt(mech, data)?),
            Direction::Decrypt => StreamOutput::Plaintext(key.decrypt(mech, data)?),
        })
    }

    fn empty(&self) -> StreamOutput {
        match self.dir {
            Direction::Encrypt => StreamOutput::Ciphertext(Vec::new()),
            Direction::Decrypt => StreamOutput::Plaintext(SecretBytes::new(Vec::new())),
        }
    }

    /// Feeds `data`; returns exactly [`CipherStream::update_len`] bytes. On error the stream
    /// must be dropped (PKCS#11 ends the operation).
    pub fn update(&mut self, key: &dyn PreparedKey, data: &[u8]) -> Result<StreamOutput> {
        let n = self.update_len(data.len());
        match self.mode.clone() {
            Mode::Buffered => {
                self.pending.extend_from_slice(data);
                Ok(self.empty())
            }
            Mode::Ctr { mut block, bits, offset, exhausted } => {
                if data.is_empty() {
                    return Ok(self.empty());
                }
                if exhausted {
                    return Err(Error::DataLenRange);
                }
                let mut input = Zeroizing::new(vec![0u8; offset]);
                input.extend_from_slice(data);
                let chunk = Mechanism::AesCtr { counter_block: block, counter_bits: bits };
                let out = self.run(key, &chunk, &input)?;
                let out = match out {
                    StreamOutput::Ciphertext(mut v) => {
                        v.drain(..offset);
                        StreamOutput::Ciphertext(v)
                    }
                    StreamOutput::Plaintext(s) => StreamOutput::Plaintext(SecretBytes::from_slice(
                        &s.expose_secret()[offset..],
                    )),
                };
                let total = input.len();
                let whole = (total / BLOCK) as u128;
                let room = ctr_room(&block, bits);
                let exhausted = whole > room;
                if !exhausted {
                    ctr_add(&mut block, bits, whole);
                }
                self.mode = Mode::Ctr { block, bits, offset: total % BLOCK, exhausted };
                Ok(out)
            }
            Mode::Ecb | Mode::Cbc { .. } | Mode::CbcPad { .. } => {
                self.pending.extend_from_slice(data);
                if n == 0 {
                    return Ok(self.empty());
                }
                let blocks = Zeroizing::new(self.pending[..n].to_vec());
                let chunk = match self.mode {
                    Mode::Ecb => Mechanism::AesEcb,
                    Mode::Cbc { chain } => Mechanism::AesCbc { iv: chain },
                    Mode::CbcPad { chain } => Mechanism::AesCbcPadPart { iv: chain },
                    _ => return Err(Error::Internal("stream mode")),
                };
                let out = self.run(key, &chunk, &blocks)?;
                if out.as_slice().len() != n {
                    return Err(Error::Internal("stream chunk length"));
                }
                // The next chaining value is the last ciphertext block of this chunk.
                let ct = match self.dir {
                    Direction::Encrypt => out.as_slice(),
                    Direction::Decrypt => &blocks[..],
                };
                let mut last = [0u8; BLOCK];
                last.copy_from_slice(&ct[n - BLOCK..]);
                match &mut self.mode {
                    Mode::Cbc { chain } | Mode::CbcPad { chain } => *chain = last,
                    _ => {}
                }
                self.pending.drain(..n);
                Ok(out)
            }
        }
    }

    /// The exact (encrypt) or largest (decrypt) length [`CipherStream::finish`] returns, or
    /// `None` when only running it tells (buffered decryption).
    pub fn finish_len(&self, key: &dyn PreparedKey) -> Option<usize> {
        match (&self.mode, self.dir) {
            (Mode::CbcPad { .. }, Direction::Encrypt) => Some(BLOCK),
            (Mode::Buffered, Direction::Encrypt) => {
                Some(key.encrypt_len(&self.mech, self.pending.len()))
            }
            (Mode::Buffered | Mode::CbcPad { .. }, Direction::Decrypt) => None,
            _ => Some(0),
        }
    }

    /// Ends the stream: the padded last block, the held-back plaintext, or the whole buffered
    /// operation.
    pub fn finish(&mut self, key: &dyn PreparedKey) -> Result<StreamOutput> {
        let pending = std::mem::take(&mut *self.pending);
        let pending = Zeroizing::new(pending);
        match self.mode {
            Mode::Buffered => self.run(key, &self.mech, &pending),
            Mode::Ecb | Mode::Cbc { .. } if !pending.is_empty() => Err(match self.dir {
                Direction::Encrypt => Error::DataLenRange,
                Direction::Decrypt => Error::EncryptedDataLenRange,
            }),
            Mode::CbcPad { chain } => match self.dir {
                Direction::Encrypt => self.run(key, &Mechanism::AesCbcPad { iv: chain }, &pending),
                Direction::Decrypt if pending.len() == BLOCK => {
                    self.run(key, &Mechanism::AesCbcPad { iv: chain }, &pending)
                }
                Direction::Decrypt => Err(Error::EncryptedDataLenRange),
            },
            _ => Ok(self.empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_arithmetic_stays_in_its_bits() {
        let mut b = [0u8; 16];
        b[15] = 0xfe;
        b[0] = 0xaa;
        assert_eq!(ctr_room(&b, 8), 1);
        ctr_add(&mut b, 8, 1);
        assert_eq!((b[0], b[14], b[15]), (0xaa, 0, 0xff));
        assert_eq!(ctr_room(&b, 8), 0);
        let mut full = [0xffu8; 16];
        assert_eq!(ctr_room(&full, 128), 0);
        full[15] = 0xf0;
        ctr_add(&mut full, 128, 15);
        assert_eq!(full, [0xff; 16]);
    }

    #[test]
    fn update_lengths_follow_the_table() {
        let iv = [0u8; 16];
        let mut s = CipherStream::new(Direction::Decrypt, &Mechanism::AesCbcPad { iv });
        assert_eq!(s.update_len(16), 0);
        assert_eq!(s.update_len(17), 16);
        assert_eq!(s.update_len(32), 16);
        s.pending.extend_from_slice(&[0; 5]);
        assert_eq!(s.update_len(11), 0);
        assert_eq!(s.update_len(12), 16);
        let e = CipherStream::new(Direction::Encrypt, &Mechanism::AesCbcPad { iv });
        assert_eq!(e.update_len(32), 32);
        let c = CipherStream::new(
            Direction::Encrypt,
            &Mechanism::AesCtr { counter_block: iv, counter_bits: 32 },
        );
        assert_eq!(c.update_len(5), 5);
        let g = CipherStream::new(
            Direction::Encrypt,
            &Mechanism::AesGcm { iv: vec![0; 12], aad: vec![], tag_bits: 128 },
        );
        assert_eq!(g.update_len(100), 0);
    }
}
