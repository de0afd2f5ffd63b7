//! Backup and restore of a whole store (docs/backup.md).
//!
//! A backup file is a fixed header followed by an encrypted stream:
//!
//! ```text
//!   header (143 bytes, in the clear):
//!     magic "BWBACKUP" | format version u16 | key source u8 (1 passphrase, 2 custodian shares)
//!     | Argon2id m, t, p (u32 each; shares: threshold, share count, 0) | salt [32]
//!     | source store uid [16] | security domain [16] | source generation u64
//!     | object count u64 | created (ms since the epoch) u64
//!     | check: HMAC-SHA256(check key, every byte above)
//!   chunks, each: last-flag u8 | length u32 | AES-256-GCM(stream key, nonce = flag ‖ 0 0 0 ‖
//!     counter u64, aad = SHA-256(header) ‖ flag ‖ counter) of up to 64 KiB of entries
//! ```
//!
//! The backup key is Argon2id(passphrase, salt) with the costs in the header (bounded before
//! they are used), or a random key split M-of-N among custodians (Shamir over GF(256), the
//! vsss-rs sharing the quorum unlock uses); HKDF-SHA256 (salt = the file's salt) derives from it the check key (a wrong
//! passphrase is told apart from a modified body), the stream key and the material key. The
//! chunk counter and the last-chunk flag are in every nonce and AAD, and every chunk's AAD
//! carries the header's hash: a chunk edited, moved, dropped, duplicated or taken from another
//! backup, a truncated file and appended bytes all fail. Inside the stream, entries are:
//!
//! ```text
//!   'O' uid [16] | attrs (u32 len ‖ canonical attribute encoding) | material flag u8
//!       [| u32 len ‖ nonce ‖ AES-256-GCM(material key, aad = "bulwark backup object v1" ‖ salt ‖ uid)]
//!   'U' user id [16] | u32 len ‖ user record (JSON; a TOTP secret re-sealed like material,
//!       aad = "bulwark backup totp v1" ‖ salt ‖ user id)
//!   'G' u32 len ‖ grant key (object uid ‖ user id) | u32 len ‖ grant value
//!   'E' objects u64 | users u64 | grants u64        (the last entry; nothing may follow)
//! ```
//!
//! Key material is never in the clear in the file nor in the stream: it is opened from the
//! store's seal and sealed again under the material key one object at a time. The writer and
//! the reader hold one chunk and one entry at a time (constant memory in the number of keys).
//!
//! **Restore** checks the whole file first (header check, every chunk, every entry, every
//! sealed material, the counts) without writing anything, then reads it again inside one
//! authenticated store write, so a file changed between the two passes also aborts the write.
//! It restores only into a store with no objects (a freshly initialized one), which then
//! adopts the backup's security domain; a store that has objects is refused, with a domain
//! error when its domain differs. Users are matched by name (see [`Token::restore`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::{constant_time, digest, hkdf, hmac};
use zeroize::Zeroizing;

use super::guard::Call;
use super::state::kind;
use super::users::{self, UserRecord};
use super::Token;
use crate::attr::{AttrType, Attributes};
use crate::error::{Error, Result};
use crate::hierarchy::{IntegrityKeys, KdfParams, Vault};
use crate::kernel::{Role, UserId};
use crate::secret::{Key256, SecretBytes};
use crate::store::{ObjectRow, ScanRow, Store};

/// The first bytes of every backup file.
pub const BACKUP_MAGIC: &[u8; 8] = b"BWBACKUP";

/// The format version of whole-store backups.
pub const BACKUP_VERSION: u16 = 1;

/// The format version of selected-key backups: as version 1, and the stream starts with a
/// scope entry naming the keys the file covers.
pub const BACKUP_VERSION_SELECTED: u16 = 2;

/// Argon2id costs of a new backup key: 64 MiB, 3 passes, 1 lane.
pub const BACKUP_KDF: KdfParams = KdfParams { m_cost: 64 * 1024, t_cost: 3, p_cost: 1 };

/// Passphrase lengths accepted (bytes).
pub const PASSPHRASE_MIN: usize = 8;
/// See [`PASSPHRASE_MIN`].
pub const PASSPHRASE_MAX: usize = 1024;

/// The name of the security-domain setting.
pub(crate) const DOMAIN_SETTING: &str = "domain";

const HEADER_LEN: usize = 143;
const CHECKED_LEN: usize = HEADER_LEN - 32;
/// Plaintext bytes per chunk.
const CHUNK: usize = 64 * 1024;
const TAG_LEN: usize = 16;
/// Largest field of one entry (an attribute set, sealed material, a user record).
const MAX_FIELD: usize = 1 << 20;

const OBJECT_AAD: &[u8] = b"bulwark backup object v1";
const TOTP_AAD: &[u8] = b"bulwark backup totp v1";

/// How the backup key of a file is protected (header byte).
const SOURCE_PASSPHRASE: u8 = 1;
const SOURCE_SHARES: u8 = 2;

/// Bad backup files are refused as bad arguments: never as an integrity failure of the store,
/// which would set off the token's tamper response.
fn bad(what: &'static str) -> Error {
    Error::ArgumentsBad(what)
}

const MODIFIED: &str =
    "backup file is modified, truncated or corrupted (authentication failed): nothing restored";

/// What a backup file's header says. Read from the file by [`read_backup_header`] before the
/// passphrase is known: only `check`-verified headers are trusted (restore does that).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    /// Format version.
    pub version: u16,
    /// Argon2id costs of the backup key (passphrase backups).
    pub kdf: KdfParams,
    /// `Some((threshold, shares))` when the backup key is split among custodians.
    pub custodians: Option<(u8, u8)>,
    /// The store the backup was taken from.
    pub source_store: [u8; 16],
    /// The security domain of that store.
    pub domain: [u8; 16],
    /// The source store's generation at the backup.
    pub generation: u64,
    /// Number of objects in the backup.
    pub objects: u64,
    /// When the backup was made (ms since the epoch).
    pub created_ms: u64,
    salt: [u8; 32],
    check: [u8; 32],
}

impl BackupHeader {
    fn encode_checked(&self) -> [u8; CHECKED_LEN] {
        let mut b = [0u8; CHECKED_LEN];
        let mut w = &mut b[..];
        for part in [
            &BACKUP_MAGIC[..],
            &self.version.to_be_bytes(),
            &[if self.custodians.is_some() { SOURCE_SHARES } else { SOURCE_PASSPHRASE }],
            &self.kdf.m_cost.to_be_bytes(),
            &self.kdf.t_cost.to_be_bytes(),
            &self.kdf.p_cost.to_be_bytes(),
            &self.salt,
            &self.source_store,
            &self.domain,
            &self.generation.to_be_bytes(),
            &self.objects.to_be_bytes(),
            &self.created_ms.to_be_bytes(),
        ] {
            let (head, rest) = w.split_at_mut(part.len());
            head.copy_from_slice(part);
            w = rest;
        }
        b
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..CHECKED_LEN].copy_from_slice(&self.encode_checked());
        b[CHECKED_LEN..].copy_from_slice(&self.check);
        b
    }

    fn decode(b: &[u8; HEADER_LEN]) -> Result<Self> {
        if &b[..8] != BACKUP_MAGIC {
            return Err(bad("not a Bulwark backup file"));
        }
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let arr16 = |i: usize| -> [u8; 16] { b[i..i + 16].try_into().unwrap_or_default() };
        let version = u16_at(8);
        if version != BACKUP_VERSION && version != BACKUP_VERSION_SELECTED {
            return Err(bad("unsupported backup format version"));
        }
        let kdf = KdfParams { m_cost: u32_at(11), t_cost: u32_at(15), p_cost: u32_at(19) };
        let custodians = match b[10] {
            SOURCE_PASSPHRASE => None,
            SOURCE_SHARES => {
                let m = u8::try_from(kdf.m_cost).map_err(|_| bad(MODIFIED))?;
                let n = u8::try_from(kdf.t_cost).map_err(|_| bad(MODIFIED))?;
                if m < 2 || m > n || kdf.p_cost != 0 {
                    return Err(bad(MODIFIED));
                }
                Some((m, n))
            }
            _ => return Err(bad(MODIFIED)),
        };
        Ok(Self {
            version,
            kdf,
            custodians,
            salt: b[23..55].try_into().unwrap_or_default(),
            source_store: arr16(55),
            domain: arr16(71),
            generation: u64_at(87),
            objects: u64_at(95),
            created_ms: u64_at(103),
            check: b[CHECKED_LEN..].try_into().unwrap_or_default(),
        })
    }
}

