//! Principals, grants, login state and used quorum approvals, all as authenticated records of
//! the store (DESIGN.md §5 rule 1): nothing of it lives in a side file, so rolling back,
//! deleting or replaying any of it is caught like an edited row.
//!
//! | kind | key | value |
//! |---|---|---|
//! | `user` | user id (16 bytes) | [`UserRecord`] (JSON) |
//! | `user-name` | name | user id |
//! | `login` | user id, or `unknown` | failures and the last accepted TOTP step (JSON) |
//! | `grant` | object uid ‖ user id | [`Ops`] (u32, big endian) |
//! | `approval` | request digest | expiry (u64 seconds, big endian) |
//!
//! **Authentication** ([`Token::authenticate`]) counts the attempt durably before it checks
//! anything secret, so parallel guesses never check more passwords than the limit; an unknown
//! name costs the same durable write and the same Argon2id run as a known one (no user
//! enumeration by timing). The TOTP check (RFC 6238, HMAC-SHA1 through aws-lc) accepts each
//! step once, ever. Passwords are Argon2id PHC strings; TOTP secrets are sealed under the
//! master key.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::guard::Call;
use super::outbox;
use super::state::AuthTx;
use super::{read, Token};
use crate::error::{Error, Result};
use crate::kernel::{self, Grantee, Ops, Principal, Role, UserId, EVERY_CRYPTO_USER};
use crate::store::Store;

/// Record kinds of this module.
pub(super) mod kind {
    pub(in crate::token) const USER: &str = "user";
    pub(in crate::token) const USER_NAME: &str = "user-name";
    pub(in crate::token) const LOGIN: &str = "login";
    pub(in crate::token) const GRANT: &str = "grant";
    pub(in crate::token) const APPROVAL: &str = "approval";
}

/// Default consecutive failed logins after which a user is locked.
pub const MAX_LOGIN_FAILURES: u32 = 5;

/// One user, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Argon2id PHC string.
    pub password: String,
    /// The TOTP secret sealed under the master key (hex), if enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<String>,
    /// SHA-256 (hex, lower case) of the client certificate this user must connect with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// Creation time (ms since the epoch).
    pub created_ms: u64,
}

/// What `list_users` shows of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// Id.
    pub id: UserId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// TOTP enrolled.
    pub totp: bool,
    /// Locked by failed logins.
    pub locked: bool,
    /// Bound to a client certificate.
    pub cert_bound: bool,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct LoginState {
    failures: u32,
    last_step: u64,
}

/// What a login presents.
#[derive(Debug)]
pub struct Credentials<'a> {
    /// User name.
    pub name: &'a str,
    /// Password (never logged).
    pub password: &'a [u8],
    /// Current TOTP code, if the user has one.
    pub totp: Option<&'a str>,
    /// SHA-256 (hex) of the client certificate of the connection, if any.
    pub cert_sha256: Option<&'a str>,
}

fn hasher() -> argon2::Argon2<'static> {
    // OWASP's Argon2id recommendation (19 MiB, 2 passes, 1 lane).
    let params = argon2::Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

fn hash_password(p: &crate::crypto::Provider, password: &[u8]) -> Result<String> {
    if password.len() < 8 || password.len() > 1024 {
        return Err(Error::ArgumentsBad("passwords are 8 to 1024 bytes"));
    }
    let mut salt = [0u8; 16];
    p.random(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| Error::Internal("salt"))?;
    hasher()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|_| Error::Internal("password hash"))
}

/// The hash of a random password nobody knows, with the same parameters as every user's:
/// verified for unknown and locked users so that they cost the same Argon2id run.
fn dummy_phc(p: &crate::crypto::Provider) -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut pw = Zeroizing::new([0u8; 32]);
        let _ = p.random(&mut pw[..]);
        hash_password(p, &pw[..]).unwrap_or_default()
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn decode_user(v: &[u8]) -> Result<UserRecord> {
    serde_json::from_slice(v).map_err(|_| Error::Integrity("user record malformed"))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|_| Error::Internal("record encoding"))
}

fn grant_key(uid: &[u8; 16], user: UserId) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(uid);
    k[16..].copy_from_slice(&user.0);
    k
}

