//! The gate: what the caller of an operation may see, use, manage and create. Every object the
//! token serves passes [`Token::may_see`]; every key use passes [`Token::check_use`]; every
//! change passes [`Token::check_manage`] or [`Token::check_create`]. Nothing else in the token
//! decides access, and no front door does.
//!
//! The caller is the principal a front door set for this thread ([`crate::kernel::as_caller`]:
//! the daemon), else the token's own PKCS#11 login ([`crate::kernel::EMBEDDED_SO`],
//! [`crate::kernel::EMBEDDED_USER`]), else nobody. A front-door caller's role is re-read from
//! the store on every check (cached until the store changes), so a deleted user's sessions die
//! with the user and a demoted officer loses its rights at once.
//!
//! | role | sees | uses | creates / changes / destroys |
//! |---|---|---|---|
//! | nobody, auditor, security officer | public objects, own session objects | public keys (embedded only) | public objects (SO; the embedded token also lets a public session make public objects) |
//! | crypto officer (the embedded CKU_USER) | everything | every key | everything |
//! | crypto user | non-key objects, keys it holds a grant on, own session objects | granted operations, own session objects | own session objects only |
//!
//! Session objects belong to the login that made them and are invisible to every other login.
//! Only the security officer sets CKA_TRUSTED.

use std::collections::HashMap;

use super::{read, write, Obj, Token, Usage};
use crate::attr::{AttrType, Attributes, ObjectClass};
use crate::error::{Error, Result};
use crate::kernel::{self, Ops, Role, UserId, Who, EMBEDDED_SO, EMBEDDED_USER, EVERY_CRYPTO_USER};
use crate::store::Store;

/// Cached answers of the gate, valid for one store change counter (and cleared by this
/// process's own writes to users and grants).
#[derive(Default)]
pub(crate) struct AclCache {
    pub(crate) change: u64,
    roles: HashMap<UserId, Option<Role>>,
    grants: HashMap<([u8; 16], UserId), Ops>,
}

impl Usage {
    /// The grant operation that allows this usage.
    pub(crate) fn op(self) -> Ops {
        match self {
            Usage::Sign => Ops::SIGN,
            Usage::Verify => Ops::VERIFY,
            Usage::Encrypt => Ops::ENCRYPT,
            Usage::Decrypt => Ops::DECRYPT,
            Usage::Wrap => Ops::WRAP,
            Usage::Unwrap => Ops::UNWRAP,
            Usage::Derive => Ops::DERIVE,
            Usage::Encapsulate => Ops::ENCAPSULATE,
            Usage::Decapsulate => Ops::DECAPSULATE,
        }
    }
}

fn is_key(a: &Attributes) -> bool {
    matches!(
        a.class(),
        Some(ObjectClass::PrivateKey | ObjectClass::SecretKey | ObjectClass::PublicKey)
    )
}

impl<S: Store> Token<S> {
    /// The caller of the current operation, with its current role.
    pub(crate) fn who(&self) -> Who {
        if let Some(mut w) = kernel::current_who() {
            w.role = w.id.and_then(|id| self.current_role(id));
            return w;
        }
        match self.logged_in() {
            Some(super::UserType::So) => Who {
                id: Some(EMBEDDED_SO),
                role: Some(Role::SecurityOfficer),
                login: 0,
                remote: false,
            },
            Some(super::UserType::User) => Who {
                id: Some(EMBEDDED_USER),
                role: Some(Role::CryptoOfficer),
                login: 0,
                remote: false,
            },
            None => Who { id: None, role: None, login: 0, remote: false },
        }
    }

    /// Drops cached roles and grants if another connection committed since they were read
    /// (asked of the store itself: a demotion by another token applies at once).
    fn acl_sync(&self) {
        let now = self.store.change_counter().unwrap_or(u64::MAX);
        if read(&self.acl).change != now {
            let mut a = write(&self.acl);
            *a = AclCache { change: now, ..AclCache::default() };
        }
    }

    /// Forgets cached roles and grants (after this process changed users or grants).
    pub(crate) fn acl_forget(&self) {
        let mut a = write(&self.acl);
        a.roles.clear();
        a.grants.clear();
    }

    /// The current role of a front-door principal (`None`: no such user any more).
    fn current_role(&self, id: UserId) -> Option<Role> {
        self.acl_sync();
        if let Some(r) = read(&self.acl).roles.get(&id) {
            return *r;
        }
        let role = self.user_by_id(id).ok().flatten().map(|u| u.role);
        write(&self.acl).roles.insert(id, role);
        role
    }

    /// The operations a crypto user holds on the object with `uid`: its own grant and the
    /// grant to every crypto user.
    pub(crate) fn grant_ops(&self, uid: &[u8; 16], user: UserId) -> Ops {
        self.grant_ops_of(uid, user).with(self.grant_ops_of(uid, EVERY_CRYPTO_USER))
    }

    fn grant_ops_of(&self, uid: &[u8; 16], user: UserId) -> Ops {
        self.acl_sync();
        if let Some(o) = read(&self.acl).grants.get(&(*uid, user)) {
            return *o;
        }
        let ops = self.grant_of(uid, user).unwrap_or_default();
        write(&self.acl).grants.insert((*uid, user), ops);
        ops
    }