/// Reads a backup file's header (unauthenticated: for showing what a file claims, and sizing
/// a progress bar, before the passphrase is asked for).
pub fn read_backup_header(path: &Path) -> Result<BackupHeader> {
    let mut f = File::open(path).map_err(|e| io_error("cannot open the backup file", &e))?;
    let mut b = [0u8; HEADER_LEN];
    f.read_exact(&mut b).map_err(|_| bad("not a Bulwark backup file (too short)"))?;
    BackupHeader::decode(&b)
}

fn io_error(what: &str, e: &std::io::Error) -> Error {
    Error::Store(format!("{what}: {e}"))
}

/// What a backup wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// Objects written.
    pub objects: u64,
    /// Users written.
    pub users: u64,
    /// Grants written.
    pub grants: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// The source store.
    pub source_store: [u8; 16],
    /// Its security domain.
    pub domain: [u8; 16],
    /// The labels of the keys a selected-key backup covers (empty: the whole store).
    pub keys: Vec<String>,
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Objects restored.
    pub objects: u64,
    /// Users restored.
    pub users: u64,
    /// Grants restored.
    pub grants: u64,
    /// The store the backup was taken from.
    pub source_store: [u8; 16],
    /// The security domain the target now belongs to.
    pub domain: [u8; 16],
    /// The labels of the keys a selected-key backup covers (empty: the whole store).
    pub keys: Vec<String>,
    /// The store's contents were replaced and its anti-rollback baseline reset to this
    /// generation ([`RestoreOptions::rebase`]).
    pub rebased: Option<u64>,
}

/// How a restore may change a store that already holds objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// A whole-store backup into a store of the same security domain that is not empty:
    /// replace its objects and grants with the backup's (users are merged by name), and reset
    /// the host's anti-rollback mark to the resulting generation. Taking a store back to an
    /// older state is what anti-rollback exists to refuse, so this is an explicit, audited
    /// decision: the embedded security officer's, or the daemon's with quorum approvals.
    pub rebase: bool,
}

/// Progress reports: (entries done, entries expected). Restore reports both passes (verify,
/// then write), so `expected` is twice the object count there.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// The keys of one backup file.
struct BackupKeys {
    check: hmac::Key,
    stream: LessSafeKey,
    material: LessSafeKey,
    salt: [u8; 32],
}

impl std::fmt::Debug for BackupKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKeys([REDACTED])")
    }
}

fn derive_keys(passphrase: &SecretBytes, kdf: KdfParams, salt: [u8; 32]) -> Result<BackupKeys> {
    keys_from_root(&passphrase_root(passphrase, kdf, &salt)?, salt)
}

fn passphrase_root(
    passphrase: &SecretBytes,
    kdf: KdfParams,
    salt: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>> {
    if !(PASSPHRASE_MIN..=PASSPHRASE_MAX).contains(&passphrase.len()) {
        return Err(bad("backup passphrases are 8 to 1024 bytes"));
    }
    let kdf = kdf.check_bounds().map_err(|_| bad("backup KDF parameters out of bounds"))?;
    let params = argon2::Params::new(kdf.m_cost, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|_| bad("backup KDF parameters invalid"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut root = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase.expose_secret(), salt, &mut root[..])
        .map_err(|_| bad("backup KDF failed"))?;
    Ok(root)
}

fn keys_from_root(root: &Zeroizing<[u8; 32]>, salt: [u8; 32]) -> Result<BackupKeys> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&root[..]);
    let sub = |info: &[u8]| -> Result<Key256> {
        let info = [info];
        let okm = prk.expand(&info, hkdf::HKDF_SHA256).map_err(|_| Error::Internal("hkdf"))?;
        let mut out = Zeroizing::new([0u8; 32]);
        okm.fill(&mut out[..]).map_err(|_| Error::Internal("hkdf"))?;
        Ok(Key256::new(*out))
    };
    let aead = |k: &Key256| -> Result<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, k.expose_secret())
            .map(LessSafeKey::new)
            .map_err(|_| Error::Internal("aead key"))
    };
    let check = sub(b"bulwark backup check v1")?;
    Ok(BackupKeys {
        check: hmac::Key::new(hmac::HMAC_SHA256, check.expose_secret()),
        stream: aead(&sub(b"bulwark backup stream v1")?)?,
        material: aead(&sub(b"bulwark backup material v1")?)?,
        salt,
    })
}

impl BackupKeys {
    fn bound_aad(&self, label: &[u8], id: &[u8; 16]) -> Vec<u8> {
        let mut v = Vec::with_capacity(label.len() + 48);
        v.extend_from_slice(label);
        v.extend_from_slice(&self.salt);
        v.extend_from_slice(id);
        v
    }

    /// nonce ‖ AES-256-GCM(material key, aad) of `secret`.
    fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], secret: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Zeroizing::new(secret.to_vec());
        self.material
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *buf,
            )
            .map_err(|_| Error::CryptoFailed)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(bad(MODIFIED));
        }
        let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().map_err(|_| bad(MODIFIED))?;
        let mut buf = SecretBytes::from_slice(&sealed[NONCE_LEN..]);
        let n = self
            .material
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                buf.expose_secret_mut(),
            )
            .map_err(|_| bad(MODIFIED))?
            .len();
        Ok(SecretBytes::from_slice(&buf.expose_secret()[..n]))
    }
}

fn chunk_nonce_aad(header_hash: &[u8; 32], last: bool, counter: u64) -> ([u8; NONCE_LEN], Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[0] = u8::from(last);
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    let mut aad = Vec::with_capacity(41);
    aad.extend_from_slice(header_hash);
    aad.push(u8::from(last));
    aad.extend_from_slice(&counter.to_be_bytes());
    (nonce, aad)
}

/// Encrypts the entry stream chunk by chunk.
struct ChunkWriter<'k, W: Write> {
    w: W,
    keys: &'k BackupKeys,
    header_hash: [u8; 32],
    counter: u64,
    buf: Zeroizing<Vec<u8>>,
    written: u64,
}

impl<W: Write> ChunkWriter<'_, W> {
    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() > CHUNK {
            let rest = Zeroizing::new(self.buf[CHUNK..].to_vec());
            self.buf.truncate(CHUNK);
            self.emit(false)?;
            self.buf.extend_from_slice(&rest);
        }
        Ok(())
    }

    fn emit(&mut self, last: bool) -> Result<()> {
        let (nonce, aad) = chunk_nonce_aad(&self.header_hash, last, self.counter);
        self.keys
            .stream
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut *self.buf,
            )
            .map_err(|_| Error::CryptoFailed)?;
        let len = u32::try_from(self.buf.len()).map_err(|_| Error::Internal("chunk size"))?;
        let io = |e: std::io::Error| io_error("cannot write the backup file", &e);
        self.w.write_all(&[u8::from(last)]).map_err(io)?;
        self.w.write_all(&len.to_be_bytes()).map_err(io)?;
        self.w.write_all(&self.buf).map_err(io)?;
        self.written += 5 + u64::from(len);
        self.counter += 1;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<(W, u64)> {
        self.emit(true)?;
        Ok((self.w, self.written))
    }
}

/// Decrypts and checks the entry stream chunk by chunk.
struct ChunkReader<'k, R: Read> {
    r: R,
    keys: &'k BackupKeys,
    header_hash: [u8; 32],
    counter: u64,
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
    last_seen: bool,
}

