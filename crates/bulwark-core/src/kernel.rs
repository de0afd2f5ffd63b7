//! The security kernel's vocabulary: roles, principals, the caller of an operation, and the
//! operations a grant can allow (DESIGN.md §5).
//!
//! Identity is by id, never by name or label: a [`UserId`] is 16 random bytes fixed when the
//! user is created and never reused, so a grant or a session cannot pass to a later user of the
//! same name. Front doors only authenticate and translate: the daemon maps a TLS identity plus
//! password (plus TOTP) to a principal with [`crate::Token::authenticate`] and runs each request
//! under [`as_caller`]; the PKCS#11 module's CKU_SO / CKU_USER logins are the embedded
//! principals [`EMBEDDED_SO`] and [`EMBEDDED_USER`]. Every decision about what a caller may see
//! and do is made by the token's gate (`token/gate.rs`) from the current store state.

use serde::{Deserialize, Serialize};

use crate::audit::Actor;

/// A role (DESIGN.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Security officer: users, policy, seal, zeroize, tamper; sets CKA_TRUSTED; uses no key.
    SecurityOfficer,
    /// Creates and manages keys, and uses them.
    CryptoOfficer,
    /// Uses the keys it is granted, and its own session objects.
    CryptoUser,
    /// Reads and exports the audit log.
    Auditor,
}

impl Role {
    /// The role's name on the wire, in files and in audit records.
    pub fn name(self) -> &'static str {
        match self {
            Role::SecurityOfficer => "security-officer",
            Role::CryptoOfficer => "crypto-officer",
            Role::CryptoUser => "crypto-user",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role name (also the short forms `so`, `officer`, `user`, `auditor`).
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "security-officer" | "so" => Role::SecurityOfficer,
            "crypto-officer" | "officer" | "co" => Role::CryptoOfficer,
            "crypto-user" | "user" | "cu" => Role::CryptoUser,
            "auditor" => Role::Auditor,
            _ => return None,
        })
    }

    /// Whether the role performs cryptography with keys.
    pub fn uses_keys(self) -> bool {
        matches!(self, Role::CryptoOfficer | Role::CryptoUser)
    }
}

/// A principal's permanent id: 16 random bytes, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub [u8; 16]);

impl UserId {
    /// Hex form (audit records, the API).
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parses the hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(Self(v.try_into().ok()?))
    }
}

/// The security officer of a PIN store (`CKU_SO`).
pub const EMBEDDED_SO: UserId = UserId(*b"bulwark:pin:so\0\0");
/// The user of a PIN store (`CKU_USER`): a crypto officer of its own token.
pub const EMBEDDED_USER: UserId = UserId(*b"bulwark:pin:user");

/// The pseudo-principal a grant to the role crypto user names: every crypto user, present and
/// future (`role:crypto-user` in the daemon's API).
pub const EVERY_CRYPTO_USER: UserId = UserId(*b"bulwark:role:cu\0");

/// Who a grant is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grantee {
    /// One user, by name (resolved to its id when the grant is made).
    User(String),
    /// Every crypto user.
    EveryCryptoUser,
}

impl Grantee {
    /// Parses `user:NAME` or `role:crypto-user`.
    pub fn parse(s: &str) -> crate::Result<Grantee> {
        match s.split_once(':') {
            Some(("user", n)) => {
                check_user_name(n)?;
                Ok(Grantee::User(n.to_owned()))
            }
            Some(("role", r)) if Role::parse(r) == Some(Role::CryptoUser) => {
                Ok(Grantee::EveryCryptoUser)
            }
            _ => Err(crate::Error::ArgumentsBad(
                "a grant is for user:NAME or role:crypto-user (officers use every key; other roles use none)",
            )),
        }
    }

    /// The wire form.
    pub fn to_wire(&self) -> String {
        match self {
            Grantee::User(n) => format!("user:{n}"),
            Grantee::EveryCryptoUser => "role:crypto-user".to_owned(),
        }
    }
}

/// An authenticated principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Permanent id.
    pub id: UserId,
    /// Login name (validated: see [`check_user_name`]).
    pub name: String,
    /// Role at authentication time (the gate re-reads the current one).
    pub role: Role,
}

/// Who calls: an authenticated principal, the login (session) it acts in, and its client.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The principal.
    pub principal: Principal,
    /// The login that owns session objects created in this call: objects of one login are
    /// invisible to every other.
    pub login: u64,
    /// Client identity (mTLS subject and peer, or process) for audit records.
    pub client: String,
}

impl Caller {
    /// The audit identity of this caller.
    pub fn actor(&self) -> Actor {
        Actor {
            name: self.principal.name.clone(),
            role: self.principal.role.name().to_owned(),
            client: self.client.clone(),
        }
    }
}

/// Who an operation is checked for: the fields of a caller the gate needs, copyable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Who {
    pub(crate) id: Option<UserId>,
    pub(crate) role: Option<Role>,
    pub(crate) login: u64,
    /// True for a caller set by a front door ([`as_caller`]); false for the embedded login.
    pub(crate) remote: bool,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Caller>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `caller` as the principal of every token operation it performs on this
/// thread (and as the audit actor). A front door that authenticates its own users wraps each
/// request in this.
pub fn as_caller<T>(caller: Caller, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Caller>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
        }
    }
    let actor = caller.actor();
    let prev = CURRENT.with(|c| c.borrow_mut().replace(caller));
    let _restore = Restore(prev);
    crate::audit::with_actor(actor, f)
}