    /// Whether `w` may see object `o` (invisible objects are `ObjectHandleInvalid`, exactly
    /// like objects that do not exist).
    pub(crate) fn may_see(&self, w: &Who, o: &Obj) -> bool {
        let private = o.attrs.bool_or(AttrType::Private, true);
        if o.session.is_some() && o.login != w.login {
            return false;
        }
        match w.role {
            Some(Role::CryptoOfficer) => true,
            Some(Role::CryptoUser) => {
                o.session.is_some()
                    || !is_key(&o.attrs)
                    || w.id.is_some_and(|id| self.grant_ops(&o.uid, id).0 != 0)
            }
            Some(Role::SecurityOfficer | Role::Auditor) | None => !private,
        }
    }

    /// Whether `w` may use key `o` for `usage` (after [`Token::may_see`]).
    pub(crate) fn check_use(&self, w: &Who, o: &Obj, usage: Usage) -> Result<()> {
        if !self.may_see(w, o) {
            return Err(Error::ObjectHandleInvalid);
        }
        // The key's own usage policy (usepolicy.rs): its allowed principals bind every role.
        self.check_principals(w, o)?;
        match w.role {
            Some(Role::CryptoOfficer) => Ok(()),
            Some(Role::CryptoUser) if o.session.is_some() => Ok(()),
            Some(Role::CryptoUser) => {
                let granted =
                    w.id.is_some_and(|id| self.grant_ops(&o.uid, id).contains(usage.op()));
                if granted {
                    Ok(())
                } else {
                    tracing::warn!(op = ?usage, "key use not in the caller's access list");
                    Err(Error::KeyFunctionNotPermitted("not in your access list"))
                }
            }
            // The PKCS#11 spec lets any session use the public objects it sees; a front door's
            // security officer or auditor uses no key at all.
            _ if w.remote => Err(Error::ActionProhibited("this role uses no keys")),
            _ => Ok(()),
        }
    }

    /// Whether `w` may wrap `o` out of the token (as the target of `C_WrapKey`).
    pub(crate) fn check_export(&self, w: &Who, o: &Obj) -> Result<()> {
        if !self.may_see(w, o) {
            return Err(Error::ObjectHandleInvalid);
        }
        match w.role {
            Some(Role::CryptoOfficer) => Ok(()),
            Some(Role::CryptoUser) if o.session.is_some() => Ok(()),
            Some(Role::CryptoUser)
                if w.id.is_some_and(|id| self.grant_ops(&o.uid, id).contains(Ops::EXPORT)) =>
            {
                Ok(())
            }
            _ => {
                Err(Error::KeyFunctionNotPermitted("exporting this key is not in your access list"))
            }
        }
    }

    /// Whether `w` may change, copy or destroy object `o`.
    pub(crate) fn check_manage(&self, w: &Who, o: &Obj) -> Result<()> {
        if !self.may_see(w, o) {
            return Err(Error::ObjectHandleInvalid);
        }
        let private = o.attrs.bool_or(AttrType::Private, true);
        match w.role {
            Some(Role::CryptoOfficer) => Ok(()),
            _ if o.session.is_some() && (!w.remote || w.role.is_some_and(Role::uses_keys)) => {
                Ok(())
            }
            Some(Role::SecurityOfficer) if !private => Ok(()),
            None if !w.remote && !private => Ok(()),
            Some(Role::CryptoUser) => Err(Error::ActionProhibited(
                "crypto users may not create, change or destroy token objects",
            )),
            _ => Err(Error::ActionProhibited("this role may not change this object")),
        }
    }

    /// Whether `w` may create an object with these (complete) attributes.
    #[allow(clippy::unused_self)] // a method like the other checks of the gate
    pub(crate) fn check_create(&self, w: &Who, a: &Attributes) -> Result<()> {
        if a.bool_or(AttrType::Trusted, false) && w.role != Some(Role::SecurityOfficer) {
            return Err(Error::AttributeReadOnly(AttrType::Trusted));
        }
        let token = a.bool_or(AttrType::Token, false);
        let private = a.bool_or(AttrType::Private, true);
        match w.role {
            Some(Role::CryptoUser) if token => Err(Error::ActionProhibited(
                "crypto users may not create, change or destroy token objects",
            )),
            Some(Role::CryptoOfficer | Role::CryptoUser) => Ok(()),
            _ if private => Err(Error::UserNotLoggedIn),
            Some(Role::SecurityOfficer) => Ok(()),
            None if !w.remote => Ok(()),
            _ => Err(Error::ActionProhibited("this role may not create objects")),
        }
    }

    /// Refuses a change that sets CKA_TRUSTED unless the caller is the security officer.
    #[allow(clippy::unused_self)] // a method like the other checks of the gate
    pub(crate) fn check_trusted_change(
        &self,
        w: &Who,
        t: &crate::template::Template,
    ) -> Result<()> {
        let sets_trusted = t
            .iter()
            .any(|(k, v)| *k == AttrType::Trusted && *v == crate::attr::AttrValue::Bool(true));
        if sets_trusted && w.role != Some(Role::SecurityOfficer) {
            return Err(Error::AttributeReadOnly(AttrType::Trusted));
        }
        Ok(())
    }
}