impl<R: Read> ChunkReader<'_, R> {
    fn next_chunk(&mut self) -> Result<()> {
        if self.last_seen {
            return Err(bad(MODIFIED));
        }
        let mut head = [0u8; 5];
        self.r.read_exact(&mut head).map_err(|_| bad(MODIFIED))?;
        let last = match head[0] {
            0 => false,
            1 => true,
            _ => return Err(bad(MODIFIED)),
        };
        let len = u32::from_be_bytes(head[1..].try_into().unwrap_or_default()) as usize;
        if !(TAG_LEN..=CHUNK + TAG_LEN).contains(&len) {
            return Err(bad(MODIFIED));
        }
        self.buf.clear();
        self.buf.resize(len, 0);
        self.r.read_exact(&mut self.buf).map_err(|_| bad(MODIFIED))?;
        let (nonce, aad) = chunk_nonce_aad(&self.header_hash, last, self.counter);
        let n = self
            .keys
            .stream
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut self.buf)
            .map_err(|_| bad(MODIFIED))?
            .len();
        self.buf.truncate(n);
        self.pos = 0;
        self.counter += 1;
        self.last_seen = last;
        Ok(())
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < out.len() {
            if self.pos == self.buf.len() {
                self.next_chunk()?;
                continue;
            }
            let n = (out.len() - filled).min(self.buf.len() - self.pos);
            out[filled..filled + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            filled += n;
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn id(&mut self) -> Result<[u8; 16]> {
        let mut b = [0u8; 16];
        self.read_exact(&mut b)?;
        Ok(b)
    }

    fn field(&mut self) -> Result<Zeroizing<Vec<u8>>> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        let len = u32::from_be_bytes(b) as usize;
        if len > MAX_FIELD {
            return Err(bad(MODIFIED));
        }
        let mut v = Zeroizing::new(vec![0u8; len]);
        self.read_exact(&mut v)?;
        Ok(v)
    }

    /// After the end entry: the stream must end with that chunk, and the file with it.
    fn finish(mut self) -> Result<()> {
        if self.pos != self.buf.len() || !self.last_seen {
            return Err(bad(MODIFIED));
        }
        let mut extra = [0u8; 1];
        match self.r.read(&mut extra) {
            Ok(0) => Ok(()),
            _ => Err(bad(MODIFIED)),
        }
    }
}

fn put_field(out: &mut Vec<u8>, v: &[u8]) -> Result<()> {
    let len = u32::try_from(v.len()).map_err(|_| Error::Internal("field too large"))?;
    if v.len() > MAX_FIELD {
        return Err(Error::Internal("field too large for a backup entry"));
    }
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(v);
    Ok(())
}