/// The caller set by [`as_caller`] on this thread, if any.
pub fn current_caller() -> Option<Caller> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// The gate's view of the caller set by [`as_caller`], without cloning strings.
pub(crate) fn current_who() -> Option<Who> {
    CURRENT
        .try_with(|c| {
            c.borrow().as_ref().map(|c| Who {
                id: Some(c.principal.id),
                role: Some(c.principal.role),
                login: c.login,
                remote: true,
            })
        })
        .ok()
        .flatten()
}

/// Checks a user name (see [`crate::limits::check_user_name`]: names end up in log lines, audit
/// records and terminals, so no control characters and no spaces).
pub use crate::limits::check_user_name;

/// The operations a grant allows on one key (a bit set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ops(pub u32);

impl Ops {
    /// Sign or MAC.
    pub const SIGN: Ops = Ops(1);
    /// Verify.
    pub const VERIFY: Ops = Ops(1 << 1);
    /// Encrypt.
    pub const ENCRYPT: Ops = Ops(1 << 2);
    /// Decrypt.
    pub const DECRYPT: Ops = Ops(1 << 3);
    /// Wrap other keys with this key.
    pub const WRAP: Ops = Ops(1 << 4);
    /// Unwrap keys with this key.
    pub const UNWRAP: Ops = Ops(1 << 5);
    /// Derive keys from this key.
    pub const DERIVE: Ops = Ops(1 << 6);
    /// KEM encapsulation.
    pub const ENCAPSULATE: Ops = Ops(1 << 7);
    /// KEM decapsulation.
    pub const DECAPSULATE: Ops = Ops(1 << 8);
    /// Read the public key and see the key.
    pub const PUBLIC: Ops = Ops(1 << 9);
    /// Let this key leave wrapped under another key (`C_WrapKey` with it as the target).
    pub const EXPORT: Ops = Ops(1 << 10);
    /// Everything.
    pub const ALL: Ops = Ops((1 << 11) - 1);

    const NAMES: [(&'static str, Ops); 11] = [
        ("sign", Ops::SIGN),
        ("verify", Ops::VERIFY),
        ("encrypt", Ops::ENCRYPT),
        ("decrypt", Ops::DECRYPT),
        ("wrap", Ops::WRAP),
        ("unwrap", Ops::UNWRAP),
        ("derive", Ops::DERIVE),
        ("encapsulate", Ops::ENCAPSULATE),
        ("decapsulate", Ops::DECAPSULATE),
        ("public", Ops::PUBLIC),
        ("export", Ops::EXPORT),
    ];

    /// Whether every operation of `o` is in `self`.
    pub fn contains(self, o: Ops) -> bool {
        self.0 & o.0 == o.0 && o.0 != 0
    }

    /// Union.
    #[must_use]
    pub fn with(self, o: Ops) -> Ops {
        Ops(self.0 | o.0)
    }

    /// Parses operation names (`sign`, `verify`, ..., `*` for all).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> crate::Result<Ops> {
        let mut ops = Ops::default();
        for n in names {
            if n == "*" {
                ops = Ops::ALL;
                continue;
            }
            let (_, o) = Ops::NAMES
                .iter()
                .find(|(name, _)| *name == n)
                .ok_or(crate::Error::ArgumentsBad("unknown operation name in a grant"))?;
            ops = ops.with(*o);
        }
        if ops.0 == 0 {
            return Err(crate::Error::ArgumentsBad("a grant needs at least one operation"));
        }
        Ok(ops)
    }

    /// The operation names (`*` when all).
    pub fn names(self) -> Vec<&'static str> {
        if self == Ops::ALL {
            return vec!["*"];
        }
        Ops::NAMES.iter().filter(|(_, o)| self.contains(*o)).map(|(n, _)| *n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_parse_and_names_round_trip() {
        let o = Ops::parse(["sign", "verify"]).unwrap();
        assert!(o.contains(Ops::SIGN) && o.contains(Ops::VERIFY) && !o.contains(Ops::DECRYPT));
        assert_eq!(o.names(), vec!["sign", "verify"]);
        assert_eq!(Ops::parse(["*"]).unwrap(), Ops::ALL);
        assert!(Ops::parse(["sign", "bogus"]).is_err());
        assert!(Ops::parse([]).is_err());
        assert!(!Ops::default().contains(Ops::default()));
    }

    #[test]
    fn names_are_validated() {
        assert!(check_user_name("alice.o@x-1").is_ok());
        for bad in ["", "a b", "a\nb", "\u{1b}[31m", &"x".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn caller_is_thread_local_and_restored() {
        let c = Caller {
            principal: Principal { id: UserId([7; 16]), name: "a".into(), role: Role::CryptoUser },
            login: 9,
            client: "t".into(),
        };
        assert!(current_who().is_none());
        as_caller(c, || {
            let w = current_who().unwrap();
            assert_eq!((w.id, w.role, w.login), (Some(UserId([7; 16])), Some(Role::CryptoUser), 9));
            assert_eq!(crate::audit::current_actor().unwrap().name, "a");
        });
        assert!(current_who().is_none());
        assert!(crate::audit::current_actor().is_none());
    }
}