fn user_id_of(v: &[u8]) -> Result<UserId> {
    Ok(UserId(v.try_into().map_err(|_| Error::Integrity("user id malformed"))?))
}

/// RFC 6238 TOTP (SHA-1, 6 digits, 30 s steps) through aws-lc's HMAC.
pub(crate) mod totp {
    use aws_lc_rs::hmac;

    /// The code for `step`.
    pub(crate) fn code(secret: &[u8], step: u64, digits: u32) -> u32 {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
        let mac = hmac::sign(&key, &step.to_be_bytes());
        let m = mac.as_ref();
        let off = usize::from(m[m.len() - 1] & 0x0f);
        let bin = (u32::from(m[off]) & 0x7f) << 24
            | u32::from(m[off + 1]) << 16
            | u32::from(m[off + 2]) << 8
            | u32::from(m[off + 3]);
        bin % 10u32.pow(digits)
    }

    /// The step (within one step of `now_secs`) whose 6-digit code is `code`, if any.
    pub(crate) fn check(secret: &[u8], code_str: &str, now_secs: u64) -> Option<u64> {
        if code_str.len() != 6 || !code_str.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let want: u32 = code_str.parse().ok()?;
        let now = now_secs / 30;
        let mut hit = None;
        // Every candidate is computed (no early exit) and compared in constant time.
        for step in [now.saturating_sub(1), now, now + 1] {
            let c = code(secret, step, 6);
            if bool::from(subtle::ConstantTimeEq::ct_eq(
                &c.to_be_bytes()[..],
                &want.to_be_bytes()[..],
            )) {
                hit = Some(step);
            }
        }
        hit
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn rfc6238_sha1_vectors() {
            // RFC 6238 appendix B, SHA-1, secret "12345678901234567890", 8 digits.
            let s = b"12345678901234567890";
            for (t, want) in [
                (59u64, 94_287_082u32),
                (1_111_111_109, 7_081_804),
                (1_111_111_111, 14_050_471),
                (1_234_567_890, 89_005_924),
                (2_000_000_000, 69_279_037),
                (20_000_000_000, 65_353_130),
            ] {
                assert_eq!(super::code(s, t / 30, 8), want, "T={t}");
            }
            assert_eq!(super::check(s, "287082", 59), Some(1));
            assert_eq!(super::check(s, "287083", 59), None);
            assert_eq!(super::check(s, "28708", 59), None);
        }
    }
}

impl<S: Store> Token<S> {
    fn require_so_caller(&self) -> Result<()> {
        self.admin_gate("user-admin")?;
        if self.who().role == Some(Role::SecurityOfficer) {
            Ok(())
        } else {
            Err(Error::ActionProhibited("only the security officer manages users"))
        }
    }

    /// The dispatch pre-check for administration a front door records itself (the daemon's
    /// user and access-list management, with the approvals it checked): refused while zeroized
    /// or in a tamper alarm, and after another connection's commit only once the store verified
    /// again. The writes commit an outbox row that the front door's record
    /// ([`Token::record_front_door`]) names; several calls of one operation share it.
    fn admin_gate(&self, op: &'static str) -> Result<()> {
        outbox::begin_continued(op, || self.precheck(&Call::new(op)))
    }

    fn unsealed_ik(&self) -> Result<std::sync::Arc<crate::hierarchy::IntegrityKeys>> {
        self.integrity().filter(|_| read(&self.auth).vault.is_some()).ok_or(Error::UserNotLoggedIn)
    }

    /// A user record by id (authenticated).
    pub(crate) fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>> {
        let ik = self.unsealed_ik()?;
        match self.store.record(kind::USER, &id.0)? {
            Some(r) => {
                ik.verify_row(&r)?;
                Ok(Some(decode_user(&r.value)?))
            }
            None => Ok(None),
        }
    }

    /// A user id by name (authenticated).
    pub(super) fn user_id_by_name(&self, name: &str) -> Result<Option<UserId>> {
        let ik = self.unsealed_ik()?;
        match self.store.record(kind::USER_NAME, name.as_bytes())? {
            Some(r) => {
                ik.verify_row(&r)?;
                Ok(Some(user_id_of(&r.value)?))
            }
            None => Ok(None),
        }
    }