/// One entry read back from a backup stream, already opened with the backup keys.
enum Entry {
    /// The keys a selected-key backup covers (first entry of a version 2 stream only).
    Scope {
        labels: Vec<String>,
    },
    Object {
        uid: [u8; 16],
        attrs: Attributes,
        material: Option<SecretBytes>,
    },
    User {
        id: UserId,
        record: UserRecord,
        totp: Option<SecretBytes>,
    },
    Grant {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    End {
        objects: u64,
        users: u64,
        grants: u64,
    },
}

fn read_entry<R: Read>(r: &mut ChunkReader<'_, R>) -> Result<Entry> {
    match r.u8()? {
        b'O' => {
            let uid = r.id()?;
            let attrs = Attributes::decode(&r.field()?).map_err(|_| bad(MODIFIED))?;
            let material = match r.u8()? {
                0 => None,
                1 => {
                    let sealed = r.field()?;
                    Some(r.keys.open(&r.keys.bound_aad(OBJECT_AAD, &uid), &sealed)?)
                }
                _ => return Err(bad(MODIFIED)),
            };
            Ok(Entry::Object { uid, attrs, material })
        }
        b'U' => {
            let id = UserId(r.id()?);
            let mut record: UserRecord =
                serde_json::from_slice(&r.field()?).map_err(|_| bad(MODIFIED))?;
            let totp = match record.totp.take() {
                Some(h) => {
                    let sealed = hex::decode(h).map_err(|_| bad(MODIFIED))?;
                    Some(r.keys.open(&r.keys.bound_aad(TOTP_AAD, &id.0), &sealed)?)
                }
                None => None,
            };
            Ok(Entry::User { id, record, totp })
        }
        b'G' => {
            let key = r.field()?.to_vec();
            let value = r.field()?.to_vec();
            if key.len() != 32 {
                return Err(bad(MODIFIED));
            }
            Ok(Entry::Grant { key, value })
        }
        b'E' => Ok(Entry::End { objects: r.u64()?, users: r.u64()?, grants: r.u64()? }),
        b'S' => {
            let labels: Vec<String> =
                serde_json::from_slice(&r.field()?).map_err(|_| bad(MODIFIED))?;
            Ok(Entry::Scope { labels })
        }
        _ => Err(bad(MODIFIED)),
    }
}

/// Reads a whole stream, calling `f` for every entry but the end one; checks the end entry
/// against what was read and the header, and that nothing follows it.
fn read_stream<R: Read>(
    reader: &mut ChunkReader<'_, R>,
    header: &BackupHeader,
    each: &mut dyn FnMut(Entry) -> Result<()>,
) -> Result<(u64, u64, u64)> {
    let mut seen = (0u64, 0u64, 0u64);
    let mut first = true;
    let scoped = header.version == BACKUP_VERSION_SELECTED;
    loop {
        let entry = read_entry(reader)?;
        // A selected-key stream starts with its scope, and only it has one.
        if matches!(entry, Entry::Scope { .. }) != (first && scoped) {
            return Err(bad(MODIFIED));
        }
        first = false;
        match &entry {
            Entry::Scope { .. } => {}
            Entry::End { objects, users, grants } => {
                let end = (*objects, *users, *grants);
                if end != seen || end.0 != header.objects {
                    return Err(bad(MODIFIED));
                }
                return Ok(end);
            }
            Entry::Object { .. } => seen.0 += 1,
            Entry::User { .. } => seen.1 += 1,
            Entry::Grant { .. } => seen.2 += 1,
        }
        if seen.0 > header.objects {
            return Err(bad(MODIFIED));
        }
        each(entry)?;
    }
}

/// An open backup file whose header authenticated under the passphrase.
struct Opened {
    header: BackupHeader,
    keys: BackupKeys,
    header_hash: [u8; 32],
}

/// What protects a new backup's key.
#[derive(Clone, Copy)]
enum KeySource<'a> {
    Passphrase(&'a SecretBytes, KdfParams),
    /// Threshold, share count.
    Shares(u8, u8),
}

/// What opens a backup: its passphrase or enough custodian shares.
#[derive(Clone, Copy, Debug)]
pub enum Unlock<'a> {
    /// The backup passphrase.
    Passphrase(&'a SecretBytes),
    /// At least the threshold of the backup's custodian shares.
    Shares(&'a [CustodianShare]),
}

fn open_backup(path: &Path, unlock: Unlock<'_>) -> Result<Opened> {
    let header = read_backup_header(path)?;
    let (root, wrong) = match (unlock, header.custodians) {
        (Unlock::Passphrase(p), None) => (
            passphrase_root(p, header.kdf, &header.salt)?,
            "wrong backup passphrase (or the backup header was modified): nothing restored",
        ),
        (Unlock::Shares(shares), Some((threshold, _))) => (
            combine_shares(shares, threshold, &header.salt)?,
            "the shares do not open this backup (or its header was modified): nothing restored",
        ),
        (Unlock::Passphrase(_), Some(_)) => {
            return Err(bad(
                "this backup's key is split among custodians: present their share files",
            ))
        }
        (Unlock::Shares(_), None) => {
            return Err(bad("this backup is protected by a passphrase, not by custodian shares"))
        }
    };
    let keys = keys_from_root(&root, header.salt)?;
    let tag = hmac::sign(&keys.check, &header.encode_checked());
    if constant_time::verify_slices_are_equal(tag.as_ref(), &header.check).is_err() {
        return Err(bad(wrong));
    }
    let header_hash = sha256(&header.encode());
    Ok(Opened { header, keys, header_hash })
}

const SHARE_FORMAT: &str = "bulwark-backup-share-v1";

/// One custodian's share of a backup key: the Shamir index and 32 bytes, bound to one backup
/// file by its salt. Zeroized on drop; `Debug` shows only the index.
pub struct CustodianShare {
    backup: [u8; 32],
    threshold: u8,
    total: u8,
    /// Index byte then the share value.
    raw: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CustodianShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustodianShare(index {} of {}, [REDACTED])", self.index(), self.total)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareJson {
    format: String,
    /// Hex salt of the backup file the share opens.
    backup: String,
    threshold: u8,
    total: u8,
    /// Hex index byte and share value.
    share: String,
}

impl CustodianShare {
    /// The share's index (1..=total).
    pub fn index(&self) -> u8 {
        self.raw.first().copied().unwrap_or(0)
    }

    /// The share file's text (JSON). It holds the share in the clear: write it 0600 and hand
    /// it to its custodian.
    pub fn to_json(&self) -> Zeroizing<String> {
        let mut j = ShareJson {
            format: SHARE_FORMAT.into(),
            backup: hex::encode(self.backup),
            threshold: self.threshold,
            total: self.total,
            share: hex::encode(&self.raw[..]),
        };
        let text = Zeroizing::new(serde_json::to_string_pretty(&j).unwrap_or_default());
        zeroize::Zeroize::zeroize(&mut j.share);
        text
    }

    /// Parses a share file.
    pub fn parse(text: &[u8]) -> Result<Self> {
        let malformed = || bad("not a Bulwark backup share file");
        let j: ShareJson = serde_json::from_slice(text).map_err(|_| malformed())?;
        let mut share = Zeroizing::new(j.share);
        let raw = Zeroizing::new(hex::decode(&share[..]).map_err(|_| malformed())?);
        zeroize::Zeroize::zeroize(&mut *share);
        let backup: [u8; 32] =
            hex::decode(&j.backup).ok().and_then(|b| b.try_into().ok()).ok_or_else(malformed)?;
        if j.format != SHARE_FORMAT || raw.len() != 33 || raw[0] == 0 || raw[0] > j.total {
            return Err(malformed());
        }
        Ok(Self { backup, threshold: j.threshold, total: j.total, raw })
    }
}

fn split_key(
    key: &Zeroizing<[u8; 32]>,
    threshold: u8,
    total: u8,
    salt: [u8; 32],
) -> Result<Vec<CustodianShare>> {
    if threshold < 2 || threshold > total {
        return Err(bad("custodian shares need 2 <= threshold <= shares <= 255"));
    }
    let p = crate::crypto::Provider::get()?;
    let mut rng = crate::seal::ProviderRng::new(p);
    let mut raw =
        vsss_rs::Gf256::split_bytes(usize::from(threshold), usize::from(total), &key[..], &mut rng)
            .map_err(|_| Error::Internal("secret sharing failed"))?;
    let shares = raw
        .iter()
        .map(|r| CustodianShare { backup: salt, threshold, total, raw: Zeroizing::new(r.clone()) })
        .collect();
    for r in &mut raw {
        zeroize::Zeroize::zeroize(r);
    }
    if rng.failed() {
        return Err(Error::Internal("random source failed during secret sharing"));
    }
    Ok(shares)
}

fn combine_shares(
    shares: &[CustodianShare],
    threshold: u8,
    salt: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>> {
    let mut seen = Vec::new();
    let mut raw: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    for s in shares {
        if &s.backup != salt {
            return Err(bad("a share belongs to another backup"));
        }
        if seen.contains(&s.index()) {
            return Err(bad("the same share was presented twice"));
        }
        seen.push(s.index());
        raw.push(Zeroizing::new(s.raw.to_vec()));
    }
    if raw.len() < usize::from(threshold) {
        return Err(bad("not enough custodian shares for this backup"));
    }
    let plain: Vec<Vec<u8>> = raw.iter().map(|r| r.to_vec()).collect();
    let combined = vsss_rs::Gf256::combine_bytes(&plain[..]);
    for mut p in plain {
        zeroize::Zeroize::zeroize(&mut p);
    }
    let combined = Zeroizing::new(combined.map_err(|_| bad("the shares do not open this backup"))?);
    let key: [u8; 32] =
        combined[..].try_into().map_err(|_| bad("the shares do not open this backup"))?;
    Ok(Zeroizing::new(key))
}

fn sha256(b: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, b).as_ref().try_into().unwrap_or_default()
}

impl Opened {
    fn reader(&self, path: &Path) -> Result<ChunkReader<'_, BufReader<File>>> {
        let mut f = File::open(path).map_err(|e| io_error("cannot open the backup file", &e))?;
        let mut skip = [0u8; HEADER_LEN];
        f.read_exact(&mut skip).map_err(|_| bad(MODIFIED))?;
        // The file is read twice: it must still carry the header that was checked.
        if skip != self.header.encode() {
            return Err(bad(MODIFIED));
        }
        Ok(ChunkReader {
            r: BufReader::with_capacity(CHUNK + 64, f),
            keys: &self.keys,
            header_hash: self.header_hash,
            counter: 0,
            buf: Zeroizing::new(Vec::with_capacity(CHUNK + TAG_LEN)),
            pos: 0,
            last_seen: false,
        })
    }
}

/// A temporary file beside `out`, removed when dropped (after it is linked into place, or on failure).
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn sync_dir(p: &Path) {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn hex16(v: &[u8; 16]) -> String {
    hex::encode(v)
}

/// What a selected-key backup covers.
#[derive(Default)]
struct Selection {
    labels: Vec<String>,
    uids: std::collections::HashSet<[u8; 16]>,
    /// Users named by the selected keys' grants.
    users: std::collections::HashSet<[u8; 16]>,
}

/// The audit detail's note of a selected-key file's labels.
fn scope_note(keys: &[String]) -> String {
    if keys.is_empty() {
        String::new()
    } else {
        let shown: Vec<String> = keys.iter().map(|k| crate::display::escape(k)).collect();
        format!(" keys [{}]", shown.join(","))
    }
}

impl<S: Store> Token<S> {
    /// The security domain of this store (a random id set at init; stores made before
    /// domains existed get one at their first backup).
    pub fn security_domain(&self) -> Result<Option<[u8; 16]>> {
        Ok(self.setting(DOMAIN_SETTING)?.and_then(|v| v.try_into().ok()))
    }

    /// The embedded SO (PIN login) or, on a store a front door holds unsealed, a principal
    /// whose current role is security officer.
    fn require_security_officer(&self) -> Result<()> {
        self.require_vault()?;
        if self.who().role == Some(Role::SecurityOfficer) {
            Ok(())
        } else if self.logged_in().is_some() || crate::kernel::current_who().is_some() {
            Err(Error::ActionProhibited("only the security officer backs up and restores"))
        } else {
            Err(Error::UserNotLoggedIn)
        }
    }

    fn domain_or_create(&self, ik: &IntegrityKeys) -> Result<[u8; 16]> {
        if let Some(v) = self.verified_setting(ik, DOMAIN_SETTING)? {
            return v.try_into().map_err(|_| Error::Integrity("security domain malformed"));
        }
        let mut d = [0u8; 16];
        self.provider.random(&mut d)?;
        self.write(ik, |a| a.put_record(kind::SETTING, DOMAIN_SETTING.as_bytes(), &d))?;
        Ok(d)
    }

    /// Writes an encrypted, authenticated backup of the whole store (every object with its
    /// attributes and material, every user and grant) to `out` (mode 0600, written to a
    /// temporary file beside it and linked into place, never over an existing file). Security officer only (the embedded
    /// SO, or a front-door principal with that role); audited as `backup`.
    /// `kdf`: the Argon2id costs of the backup key ([`BACKUP_KDF`] unless testing).
    pub fn backup(
        &self,
        out: &Path,
        passphrase: &SecretBytes,
        kdf: KdfParams,
        progress: Progress<'_>,
    ) -> Result<BackupSummary> {
        self.backup_call(out, KeySource::Passphrase(passphrase, kdf), None, progress)
            .map(|(s, _)| s)
    }

    /// [`Token::backup`] under a random backup key split `threshold`-of-`total` among
    /// custodians (Shamir over GF(256)); returns the shares, each to be written to its
    /// custodian's file ([`CustodianShare::to_json`]) and then dropped. No passphrase exists:
    /// only `threshold` shares together open the file.
    pub fn backup_with_shares(
        &self,
        out: &Path,
        threshold: u8,
        total: u8,
        progress: Progress<'_>,
    ) -> Result<(BackupSummary, Vec<CustodianShare>)> {
        self.backup_call(out, KeySource::Shares(threshold, total), None, progress)
    }

    /// [`Token::backup`] of selected keys only: every object labelled with one of `labels`
    /// (both halves of a pair, every version), with their attributes, states and material,
    /// their grants and the users those grants name. The file (format version 2) names the
    /// labels it covers; restoring it into a store of the same security domain adds those
    /// keys ([`Token::restore_with`]). Keys whose destruction is scheduled, and archived keys
    /// (their material is elsewhere), are not included.
    ///
    /// # Errors
    /// `NotFound` for a label with no key to back up; otherwise as [`Token::backup`].
    pub fn backup_selected(
        &self,
        out: &Path,
        labels: &[String],
        passphrase: &SecretBytes,
        kdf: KdfParams,
        progress: Progress<'_>,
    ) -> Result<BackupSummary> {
        self.backup_call(out, KeySource::Passphrase(passphrase, kdf), Some(labels), progress)
            .map(|(s, _)| s)
    }

    /// [`Token::backup_selected`] under a key split among custodians.
    pub fn backup_selected_with_shares(
        &self,
        out: &Path,
        labels: &[String],
        threshold: u8,
        total: u8,
        progress: Progress<'_>,
    ) -> Result<(BackupSummary, Vec<CustodianShare>)> {
        self.backup_call(out, KeySource::Shares(threshold, total), Some(labels), progress)
    }

    /// The objects (by uid) a selected-key backup of `labels` covers, and the users their
    /// grants name.
    fn selection(&self, ik: &IntegrityKeys, labels: &[String]) -> Result<Selection> {
        if labels.is_empty() {
            return Err(bad("no key selected"));
        }
        let mut sel = Selection::default();
        for l in labels {
            let mut found = false;
            for row in self.store.find(None, Some(l.as_bytes()), None)? {
                ik.verify_record(&row)?;
                let attrs = Attributes::decode(&row.attrs)?;
                if crate::destruction::Schedule::is_scheduled(&attrs)
                    || attrs.contains(AttrType::BulwarkArchived)
                {
                    continue;
                }
                for g in self.store.records(users::kind::GRANT, &row.uid)? {
                    ik.verify_row(&g)?;
                    if let Some(u) = g.key.get(16..32).and_then(|u| <[u8; 16]>::try_from(u).ok()) {
                        sel.users.insert(u);
                    }
                }
                sel.uids.insert(row.uid);
                found = true;
            }
            if !found {
                return Err(Error::NotFound(l.clone()));
            }
        }
        sel.labels = labels.to_vec();
        Ok(sel)
    }

    fn backup_call(
        &self,
        out: &Path,
        source: KeySource<'_>,
        scope: Option<&[String]>,
        progress: Progress<'_>,
    ) -> Result<(BackupSummary, Vec<CustodianShare>)> {
        let c = Call::new("backup");
        let key = match source {
            KeySource::Passphrase(..) => "passphrase".to_owned(),
            KeySource::Shares(m, n) => format!("custodian shares {m}-of-{n}"),
        };
        let r = self.precheck(&c).and_then(|()| {
            self.require_security_officer()?;
            self.backup_unaudited(out, source, scope, progress)
        });
        let detail = match &r {
            Ok((s, _)) => format!(
                "source {} domain {} objects {} users {} grants {} key {key}{}",
                hex16(&s.source_store),
                hex16(&s.domain),
                s.objects,
                s.users,
                s.grants,
                scope_note(&s.keys)
            ),
            Err(_) => String::new(),
        };
        self.finish(&c, r, detail)
    }

    fn backup_unaudited(
        &self,
        out: &Path,
        source: KeySource<'_>,
        scope: Option<&[String]>,
        progress: Progress<'_>,
    ) -> Result<(BackupSummary, Vec<CustodianShare>)> {
        let (vault, ik) = self.require_vault()?;
        if out.exists() {
            return Err(bad("the backup file already exists; choose another name"));
        }
        let sel = scope.map(|l| self.selection(&ik, l)).transpose()?;
        let domain = self.domain_or_create(&ik)?;
        let before = self.store.header()?;
        let state = ik.open_state(&before.state)?;
        let mut salt = [0u8; 32];
        self.provider.random(&mut salt)?;
        let (keys, kdf, custodians, shares) = match source {
            KeySource::Passphrase(p, kdf) => (derive_keys(p, kdf, salt)?, kdf, None, Vec::new()),
            KeySource::Shares(m, n) => {
                let mut root = Zeroizing::new([0u8; 32]);
                self.provider.random(&mut root[..])?;
                let shares = split_key(&root, m, n, salt)?;
                let kdf = KdfParams { m_cost: m.into(), t_cost: n.into(), p_cost: 0 };
                (keys_from_root(&root, salt)?, kdf, Some((m, n)), shares)
            }
        };
        let mut header = BackupHeader {
            version: if sel.is_some() { BACKUP_VERSION_SELECTED } else { BACKUP_VERSION },
            kdf,
            custodians,
            source_store: self.store_uid,
            domain,
            generation: state.generation,
            objects: sel.as_ref().map_or(state.objects, |s| s.uids.len() as u64),
            created_ms: crate::audit::now_ms(),
            salt,
            check: [0; 32],
        };
        let tag = hmac::sign(&keys.check, &header.encode_checked());
        header.check.copy_from_slice(tag.as_ref());
        let header_bytes = header.encode();

        let mut suffix = [0u8; 8];
        self.provider.random(&mut suffix)?;
        let mut tmp_name = out.file_name().ok_or(bad("the backup path names no file"))?.to_owned();
        tmp_name.push(format!(".tmp-{}", hex::encode(suffix)));
        let tmp_path = out.with_file_name(tmp_name);
        let file = crate::fsutil::create_private(&tmp_path)
            .map_err(|e| io_error("cannot create the backup file", &e))?;
        let tmp = TempFile(Some(tmp_path.clone()));
        let mut w = BufWriter::with_capacity(CHUNK + 64, file);
        w.write_all(&header_bytes).map_err(|e| io_error("cannot write the backup file", &e))?;
        let mut cw = ChunkWriter {
            w,
            keys: &keys,
            header_hash: sha256(&header_bytes),
            counter: 0,
            buf: Zeroizing::new(Vec::with_capacity(CHUNK + TAG_LEN)),
            written: HEADER_LEN as u64,
        };
        if let Some(s) = &sel {
            let json = serde_json::to_vec(&s.labels).map_err(|_| Error::Internal("scope"))?;
            let mut entry = vec![b'S'];
            put_field(&mut entry, &json)?;
            cw.push(&entry)?;
        }
        let counts =
            self.write_entries(&vault, &ik, &keys, &before, sel.as_ref(), &mut cw, progress)?;
        let mut end = vec![b'E'];
        end.extend_from_slice(&counts.0.to_be_bytes());
        end.extend_from_slice(&counts.1.to_be_bytes());
        end.extend_from_slice(&counts.2.to_be_bytes());
        cw.push(&end)?;
        let (w, bytes) = cw.finish()?;
        let file =
            w.into_inner().map_err(|e| io_error("cannot write the backup file", e.error()))?;
        file.sync_all().map_err(|e| io_error("cannot write the backup file", &e))?;
        drop(file);
        // A hard link never replaces a file that appeared meanwhile (rename would); the
        // temporary name is then removed by `tmp`.
        std::fs::hard_link(&tmp_path, out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                bad("the backup file already exists; choose another name")
            } else {
                io_error("cannot move the backup file into place", &e)
            }
        })?;
        drop(tmp);
        sync_dir(out);
        let summary = BackupSummary {
            objects: counts.0,
            users: counts.1,
            grants: counts.2,
            bytes,
            source_store: self.store_uid,
            domain,
            keys: sel.map(|s| s.labels).unwrap_or_default(),
        };
        Ok((summary, shares))
    }

