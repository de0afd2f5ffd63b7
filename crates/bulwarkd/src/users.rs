//! Daemon users: names, roles and Argon2id password hashes (PHC strings) in a JSON file, and the
//! login check with a lockout after repeated failures.
//!
//! Users only authenticate; no password opens the store (DESIGN.md §3, quorum policy). The file
//! holds no secret that helps an attacker beyond an offline guessing target, so it is written
//! 0600 and the hashes use Argon2id. A missing user costs the same Argon2id run as a wrong
//! password, so timing does not tell which names exist. Never logs a password.

use std::collections::HashMap;
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
        Some(match s {
            "security-officer" | "so" => Role::SecurityOfficer,
            "crypto-officer" | "co" => Role::CryptoOfficer,
            "crypto-user" | "cu" | "user" => Role::CryptoUser,
            "auditor" => Role::Auditor,
            _ => return None,
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
}

/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Unknown user or wrong password (not distinguished).
    BadCredentials,
    /// Too many failures.
    Locked,
}

/// The user database.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    records: RwLock<Vec<UserRecord>>,
    failures: Mutex<HashMap<String, u32>>,
    /// Last accepted TOTP step per user (RFC 6238 §5.2: a code is accepted once).
    last_step: Mutex<HashMap<String, u64>>,
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
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err("user names are 1 to 64 characters of [A-Za-z0-9-_.@]".into());
    }
    Ok(())
}

impl Users {
    /// Loads the user file (an absent file is an empty database).
    pub fn load(path: &Path) -> Result<Self, String> {
        let records = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("user file {} is malformed: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {}", path.display(), e.kind())),
        };
        Ok(Self {
            path: path.to_owned(),
            records: RwLock::new(records),
            failures: Mutex::new(HashMap::new()),
            last_step: Mutex::new(HashMap::new()),
            dummy: hash_password(b"bulwark timing equaliser")?,
        })
    }

    /// Adds (or replaces) a user and writes the file.
    pub fn put(
        &self,
        name: &str,
        role: Role,
        password: &[u8],
        totp: Option<String>,
    ) -> Result<(), String> {
        check_name(name)?;
        let rec = UserRecord {
            name: name.to_owned(),
            role,
            password_hash: hash_password(password)?,
            totp,
        };
        let mut r = self.records.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = r.clone();
        next.retain(|u| u.name != name);
        next.push(rec);
        self.save(&next)?;
        *r = next;
        lock(&self.failures).remove(name);
        Ok(())
    }

    /// Removes a user; `Ok(false)` if there was none.
    pub fn remove(&self, name: &str) -> Result<bool, String> {
        let mut r = self.records.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = r.clone();
        next.retain(|u| u.name != name);
        if next.len() == r.len() {
            return Ok(false);
        }
        self.save(&next)?;
        *r = next;
        Ok(true)
    }

    /// Every user (name, role, has TOTP, locked).
    pub fn list(&self) -> Vec<(String, Role, bool, bool)> {
        let f = lock(&self.failures);
        self.records
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|u| {
                let locked = f.get(&u.name).copied().unwrap_or(0) >= MAX_LOGIN_FAILURES;
                (u.name.clone(), u.role, u.totp.is_some(), locked)
            })
            .collect()
    }

    fn save(&self, records: &[UserRecord]) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(records).map_err(|e| e.to_string())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {}", tmp.display(), e.kind()))?;
        f.write_all(&json).and_then(|()| f.sync_all()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &self.path).map_err(|e| e.to_string())
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
    ) -> Result<(Role, Option<String>), LoginError> {
        if lock(&self.failures).get(name).copied().unwrap_or(0) >= MAX_LOGIN_FAILURES {
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
            Some(u) if ok => Ok((u.role, u.totp)),
            Some(_) => {
                self.failed(name);
                Err(LoginError::BadCredentials)
            }
            None => Err(LoginError::BadCredentials),
        }
    }

    /// Records a failed login (wrong password or wrong second factor).
    pub fn failed(&self, name: &str) {
        *lock(&self.failures).entry(name.to_owned()).or_insert(0) += 1;
    }

    /// Clears the failure count after a complete login.
    pub fn succeeded(&self, name: &str) {
        lock(&self.failures).remove(name);
    }

    /// Accepts a TOTP step once: a step at or before the last accepted one is a replay.
    pub fn accept_step(&self, name: &str, step: u64) -> bool {
        let mut m = lock(&self.last_step);
        match m.get(name) {
            Some(&last) if step <= last => false,
            _ => {
                m.insert(name.to_owned(), step);
                true
            }
        }
    }
}
