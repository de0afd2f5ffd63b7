//! Daemon users: names, roles and Argon2id password hashes (PHC strings) in a JSON file, and the
//! login check with a lockout after repeated failures.
//!
//! Users only authenticate; no password opens the store (DESIGN.md §3, quorum policy). The file
//! holds no secret that helps an attacker beyond an offline guessing target, so it is written
//! 0600 and the hashes use Argon2id. A missing user costs the same Argon2id run as a wrong
//! password, so timing does not tell which names exist. Never logs a password.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Consecutive failed logins after which a user is locked (until the daemon restarts or an SO
/// unlocks it — the latter is a later step).
pub const MAX_LOGIN_FAILURES: u32 = 5;

/// A role (DESIGN.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Security officer: seal, users, policy.
    SecurityOfficer,
    /// Creates and manages keys, and uses them.
    CryptoOfficer,
    /// Uses keys.
    CryptoUser,
    /// Reads the audit log.
    Auditor,
}

impl Role {
    /// The role's name on the wire and in files.
    pub fn name(self) -> &'static str {
        match self {
            Role::SecurityOfficer => "security-officer",
            Role::CryptoOfficer => "crypto-officer",
            Role::CryptoUser => "crypto-user",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match bulwark_proto::canonical_role(s)? {
            "security-officer" => Role::SecurityOfficer,
            "crypto-officer" => Role::CryptoOfficer,
            "crypto-user" => Role::CryptoUser,
            _ => Role::Auditor,
        })
    }
}

/// One stored user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The TOTP secret, encrypted by the HSM under its `bulwarkd.totp` key (BWK1 format, hex);
    /// readable only while the HSM is unsealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    /// SHA-256 (hex) of the client certificate this user must connect with, if bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
}

/// What a login must still check after the password: the second factors.
#[derive(Debug)]
pub struct Factors {
    /// The user's role.
    pub role: Role,
    /// Encrypted TOTP secret, if enrolled.
    pub totp: Option<String>,
    /// Bound client certificate (SHA-256 hex), if any.
    pub cert_sha256: Option<String>,
}

/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Unknown user or wrong password (not distinguished).
    BadCredentials,
    /// Too many failures.
    Locked,
    /// The user database does not authenticate under the HSM's key: no login is possible.
    Integrity,
}

/// Computes the MAC of the user database with the HSM's key (hex).
pub type MacFn<'a> = &'a dyn Fn(&[u8]) -> Result<String, String>;

/// The user file: the records and their MAC under the HSM's `bulwarkd.users-mac` key. A bare
/// array (no MAC) is accepted only until the database is first bound to an unsealed HSM.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum UserFile {
    Bound {
        users: Vec<UserRecord>,
        #[serde(default)]
        keys: BTreeMap<String, KeyAcl>,
        mac: String,
    },
    Unbound(Vec<UserRecord>),
}

/// One grant of a key's access list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `user:NAME` or `role:ROLE`.
    pub principal: String,
    /// `sign`, `verify`, `encrypt`, `decrypt`, `public`, or `*`.
    pub ops: Vec<String>,
}

/// A key's owner and access list (crypto users may use a key only through a grant).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAcl {
    /// The user that created the key.
    pub owner: String,
    /// Who else may use it, for what.
    pub grants: Vec<Grant>,
}

impl KeyAcl {
    /// Whether `user` with `role` may perform `op` with the key.
    pub fn allows(&self, user: &str, role: Role, op: &str) -> bool {
        if self.owner == user {
            return true;
        }
        let (as_user, as_role) = (format!("user:{user}"), format!("role:{}", role.name()));
        self.grants.iter().any(|g| {
            (g.principal == as_user || g.principal == as_role)
                && g.ops.iter().any(|o| o == op || o == "*")
        })
    }
}

/// The user database.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    records: RwLock<Vec<UserRecord>>,
    /// Key access lists by label (lock order: `records` before `keys`).
    keys: RwLock<BTreeMap<String, KeyAcl>>,
    /// The MAC read from or last written to the file (None: not yet bound to the HSM).
    mac: Mutex<Option<String>>,
    /// True once the records authenticated under the HSM's key in this process.
    trusted: std::sync::atomic::AtomicBool,
    failures: Mutex<HashMap<String, u32>>,
    /// Failures that lock a user.
    max_failures: std::sync::atomic::AtomicU32,
    /// Last accepted TOTP step per user (RFC 6238 §5.2: a code is accepted once).
    last_step: Mutex<HashMap<String, u64>>,
    /// Serializes updates of the used-approvals record.
    approvals: Mutex<()>,
    dummy: String,
}