    /// Streams every object, user and grant of one store snapshot (or those `sel` covers)
    /// into `cw`, checking each row's MAC and, at the end, the snapshot against the sealed
    /// state read before.
    #[allow(clippy::too_many_arguments, clippy::too_many_lines)] // one pass, one snapshot
    fn write_entries<W: Write>(
        &self,
        vault: &Vault,
        ik: &IntegrityKeys,
        keys: &BackupKeys,
        before: &crate::store::StoreHeader,
        sel: Option<&Selection>,
        cw: &mut ChunkWriter<'_, W>,
        progress: Progress<'_>,
    ) -> Result<(u64, u64, u64)> {
        let (mut objects, mut users, mut grants) = (0u64, 0u64, 0u64);
        // Every object of the snapshot, selected or not: the set check below needs them all.
        let mut scanned = 0u64;
        let total = sel.map_or(ik.open_state(&before.state)?.objects, |s| s.uids.len() as u64);
        let mut acc = [0u8; 32];
        let mut entry = Zeroizing::new(Vec::with_capacity(4096));
        let snap = self.store.scan(&mut |row| {
            for (a, b) in acc.iter_mut().zip(super::state::member_of(ik, &row)) {
                *a ^= b;
            }
            entry.clear();
            match row {
                ScanRow::Keyslot(k) => {
                    ik.verify_keyslot(k)?;
                    return Ok(());
                }
                ScanRow::Object(o) => {
                    ik.verify_record(o)?;
                    scanned += 1;
                    if sel.is_some_and(|s| !s.uids.contains(&o.uid)) {
                        return Ok(());
                    }
                    entry.push(b'O');
                    entry.extend_from_slice(&o.uid);
                    put_field(&mut entry, &o.attrs)?;
                    match &o.secret {
                        Some(s) => {
                            let m = vault.open_secret(&o.uid, s)?;
                            let mut nonce = [0u8; NONCE_LEN];
                            self.provider.random(&mut nonce)?;
                            let sealed = keys.seal(
                                nonce,
                                &keys.bound_aad(OBJECT_AAD, &o.uid),
                                m.expose_secret(),
                            )?;
                            entry.push(1);
                            put_field(&mut entry, &sealed)?;
                        }
                        None => entry.push(0),
                    }
                    objects += 1;
                    progress(objects, total);
                }
                ScanRow::Record(r) => {
                    ik.verify_row(r)?;
                    if r.kind == users::kind::USER {
                        let id: [u8; 16] = r
                            .key
                            .as_slice()
                            .try_into()
                            .map_err(|_| Error::Integrity("user record key malformed"))?;
                        if sel.is_some_and(|s| !s.users.contains(&id)) {
                            return Ok(());
                        }
                        let mut u: UserRecord = serde_json::from_slice(&r.value)
                            .map_err(|_| Error::Integrity("user record malformed"))?;
                        if let Some(h) = u.totp.take() {
                            let sealed = hex::decode(h)
                                .map_err(|_| Error::Integrity("user record malformed"))?;
                            let s = vault.open_value(&users::totp_name(UserId(id)), &sealed)?;
                            let mut nonce = [0u8; NONCE_LEN];
                            self.provider.random(&mut nonce)?;
                            let aad = keys.bound_aad(TOTP_AAD, &id);
                            u.totp =
                                Some(hex::encode(keys.seal(nonce, &aad, s.expose_secret())?));
                        }
                        let json = Zeroizing::new(
                            serde_json::to_vec(&u)
                                .map_err(|_| Error::Internal("user record encoding"))?,
                        );
                        entry.push(b'U');
                        entry.extend_from_slice(&id);
                        put_field(&mut entry, &json)?;
                        users += 1;
                    } else if r.kind == users::kind::GRANT {
                        let of = r.key.get(..16).and_then(|u| <[u8; 16]>::try_from(u).ok());
                        if sel.is_some_and(|s| !of.is_some_and(|u| s.uids.contains(&u))) {
                            return Ok(());
                        }
                        entry.push(b'G');
                        put_field(&mut entry, &r.key)?;
                        put_field(&mut entry, &r.value)?;
                        grants += 1;
                    } else {
                        return Ok(());
                    }
                }
            }
            cw.push(&entry)
        })?;
        // The snapshot must be the state whose counts the header carries, and consistent.
        let st = ik.open_state(&snap.state)?;
        if snap.generation != before.generation || st.generation != before.generation {
            return Err(Error::Store("the store changed during the backup: run it again".into()));
        }
        if acc != st.commitment || scanned != st.objects {
            return Err(Error::Integrity(
                "store rows do not match the set commitment (a row was deleted, inserted or replayed)",
            ));
        }
        Ok((objects, users, grants))
    }