    /// The grant of `user` on the object with `uid` (none: empty).
    pub(crate) fn grant_of(&self, uid: &[u8; 16], user: UserId) -> Result<Ops> {
        let ik = self.unsealed_ik()?;
        match self.store.record(kind::GRANT, &grant_key(uid, user))? {
            Some(r) => {
                ik.verify_row(&r)?;
                let b: [u8; 4] = r
                    .value
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::Integrity("grant malformed"))?;
                Ok(Ops(u32::from_be_bytes(b)))
            }
            None => Ok(Ops::default()),
        }
    }

    /// Sets how many consecutive failed logins lock a user (daemon configuration).
    pub fn set_login_failure_limit(&self, n: u32) {
        self.login_limit.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    fn login_limit(&self) -> u32 {
        self.login_limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Creates a user (security officer only; or the first user of a store, at init).
    pub fn create_user(
        &self,
        name: &str,
        role: Role,
        password: &[u8],
        totp_secret: Option<&[u8]>,
    ) -> Result<UserId> {
        self.require_so_caller()?;
        self.create_user_unchecked(name, role, password, totp_secret)
    }

    /// [`Token::create_user`] for the quorum recovery path (see
    /// [`Token::unlock_user_by_quorum`]).
    pub fn create_user_by_quorum(&self, name: &str, role: Role, password: &[u8]) -> Result<UserId> {
        self.create_user_unchecked(name, role, password, None)
    }

    pub(crate) fn create_user_unchecked(
        &self,
        name: &str,
        role: Role,
        password: &[u8],
        totp_secret: Option<&[u8]>,
    ) -> Result<UserId> {
        kernel::check_user_name(name)?;
        let ik = self.unsealed_ik()?;
        let (vault, _) = self.require_vault()?;
        let mut id = [0u8; 16];
        self.provider.random(&mut id)?;
        let id = UserId(id);
        let totp = match totp_secret {
            Some(s) => {
                let mut nonce = [0u8; 12];
                self.provider.random(&mut nonce)?;
                Some(hex::encode(vault.seal_value(&totp_name(id), nonce, s)?))
            }
            None => None,
        };
        let rec = UserRecord {
            name: name.to_owned(),
            role,
            password: hash_password(self.provider, password)?,
            totp,
            cert_sha256: None,
            created_ms: now_ms(),
        };
        let value = encode(&rec)?;
        self.write(&ik, |a| {
            if a.record(kind::USER_NAME, name.as_bytes())?.is_some() {
                return Err(Error::Exists(name.to_owned()));
            }
            a.put_record(kind::USER, &id.0, &value)?;
            a.put_record(kind::USER_NAME, name.as_bytes(), &id.0)
        })?;
        self.acl_forget();
        Ok(id)
    }

    /// Edits a user record in one write (security officer only); the user's id, `None` if
    /// there is no such user.
    fn edit_user(&self, name: &str, f: impl Fn(&mut UserRecord)) -> Result<Option<UserId>> {
        self.require_so_caller()?;
        let ik = self.unsealed_ik()?;
        let Some(id) = self.user_id_by_name(name)? else { return Ok(None) };
        let found = self.write(&ik, |a| {
            let Some(r) = a.record(kind::USER, &id.0)? else { return Ok(None) };
            let mut u = decode_user(&r.value)?;
            f(&mut u);
            a.put_record(kind::USER, &id.0, &encode(&u)?)?;
            Ok(Some(id))
        })?;
        self.acl_forget();
        Ok(found)
    }

    /// Changes a user's role (security officer only); the user's id, `None` if there is no
    /// such user. The new role applies to the user's open sessions at once.
    pub fn set_user_role(&self, name: &str, role: Role) -> Result<Option<UserId>> {
        self.edit_user(name, |u| u.role = role)
    }

    /// Binds a user to a client certificate (SHA-256 of its DER, hex).
    pub fn bind_user_certificate(&self, name: &str, sha256_hex: &str) -> Result<Option<UserId>> {
        let h = sha256_hex.to_ascii_lowercase();
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::ArgumentsBad("certificate digest must be 64 hex digits"));
        }
        self.edit_user(name, |u| u.cert_sha256 = Some(h.clone()))
    }

    /// Deletes a user, its login state and every grant it holds (security officer only); the
    /// deleted user's id, `None` if there was none. A later user of the same name is a
    /// different principal.
    pub fn delete_user(&self, name: &str) -> Result<Option<UserId>> {
        self.require_so_caller()?;
        let ik = self.unsealed_ik()?;
        let Some(id) = self.user_id_by_name(name)? else { return Ok(None) };
        self.write(&ik, |a| {
            a.delete_record(kind::USER, &id.0)?;
            a.delete_record(kind::USER_NAME, name.as_bytes())?;
            a.delete_record(kind::LOGIN, &id.0)?;
            for g in a.records(kind::GRANT, &[])? {
                if g.key.len() == 32 && g.key[16..] == id.0 {
                    a.delete_record(kind::GRANT, &g.key)?;
                }
            }
            Ok(())
        })?;
        self.acl_forget();
        Ok(Some(id))
    }

    /// Clears a user's failed-login count (security officer only); `false` if there is no
    /// such user.
    pub fn unlock_user(&self, name: &str) -> Result<bool> {
        self.require_so_caller()?;
        self.unlock_user_by_quorum(name)
    }

    /// [`Token::unlock_user`] for the quorum recovery path (`bulwarkd user recover`): only
    /// for a caller that unsealed the store with M shares itself, which outranks any officer.
    pub fn unlock_user_by_quorum(&self, name: &str) -> Result<bool> {
        let ik = self.unsealed_ik()?;
        let Some(id) = self.user_id_by_name(name)? else { return Ok(false) };
        self.write(&ik, |a| {
            let mut st = match a.record(kind::LOGIN, &id.0)? {
                Some(r) => serde_json::from_slice(&r.value)
                    .map_err(|_| Error::Integrity("login state malformed"))?,
                None => LoginState::default(),
            };
            st.failures = 0;
            a.put_record(kind::LOGIN, &id.0, &encode(&st)?)
        })?;
        Ok(true)
    }

    /// Sets a user's password (security officer, or the quorum recovery path through
    /// [`Token::reset_password_unchecked`]).
    pub fn reset_password(&self, name: &str, password: &[u8]) -> Result<bool> {
        self.require_so_caller()?;
        self.reset_password_by_quorum(name, password)
    }

    /// [`Token::reset_password`] for the quorum recovery path (see
    /// [`Token::unlock_user_by_quorum`]).
    pub fn reset_password_by_quorum(&self, name: &str, password: &[u8]) -> Result<bool> {
        let ik = self.unsealed_ik()?;
        let Some(id) = self.user_id_by_name(name)? else { return Ok(false) };
        let phc = hash_password(self.provider, password)?;
        self.write(&ik, |a| {
            let Some(r) = a.record(kind::USER, &id.0)? else {
                return Err(Error::ObjectHandleInvalid);
            };
            let mut u = decode_user(&r.value)?;
            u.password.clone_from(&phc);
            a.put_record(kind::USER, &id.0, &encode(&u)?)
        })?;
        Ok(true)
    }

    /// Every user (security officer or auditor).
    pub fn list_users(&self) -> Result<Vec<UserInfo>> {
        if !matches!(self.who().role, Some(Role::SecurityOfficer | Role::Auditor)) {
            return Err(Error::ActionProhibited(
                "only the security officer and auditors list users",
            ));
        }
        self.list_users_unchecked()
    }

    pub(crate) fn list_users_unchecked(&self) -> Result<Vec<UserInfo>> {
        let ik = self.unsealed_ik()?;
        let limit = self.login_limit();
        let mut out = Vec::new();
        for r in self.store.records(kind::USER, &[])? {
            ik.verify_row(&r)?;
            let id = user_id_of(&r.key)?;
            let u = decode_user(&r.value)?;
            let st = self.login_state(&ik, id)?;
            out.push(UserInfo {
                id,
                name: u.name,
                role: u.role,
                totp: u.totp.is_some(),
                locked: st.failures >= limit,
                cert_bound: u.cert_sha256.is_some(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Whether any user exists (a store initialized without one can take its first SO).
    pub fn has_users(&self) -> Result<bool> {
        Ok(!self.store.records(kind::USER, &[])?.is_empty())
    }

    fn login_state(&self, ik: &crate::hierarchy::IntegrityKeys, id: UserId) -> Result<LoginState> {
        match self.store.record(kind::LOGIN, &id.0)? {
            Some(r) => {
                ik.verify_row(&r)?;
                serde_json::from_slice(&r.value)
                    .map_err(|_| Error::Integrity("login state malformed"))
            }
            None => Ok(LoginState::default()),
        }
    }

    /// Authenticates a principal: counts the attempt durably first, then checks the password
    /// (Argon2id), the certificate binding and the TOTP code (each step accepted once). Wrong
    /// credentials of any kind are `PinIncorrect`; past the failure limit `PinLocked`, without
    /// checking anything. Requires an unsealed store.
    pub fn authenticate(&self, c: &Credentials<'_>) -> Result<Principal> {
        let ik = self.unsealed_ik()?;
        let valid_name = kernel::check_user_name(c.name).is_ok();
        let id = if valid_name { self.user_id_by_name(c.name)? } else { None };
        let limit = self.login_limit();
        // The attempt is counted before anything secret is checked (unknown names count on a
        // shared record: the same durable write, no record per guessed name).
        let counter_key: Vec<u8> = id.map_or_else(|| b"unknown".to_vec(), |i| i.0.to_vec());
        let mut user: Option<UserRecord> = None;
        let failures = self.write(&ik, |a: &mut AuthTx<'_>| {
            user = match id {
                Some(i) => {
                    a.record(kind::USER, &i.0)?.map(|r| decode_user(&r.value)).transpose()?
                }
                None => None,
            };
            let mut st: LoginState = match a.record(kind::LOGIN, &counter_key)? {
                Some(r) => serde_json::from_slice(&r.value)
                    .map_err(|_| Error::Integrity("login state malformed"))?,
                None => LoginState::default(),
            };
            st.failures = st.failures.saturating_add(1);
            a.put_record(kind::LOGIN, &counter_key, &encode(&st)?)?;
            Ok(st.failures)
        })?;
        let locked = id.is_some() && failures > limit;
        let phc = match &user {
            Some(u) if !locked => u.password.as_str(),
            _ => dummy_phc(self.provider),
        };
        let password_ok =
            PasswordHash::new(phc).is_ok_and(|h| hasher().verify_password(c.password, &h).is_ok());
        if locked {
            return Err(Error::PinLocked);
        }
        let (Some(id), Some(u), true) = (id, user, password_ok) else {
            return Err(Error::PinIncorrect);
        };
        if let Some(bound) = &u.cert_sha256 {
            let presented = c.cert_sha256.unwrap_or_default().to_ascii_lowercase();
            if !bool::from(bound.as_bytes().ct_eq(presented.as_bytes())) {
                return Err(Error::PinIncorrect);
            }
        }
        let mut step = None;
        if let Some(sealed_hex) = &u.totp {
            let (vault, _) = self.require_vault()?;
            let sealed =
                hex::decode(sealed_hex).map_err(|_| Error::Integrity("TOTP secret malformed"))?;
            let secret = vault.open_value(&totp_name(id), &sealed)?;
            let now = now_ms() / 1000;
            step = c.totp.and_then(|code| totp::check(secret.expose_secret(), code, now));
            if step.is_none() {
                return Err(Error::PinIncorrect);
            }
        }
        // Success: the count goes back to zero and the TOTP step is spent (a replayed code is
        // refused even when it is still within its window).
        self.write(&ik, |a| {
            let mut st: LoginState = match a.record(kind::LOGIN, &id.0)? {
                Some(r) => serde_json::from_slice(&r.value)
                    .map_err(|_| Error::Integrity("login state malformed"))?,
                None => LoginState::default(),
            };
            if let Some(s) = step {
                if s <= st.last_step {
                    return Err(Error::PinIncorrect);
                }
                st.last_step = s;
            }
            st.failures = 0;
            a.put_record(kind::LOGIN, &id.0, &encode(&st)?)
        })?;
        Ok(Principal { id, name: u.name, role: u.role })
    }

    /// Sets (or with `None` removes) the grant of `grantee` on the object `h` (crypto officer
    /// only).
    pub fn set_grant(&self, h: u64, grantee: &Grantee, ops: Option<Ops>) -> Result<()> {
        self.admin_gate("set-grant")?;
        let w = self.who();
        if w.role != Some(Role::CryptoOfficer) {
            return Err(Error::ActionProhibited("only crypto officers manage access lists"));
        }
        let o = self.obj(h)?;
        if o.session.is_some() {
            return Err(Error::ActionProhibited("session objects have no access list"));
        }
        let ik = self.unsealed_ik()?;
        let id = match grantee {
            Grantee::User(n) => {
                self.user_id_by_name(n)?.ok_or_else(|| Error::NotFound(n.clone()))?
            }
            Grantee::EveryCryptoUser => EVERY_CRYPTO_USER,
        };
        let key = grant_key(&o.uid, id);
        self.write(&ik, |a| {
            match ops {
                Some(ops) => a.put_record(kind::GRANT, &key, &ops.0.to_be_bytes())?,
                None => {
                    a.delete_record(kind::GRANT, &key)?;
                }
            }
            Ok(())
        })?;
        self.acl_forget();
        Ok(())
    }

    /// The grants on object `h`: (grantee, operations).
    pub fn grants(&self, h: u64) -> Result<Vec<(Grantee, Ops)>> {
        let o = self.obj(h)?;
        let ik = self.unsealed_ik()?;
        let mut out = Vec::new();
        for r in self.store.records(kind::GRANT, &o.uid)? {
            ik.verify_row(&r)?;
            let id = user_id_of(&r.key[16..])?;
            let b: [u8; 4] =
                r.value.as_slice().try_into().map_err(|_| Error::Integrity("grant malformed"))?;
            let ops = Ops(u32::from_be_bytes(b));
            if id == EVERY_CRYPTO_USER {
                out.push((Grantee::EveryCryptoUser, ops));
            } else if let Some(u) = self.user_by_id(id)? {
                out.push((Grantee::User(u.name), ops));
            }
        }
        Ok(out)
    }

    /// Copies every grant of the object `from` to the object `to` inside a write (a copy,
    /// derived or unwrapped object never grants more than its source, and no less).
    pub(crate) fn copy_grants(a: &mut AuthTx<'_>, from: &[u8; 16], to: &[u8; 16]) -> Result<()> {
        for g in a.records(kind::GRANT, from)? {
            let mut key = g.key.clone();
            key[..16].copy_from_slice(to);
            a.put_record(kind::GRANT, &key, &g.value)?;
        }
        Ok(())
    }

    /// Deletes every grant on object `uid` inside a write (the object is being destroyed).
    pub(crate) fn drop_grants(a: &mut AuthTx<'_>, uid: &[u8; 16]) -> Result<()> {
        for g in a.records(kind::GRANT, uid)? {
            a.delete_record(kind::GRANT, &g.key)?;
        }
        Ok(())
    }

    /// Marks the quorum approval with `digest` used (until `not_after`, Unix seconds); refused
    /// when it already was. Expired entries are dropped in the same write.
    pub fn use_approval(&self, digest: &[u8; 32], not_after: u64, now: u64) -> Result<()> {
        let ik = self.unsealed_ik()?;
        self.write(&ik, |a| {
            for r in a.records(kind::APPROVAL, &[])? {
                let t = r.value.as_slice().try_into().map_or(0, u64::from_be_bytes);
                if t <= now {
                    a.delete_record(kind::APPROVAL, &r.key)?;
                }
            }
            if a.record(kind::APPROVAL, digest)?.is_some() {
                return Err(Error::ActionProhibited("these approvals were already used"));
            }
            a.put_record(kind::APPROVAL, digest, &not_after.to_be_bytes())
        })
    }
}

pub(super) fn totp_name(id: UserId) -> Zeroizing<Vec<u8>> {
    let mut n = b"totp:".to_vec();
    n.extend_from_slice(&id.0);
    Zeroizing::new(n)
}