fn hasher() -> argon2::Argon2<'static> {
    // OWASP's Argon2id recommendation (19 MiB, 2 passes, 1 lane).
    let params = argon2::Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// An Argon2id PHC hash of `password` with a salt from the HSM's RNG.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    let mut salt = [0u8; 16];
    bulwark_core::crypto::Provider::get()
        .and_then(|p| p.random(&mut salt))
        .map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    hasher().hash_password(password, &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks a user name.
pub fn check_name(name: &str) -> Result<(), String> {
    bulwark_core::limits::check_user_name(name).map_err(|e| e.to_string())
}

impl Users {
    /// Loads the user file (an absent file is an empty database).
    pub fn load(path: &Path) -> Result<Self, String> {
        let file = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("user file {} is malformed: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => UserFile::Unbound(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {}", path.display(), e.kind())),
        };
        let (records, keys, mac) = match file {
            UserFile::Bound { users, keys, mac } => (users, keys, Some(mac)),
            UserFile::Unbound(users) => (users, BTreeMap::new(), None),
        };
        let lockouts = Self::lockouts_path(path);
        let failures: HashMap<String, u32> = read_map(&lockouts, "failed-login record")?;
        let last_step: HashMap<String, u64> =
            read_map(&Self::steps_path(path), "TOTP step record")?;
        Ok(Self {
            path: path.to_owned(),
            records: RwLock::new(records),
            keys: RwLock::new(keys),
            mac: Mutex::new(mac),
            trusted: std::sync::atomic::AtomicBool::new(false),
            failures: Mutex::new(failures),
            max_failures: std::sync::atomic::AtomicU32::new(MAX_LOGIN_FAILURES),
            last_step: Mutex::new(last_step),
            approvals: Mutex::new(()),
            dummy: hash_password(b"bulwark timing equaliser")?,
        })
    }

    /// Sets how many consecutive failures lock a user (configuration `max_login_failures`).
    pub fn set_max_failures(&self, n: u32) {
        self.max_failures.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    fn max_failures(&self) -> u32 {
        self.max_failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last accepted TOTP step per user survives restarts too: a code seen before a restart
    /// is still a replay after it.
    fn steps_path(users: &Path) -> PathBuf {
        users.with_extension("totp-steps.json")
    }

    /// Failed-login counts survive restarts: a lockout is not undone by restarting the daemon.
    fn lockouts_path(users: &Path) -> PathBuf {
        users.with_extension("lockouts.json")
    }

    /// Writes the failed-login counts (called with the `failures` lock held). A write error is
    /// logged; the in-memory count still applies.
    fn save_failures(&self, f: &HashMap<String, u32>) {
        let path = Self::lockouts_path(&self.path);
        let r = serde_json::to_vec(f)
            .map_err(|e| e.to_string())
            .and_then(|json| write_atomically(&path, &json));
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot record failed logins");
        }
    }

    fn canonical(records: &[UserRecord], keys: &BTreeMap<String, KeyAcl>) -> Vec<u8> {
        serde_json::to_vec(&(records, keys)).unwrap_or_default()
    }

    fn keys_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, KeyAcl>> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The access list of key `label`, if it has one.
    pub fn key_acl(&self, label: &str) -> Option<KeyAcl> {
        self.keys_read().get(label).cloned()
    }

    /// Sets (or, with `None`, removes) the access list of key `label`.
    pub fn set_key_acl(
        &self,
        label: &str,
        acl: Option<KeyAcl>,
        mac: MacFn<'_>,
    ) -> Result<(), String> {
        let r = self.records.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut k = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = k.clone();
        match acl {
            Some(a) => {
                next.insert(label.to_owned(), a);
            }
            None => {
                next.remove(label);
            }
        }
        self.save(&r, &next, Some(mac))?;
        *k = next;
        Ok(())
    }

    /// Whether the file is bound to an HSM (carries a MAC).
    pub fn is_bound(&self) -> bool {
        lock(&self.mac).is_some()
    }

    /// Checks the records against the file's MAC with the HSM's key; trusts them if it matches.
    pub fn verify_mac(&self, mac: MacFn<'_>) -> bool {
        let r = self.records.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let k = self.keys_read();
        let stored = lock(&self.mac).clone();
        let ok = match (stored, mac(&Self::canonical(&r, &k))) {
            (Some(s), Ok(m)) => {
                bool::from(subtle::ConstantTimeEq::ct_eq(s.as_bytes(), m.as_bytes()))
            }
            _ => false,
        };
        self.trusted.store(ok, std::sync::atomic::Ordering::Release);
        ok
    }

    /// Binds an unbound database to the HSM: MACs the records and rewrites the file.
    pub fn bind(&self, mac: MacFn<'_>) -> Result<(), String> {
        let r = self.records.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let k = self.keys_read();
        self.save(&r, &k, Some(mac))?;
        self.trusted.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Adds (or replaces) a user and writes the file: MACed with `mac` (online, unsealed), or
    /// without a MAC (offline bootstrap), which is refused once the file is bound to the HSM.
    pub fn put(
        &self,
        name: &str,
        role: Role,
        password: &[u8],
        totp: Option<String>,
        mac: Option<MacFn<'_>>,
    ) -> Result<(), String> {
        check_name(name)?;
        let rec = UserRecord {
            name: name.to_owned(),
            role,
            password_hash: hash_password(password)?,
            totp,
            cert_sha256: None,
        };
        let mut r = self.records.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = r.clone();
        next.retain(|u| u.name != name);
        next.push(rec);
        self.save(&next, &self.keys_read(), mac)?;
        *r = next;
        let mut f = lock(&self.failures);
        if f.remove(name).is_some() {
            self.save_failures(&f);
        }
        Ok(())
    }

    /// Binds `name` to a client certificate (SHA-256 of its DER, hex): it can then log in only
    /// over a connection authenticated with that certificate.
    pub fn bind_certificate(
        &self,
        name: &str,
        sha256_hex: &str,
        mac: MacFn<'_>,
    ) -> Result<(), String> {
        let mut r = self.records.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = r.clone();
        let u = next.iter_mut().find(|u| u.name == name).ok_or("no such user")?;
        u.cert_sha256 = Some(sha256_hex.to_ascii_lowercase());
        self.save(&next, &self.keys_read(), Some(mac))?;
        *r = next;
        Ok(())
    }

    /// Changes a user's role; `Ok(false)` if there is no such user.
    pub fn set_role(&self, name: &str, role: Role, mac: MacFn<'_>) -> Result<bool, String> {
        let mut r = self.records.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = r.clone();
        let Some(u) = next.iter_mut().find(|u| u.name == name) else { return Ok(false) };
        u.role = role;
        self.save(&next, &self.keys_read(), Some(mac))?;
        *r = next;
        Ok(true)
    }

    /// Removes a user; `Ok(false)` if there was none.
    pub fn remove(&self, name: &str, mac: MacFn<'_>) -> Result<bool, String> {
        let mut r = self.records.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = r.clone();
        next.retain(|u| u.name != name);
        if next.len() == r.len() {
            return Ok(false);
        }
        self.save(&next, &self.keys_read(), Some(mac))?;
        *r = next;
        Ok(true)
    }

    /// Every user (name, role, has TOTP, locked, bound to a certificate).
    pub fn list(&self) -> Vec<(String, Role, bool, bool, bool)> {
        let f = lock(&self.failures);
        self.records
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|u| {
                let locked = f.get(&u.name).copied().unwrap_or(0) >= self.max_failures();
                (u.name.clone(), u.role, u.totp.is_some(), locked, u.cert_sha256.is_some())
            })
            .collect()
    }

    fn save(
        &self,
        records: &[UserRecord],
        keys: &BTreeMap<String, KeyAcl>,
        mac: Option<MacFn<'_>>,
    ) -> Result<(), String> {
        let mut stored = lock(&self.mac);
        let file = match mac {
            Some(f) => UserFile::Bound {
                users: records.to_vec(),
                keys: keys.clone(),
                mac: f(&Self::canonical(records, keys))?,
            },
            None if stored.is_some() => {
                return Err("the user database is bound to the HSM: add users online as the \
                            security officer (bulwark --endpoint ... user add)"
                    .into())
            }
            None => UserFile::Unbound(records.to_vec()),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        write_atomically(&self.path, &json)?;
        *stored = match file {
            UserFile::Bound { mac, .. } => Some(mac),
            UserFile::Unbound(_) => None,
        };
        Ok(())
    }

    /// Records that the approvals with `digest` were used (until `not_after`, Unix seconds):
    /// `Ok(false)` if they already were. The record survives restarts (a file next to the user
    /// database, MACed under the HSM's key like it), so a set of approvals works once, ever.
    /// A record file that does not authenticate refuses every approval.
    pub fn use_approval(
        &self,
        digest: &[u8; 32],
        not_after: u64,
        now: u64,
        mac: MacFn<'_>,
    ) -> Result<bool, String> {
        #[derive(Serialize, Deserialize, Default)]
        struct UsedFile {
            used: BTreeMap<String, u64>,
            mac: String,
        }
        let _guard = lock(&self.approvals);
        let path = self.path.with_extension("approvals.json");
        let canonical = |used: &BTreeMap<String, u64>| -> Vec<u8> {
            let mut m = b"bulwark used approvals v1".to_vec();
            for (d, t) in used {
                m.extend_from_slice(d.as_bytes());
                m.extend_from_slice(&t.to_be_bytes());
            }
            m
        };
        let mut file = match std::fs::read(&path) {
            Ok(b) => {
                let f: UsedFile = serde_json::from_slice(&b)
                    .map_err(|_| "the used-approvals record is corrupt".to_owned())?;
                let expect = mac(&canonical(&f.used))?;
                if !bool::from(subtle::ConstantTimeEq::ct_eq(f.mac.as_bytes(), expect.as_bytes())) {
                    return Err("the used-approvals record does not authenticate".into());
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => UsedFile::default(),
            Err(e) => return Err(format!("cannot read {}: {}", path.display(), e.kind())),
        };
        file.used.retain(|_, t| *t > now);
        if file.used.insert(hex::encode(digest), not_after).is_some() {
            return Ok(false);
        }
        file.mac = mac(&canonical(&file.used))?;
        write_atomically(&path, &serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?)?;
        Ok(true)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.records.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks a password (Argon2id; blocking, run it on the worker pool). On success returns the
    /// role and the encrypted TOTP secret, if the user has a second factor; the caller then
    /// calls [`Users::succeeded`] or [`Users::failed`]. A wrong password counts as a failure here.
    pub fn verify_password(
        &self,
        name: &str,
        password: &Zeroizing<String>,
    ) -> Result<Factors, LoginError> {
        if !self.trusted.load(std::sync::atomic::Ordering::Acquire) {
            return Err(LoginError::Integrity);
        }
        if lock(&self.failures).get(name).copied().unwrap_or(0) >= self.max_failures() {
            return Err(LoginError::Locked);
        }
        let user = self
            .records
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|u| u.name == name)
            .cloned();
        let hash = user.as_ref().map_or(self.dummy.as_str(), |u| u.password_hash.as_str());
        let ok = PasswordHash::new(hash)
            .is_ok_and(|h| hasher().verify_password(password.as_bytes(), &h).is_ok());
        match user {
            Some(u) if ok => Ok(Factors { role: u.role, totp: u.totp, cert_sha256: u.cert_sha256 }),
            Some(_) => {
                self.failed(name);
                Err(LoginError::BadCredentials)
            }
            None => Err(LoginError::BadCredentials),
        }
    }

    /// Records a failed login (wrong password or wrong second factor).
    pub fn failed(&self, name: &str) {
        let mut f = lock(&self.failures);
        *f.entry(name.to_owned()).or_insert(0) += 1;
        self.save_failures(&f);
    }

    /// Clears the failure count after a complete login.
    pub fn succeeded(&self, name: &str) {
        let mut f = lock(&self.failures);
        if f.remove(name).is_some() {
            self.save_failures(&f);
        }
    }

    /// Accepts a TOTP step once: a step at or before the last accepted one is a replay.
    pub fn accept_step(&self, name: &str, step: u64) -> bool {
        let mut m = lock(&self.last_step);
        match m.get(name) {
            Some(&last) if step <= last => false,
            _ => {
                m.insert(name.to_owned(), step);
                let path = Self::steps_path(&self.path);
                let r = serde_json::to_vec(&*m)
                    .map_err(|e| e.to_string())
                    .and_then(|json| write_atomically(&path, &json));
                if let Err(e) = r {
                    tracing::error!(error = %e, "cannot record the accepted TOTP step");
                }
                true
            }
        }
    }
}

/// A JSON map kept next to the user database (absent: empty).
fn read_map<V: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<HashMap<String, V>, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|_| format!("the {what} {} is malformed", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(format!("cannot read {}: {}", path.display(), e.kind())),
    }
}

/// Writes `data` to `path` durably: a 0600 temporary file, fsync, rename.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {}", tmp.display(), e.kind()))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