    /// Restores a backup made by [`Token::backup`] into this store, which must hold no object
    /// (a freshly initialized store); it adopts the backup's security domain. The whole file is
    /// checked before anything changes, then every object (sealed again under this store's
    /// master key, same unique id, new handle), user and grant is written in one authenticated
    /// write. Users are matched by name: one this store already has keeps its account here
    /// (password, role, TOTP), and the backup's grants to that name go to it. Security officer
    /// only; audited as `restore` with the source store and counts.
    pub fn restore(
        &self,
        input: &Path,
        passphrase: &SecretBytes,
        progress: Progress<'_>,
    ) -> Result<RestoreSummary> {
        self.restore_with(input, Unlock::Passphrase(passphrase), progress)
    }

    /// [`Token::restore`] with the backup's passphrase or enough of its custodian shares. A
    /// selected-key backup ([`Token::backup_selected`]) adds its keys to a store of the same
    /// security domain (refusing any conflict); a whole-store backup goes into an empty store.
    pub fn restore_with(
        &self,
        input: &Path,
        unlock: Unlock<'_>,
        progress: Progress<'_>,
    ) -> Result<RestoreSummary> {
        self.restore_with_options(input, unlock, RestoreOptions::default(), progress)
    }

    /// [`Token::restore_with`], with [`RestoreOptions::rebase`]: a whole-store backup into a
    /// store of the same domain that is not empty replaces its objects and grants and resets
    /// the anti-rollback baseline (audited as such).
    pub fn restore_with_options(
        &self,
        input: &Path,
        unlock: Unlock<'_>,
        opts: RestoreOptions,
        progress: Progress<'_>,
    ) -> Result<RestoreSummary> {
        let c = Call::new("restore");
        let r = self.precheck(&c).and_then(|()| {
            self.require_security_officer()?;
            self.restore_unaudited(input, unlock, opts, progress)
        });
        let detail = match &r {
            Ok(s) => format!(
                "source {} domain {} objects {} users {} grants {}{}{}",
                hex16(&s.source_store),
                hex16(&s.domain),
                s.objects,
                s.users,
                s.grants,
                scope_note(&s.keys),
                s.rebased.map_or_else(String::new, |g| format!(
                    " rebase: contents replaced, anti-rollback baseline reset to generation {g}"
                )),
            ),
            Err(_) if opts.rebase => "rebase refused".to_owned(),
            Err(_) => String::new(),
        };
        self.finish(&c, r, detail)
    }

    #[allow(clippy::too_many_lines)] // two passes over one file, kept side by side
    fn restore_unaudited(
        &self,
        input: &Path,
        unlock: Unlock<'_>,
        opts: RestoreOptions,
        progress: Progress<'_>,
    ) -> Result<RestoreSummary> {
        let (vault, ik) = self.require_vault()?;
        let opened = open_backup(input, unlock)?;
        let h = &opened.header;
        let mode = self.check_restore_target(&ik, h, opts)?;
        let total = h.objects.saturating_mul(2);
        // Pass 1: the whole file, nothing written.
        let mut done = 0u64;
        // Backup users whose name the target already has keep the target's account; their
        // grants go to it (user id in the backup -> user id here).
        let mut matched: HashMap<[u8; 16], [u8; 16]> = HashMap::new();
        // Selected keys: the scope, the archived stubs here that get their material back
        // (uid -> handle), the backup's uids, and the users this store does not have (their
        // grants are not restored: a selected-key restore creates no account).
        let mut scope: Vec<String> = Vec::new();
        let mut stubs: HashMap<[u8; 16], u64> = HashMap::new();
        let mut uids: std::collections::HashSet<[u8; 16]> = std::collections::HashSet::new();
        let mut absent: std::collections::HashSet<[u8; 16]> = std::collections::HashSet::new();
        let mut r = opened.reader(input)?;
        let counts = read_stream(&mut r, h, &mut |e| {
            match e {
                Entry::Scope { labels } => scope = labels,
                Entry::Object { uid, attrs, .. } => {
                    if mode == Mode::Add {
                        let label = attrs.bytes(AttrType::Label).unwrap_or_default();
                        if !scope.iter().any(|l| l.as_bytes() == label) {
                            return Err(bad(MODIFIED));
                        }
                        if let Some(handle) = self.restore_conflict(&ik, &uid, label)? {
                            stubs.insert(uid, handle);
                        }
                        uids.insert(uid);
                    }
                    done += 1;
                    progress(done, total);
                }
                Entry::User { id, record, .. } => {
                    if let Some(row) =
                        self.store.record(users::kind::USER_NAME, record.name.as_bytes())?
                    {
                        ik.verify_row(&row)?;
                        let here: [u8; 16] = row
                            .value
                            .as_slice()
                            .try_into()
                            .map_err(|_| Error::Integrity("user name record malformed"))?;
                        matched.insert(id.0, here);
                    } else if self.store.record(users::kind::USER, &id.0)?.is_some() {
                        return Err(Error::ActionProhibited(
                            "a user of the backup has the id of another user of this store",
                        ));
                    } else if mode == Mode::Add {
                        absent.insert(id.0);
                    }
                }
                Entry::Grant { .. } | Entry::End { .. } => {}
            }
            Ok(())
        })?;
        r.finish()?;
        if mode == Mode::Add {
            self.check_label_conflicts(&ik, &scope, &uids)?;
        }
        // Replace: every object, grant and scheduled destruction of the store goes, in the
        // same write that brings the backup's in.
        let old: Vec<u64> = if mode == Mode::Replace {
            self.store.find(None, None, None)?.iter().map(|r| r.handle).collect()
        } else {
            Vec::new()
        };
        // Pass 2: the same file again, inside one authenticated write; any failure (the file
        // changed meanwhile) rolls the whole write back.
        let base = done;
        self.write(&ik, |a| {
            done = base;
            for h in &old {
                a.delete_object(*h)?;
            }
            if mode == Mode::Replace {
                for g in a.records(users::kind::GRANT, b"")? {
                    a.delete_record(users::kind::GRANT, &g.key)?;
                }
                for d in a.records(super::destruction::DESTROY_DUE, b"")? {
                    a.delete_record(super::destruction::DESTROY_DUE, &d.key)?;
                }
            }
            let mut r = opened.reader(input)?;
            let c = read_stream(&mut r, h, &mut |e| {
                match e {
                    Entry::Scope { .. } | Entry::End { .. } => {}
                    Entry::Object { uid, attrs, material } => {
                        let has_material = material.is_some();
                        let secret = match material {
                            Some(m) => {
                                let mut nonce = [0u8; NONCE_LEN];
                                self.provider.random(&mut nonce)?;
                                Some(vault.seal_secret(&uid, nonce, m.expose_secret())?)
                            }
                            None => None,
                        };
                        let mut row = ObjectRow {
                            handle: 0,
                            uid,
                            class: attrs.ulong(AttrType::Class).unwrap_or(0),
                            label: attrs.bytes(AttrType::Label).unwrap_or_default().to_vec(),
                            ckaid: attrs.bytes(AttrType::Id).unwrap_or_default().to_vec(),
                            private: attrs.bool_or(AttrType::Private, true),
                            attrs: attrs.encode(),
                            secret,
                            mac: Vec::new(),
                        };
                        let handle = match stubs.get(&uid) {
                            Some(h) => {
                                row.handle = *h;
                                a.update_object(&row)?;
                                *h
                            }
                            None => a.insert_object(&row)?,
                        };
                        // A key restored with its destruction pending is indexed again.
                        if let (Some(s), true) =
                            (crate::destruction::Schedule::of(&attrs), has_material)
                        {
                            let mut v = s.due.to_be_bytes().to_vec();
                            v.extend_from_slice(&uid);
                            a.put_record(
                                super::destruction::DESTROY_DUE,
                                &handle.to_be_bytes(),
                                &v,
                            )?;
                        }
                        done += 1;
                        progress(done, total);
                    }
                    Entry::User { id, mut record, totp } => {
                        if matched.contains_key(&id.0) || mode == Mode::Add {
                            return Ok(());
                        }
                        if let Some(s) = totp {
                            let mut nonce = [0u8; NONCE_LEN];
                            self.provider.random(&mut nonce)?;
                            let sealed = vault.seal_value(
                                &users::totp_name(id),
                                nonce,
                                s.expose_secret(),
                            )?;
                            record.totp = Some(hex::encode(sealed));
                        }
                        if a.record(users::kind::USER_NAME, record.name.as_bytes())?.is_some() {
                            return Err(bad("the backup holds two users with one name"));
                        }
                        let json = serde_json::to_vec(&record)
                            .map_err(|_| Error::Internal("user record encoding"))?;
                        a.put_record(users::kind::USER, &id.0, &json)?;
                        a.put_record(users::kind::USER_NAME, record.name.as_bytes(), &id.0)?;
                    }
                    Entry::Grant { mut key, value } => {
                        let user: [u8; 16] = key[16..].try_into().map_err(|_| bad(MODIFIED))?;
                        if absent.contains(&user) {
                            return Ok(());
                        }
                        if let Some(here) = matched.get(&user) {
                            key[16..].copy_from_slice(here);
                        }
                        a.put_record(users::kind::GRANT, &key, &value)?;
                    }
                }
                Ok(())
            })?;
            r.finish()?;
            if c != counts {
                return Err(bad(MODIFIED));
            }
            a.put_record(kind::SETTING, DOMAIN_SETTING.as_bytes(), &h.domain)?;
            Ok(())
        })?;
        let rebased = if mode == Mode::Replace {
            let g = self.store.header()?.generation;
            crate::rollback::rebase(&self.store_uid, g, &|v| ik.mark_tag(v));
            self.generation_seen.store(g, std::sync::atomic::Ordering::Release);
            Some(g)
        } else {
            None
        };
        if mode != Mode::Fresh {
            {
                let mut c = super::write(&self.cache);
                c.objects.clear();
                c.keys.clear();
            }
            self.acl_forget();
            self.bump_epoch();
        }
        Ok(RestoreSummary {
            objects: counts.0,
            users: counts.1,
            grants: counts.2,
            source_store: h.source_store,
            domain: h.domain,
            keys: scope,
            rebased,
        })
    }

    /// Whether a selected key of the backup may come into this store: a key with its unique
    /// id here is a conflict, unless it is the archived stub of that very key (then its handle:
    /// the restore gives it its material back).
    fn restore_conflict(
        &self,
        ik: &IntegrityKeys,
        uid: &[u8; 16],
        label: &[u8],
    ) -> Result<Option<u64>> {
        for row in self.store.find(None, Some(label), None)? {
            if &row.uid != uid {
                continue;
            }
            ik.verify_record(&row)?;
            let attrs = Attributes::decode(&row.attrs)?;
            if attrs.contains(AttrType::BulwarkArchived) && row.secret.is_none() {
                return Ok(Some(row.handle));
            }
            return Err(Error::ActionProhibited(
                "a key of the backup is already in this store (same unique id): nothing restored",
            ));
        }
        Ok(None)
    }

    /// A selected-key restore refuses labels that name other live keys here (the CLI and the
    /// daemon name keys by label): nothing is restored then.
    fn check_label_conflicts(
        &self,
        ik: &IntegrityKeys,
        scope: &[String],
        uids: &std::collections::HashSet<[u8; 16]>,
    ) -> Result<()> {
        for l in scope {
            for row in self.store.find(None, Some(l.as_bytes()), None)? {
                if uids.contains(&row.uid) {
                    continue;
                }
                ik.verify_record(&row)?;
                let attrs = Attributes::decode(&row.attrs)?;
                if !crate::destruction::Schedule::is_scheduled(&attrs) {
                    return Err(Error::ActionProhibited(
                        "another key of this store has a label of the backup: nothing restored",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The restore rule: a whole-store backup only into a store with no object, or (rebase)
    /// into a store of the same domain; a selected-key backup only into a store of the same
    /// domain.
    fn check_restore_target(
        &self,
        ik: &IntegrityKeys,
        h: &BackupHeader,
        opts: RestoreOptions,
    ) -> Result<Mode> {
        let st = self.verify_set(ik)?;
        let domain = self.verified_setting(ik, DOMAIN_SETTING)?;
        let same = domain.as_deref() == Some(&h.domain[..]);
        if h.version == BACKUP_VERSION_SELECTED {
            if opts.rebase {
                return Err(bad("a selected-key backup adds keys: it cannot rebase a store"));
            }
            if !same {
                return Err(Error::ActionProhibited(
                    "the backup belongs to another security domain: selected keys restore only \
                     into a store of the same domain",
                ));
            }
            return Ok(Mode::Add);
        }
        if st.objects == 0 {
            return Ok(Mode::Fresh);
        }
        if !same {
            return Err(Error::ActionProhibited(
                "the backup belongs to another security domain and this store is not empty: \
                 restore into a freshly initialized store",
            ));
        }
        if opts.rebase {
            return Ok(Mode::Replace);
        }
        Err(Error::ActionProhibited(
            "the store is not empty: restore into a freshly initialized store (or replace this \
             store's contents with a rebase, which resets its anti-rollback baseline)",
        ))
    }
}

/// Reads a whole backup file back (header, every chunk and entry, every sealed material, the
/// counts): what an archive checks before it removes the material from the live store. Returns
/// the number of objects.
pub(super) fn check_backup_file(path: &Path, unlock: Unlock<'_>) -> Result<u64> {
    let opened = open_backup(path, unlock)?;
    let mut r = opened.reader(path)?;
    let (objects, _, _) = read_stream(&mut r, &opened.header, &mut |_| Ok(()))?;
    r.finish()?;
    Ok(objects)
}

/// What a restore does to its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A whole-store backup into an empty store.
    Fresh,
    /// Selected keys added to a store of the same domain.
    Add,
    /// A whole-store backup replacing a non-empty store's contents (rebase).
    Replace,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BackupKeys {
        let p = SecretBytes::from_slice(b"correct horse battery");
        derive_keys(&p, KdfParams { m_cost: 64, t_cost: 1, p_cost: 1 }, [7; 32]).unwrap()
    }

    fn header() -> BackupHeader {
        BackupHeader {
            version: BACKUP_VERSION,
            kdf: KdfParams { m_cost: 64, t_cost: 1, p_cost: 1 },
            custodians: None,
            source_store: [1; 16],
            domain: [2; 16],
            generation: 9,
            objects: 3,
            created_ms: 1234,
            salt: [7; 32],
            check: [5; 32],
        }
    }

    #[test]
    fn header_round_trips_and_refuses_other_versions() {
        let h = header();
        let b = h.encode();
        assert_eq!(BackupHeader::decode(&b).unwrap(), h);
        let mut v = b;
        v[9] = 9;
        assert!(BackupHeader::decode(&v).unwrap_err().to_string().contains("version"));
        let mut m = b;
        m[0] = b'X';
        assert!(BackupHeader::decode(&m).unwrap_err().to_string().contains("not a Bulwark"));
    }

    fn stream(data: &[u8]) -> Vec<u8> {
        let k = keys();
        let mut cw = ChunkWriter {
            w: Vec::new(),
            keys: &k,
            header_hash: [3; 32],
            counter: 0,
            buf: Zeroizing::new(Vec::new()),
            written: 0,
        };
        cw.push(data).unwrap();
        cw.finish().unwrap().0
    }

    fn read_all(file: &[u8], len: usize) -> Result<Vec<u8>> {
        let k = keys();
        let mut r = ChunkReader {
            r: file,
            keys: &k,
            header_hash: [3; 32],
            counter: 0,
            buf: Zeroizing::new(Vec::new()),
            pos: 0,
            last_seen: false,
        };
        let mut out = vec![0u8; len];
        r.read_exact(&mut out)?;
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn chunks_detect_reordering_truncation_and_appending() {
        let data: Vec<u8> = (0..(3 * CHUNK + 100)).map(|i| (i % 251) as u8).collect();
        let file = stream(&data);
        assert_eq!(read_all(&file, data.len()).unwrap(), data);
        let one = 5 + CHUNK + TAG_LEN;
        // Swap the first two chunks.
        let mut swapped = file[one..2 * one].to_vec();
        swapped.extend_from_slice(&file[..one]);
        swapped.extend_from_slice(&file[2 * one..]);
        assert!(read_all(&swapped, data.len()).is_err());
        // Drop the last chunk: no chunk says "last".
        assert!(read_all(&file[..3 * one], 3 * CHUNK).is_err());
        // Mark a middle chunk as the last one.
        let mut flagged = file.clone();
        flagged[one] = 1;
        assert!(read_all(&flagged, 2 * CHUNK).is_err());
        // Bytes after the last chunk.
        let mut longer = file.clone();
        longer.push(0);
        assert!(read_all(&longer, data.len()).is_err());
    }

    #[test]
    fn sealed_material_is_bound_to_its_object() {
        let k = keys();
        let s = k.seal([1; 12], &k.bound_aad(OBJECT_AAD, &[1; 16]), b"key bytes").unwrap();
        assert!(!s.windows(9).any(|w| w == b"key bytes"));
        assert_eq!(
            k.open(&k.bound_aad(OBJECT_AAD, &[1; 16]), &s).unwrap().expose_secret(),
            b"key bytes"
        );
        assert!(k.open(&k.bound_aad(OBJECT_AAD, &[2; 16]), &s).is_err());
    }

    #[test]
    fn passphrase_length_and_kdf_bounds_are_checked() {
        let short = SecretBytes::from_slice(b"short");
        assert!(
            derive_keys(&short, KdfParams { m_cost: 64, t_cost: 1, p_cost: 1 }, [0; 32]).is_err()
        );
        let p = SecretBytes::from_slice(b"long enough passphrase");
        let huge = KdfParams { m_cost: u32::MAX, t_cost: 1, p_cost: 1 };
        assert!(derive_keys(&p, huge, [0; 32]).unwrap_err().to_string().contains("bounds"));
    }
}
