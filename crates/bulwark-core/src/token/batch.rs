//! Batches: one gate and one durable audit commit for many items with the same key (the
//! daemon's `BatchSign` / `BatchEncrypt`).

use super::guard::Call;
use super::{outbox, KeyRef, Token, Usage};
use crate::audit::{self, AuditEvent};
use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::store::Store;

impl<S: Store> Token<S> {
    /// Signs every item of `items` with key `h` and `mech`: the policy gate runs once, and the
    /// items' audit records (one per item, exactly as single `sign` calls would write them)
    /// are appended in **one** durable commit before any result is returned. A failing item
    /// fails the batch (every item's own result is recorded). For a front door serving batch
    /// requests (the daemon's `BatchSign`).
    pub fn sign_batch(&self, h: u64, mech: &Mechanism, items: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        self.batch(h, Usage::Sign, mech, items.len(), |key, i| match key {
            KeyRef::Private(k) => k.sign(self.provider, mech, &items[i]),
            KeyRef::Public(_) => Err(Error::KeyTypeInconsistent),
        })
    }

    /// Encrypts every item with key `h`, each with its own mechanism (their own IVs; all of
    /// the type of the first), with the records in one durable commit as in
    /// [`Token::sign_batch`].
    pub fn encrypt_batch(&self, h: u64, items: &[(Mechanism, Vec<u8>)]) -> Result<Vec<Vec<u8>>> {
        let Some((first, _)) = items.first() else { return Ok(Vec::new()) };
        if items.iter().any(|(m, _)| m.ck_type() != first.ck_type()) {
            return Err(Error::ArgumentsBad("a batch uses one mechanism type"));
        }
        self.batch(h, Usage::Encrypt, first, items.len(), |key, i| {
            let (m, data) = &items[i];
            match key {
                KeyRef::Private(k) => k.encrypt(self.provider, m, data),
                KeyRef::Public(k) => k.encrypt(self.provider, m, data),
            }
        })
    }

    fn batch<T>(
        &self,
        h: u64,
        usage: Usage,
        mech: &Mechanism,
        count: usize,
        item: impl Fn(&KeyRef, usize) -> Result<T>,
    ) -> Result<Vec<T>> {
        let op = match usage {
            Usage::Sign => "sign",
            Usage::Encrypt => "encrypt",
            _ => return Err(Error::ArgumentsBad("batches are for sign and encrypt")),
        };
        let c = Call::new(op).obj(h).mech(mech.ck_type());
        let n = u64::try_from(count).unwrap_or(u64::MAX);
        let key = match self
            .precheck_at(&c)
            .and_then(|seen| self.key_for_at(h, usage, mech, Some(seen), n).map(|(k, _)| k))
        {
            Ok(k) => k,
            Err(e) => return self.finish(&c, Err(e), String::new()),
        };
        let results: Vec<Result<T>> = (0..count).map(|i| item(&key, i)).collect();
        let class = self.guard.policy.audit_key_use.class();
        if let (Some(log), Some(audit::Durability::Bounded)) = (&self.guard.log, class) {
            if results.iter().all(Result::is_ok) {
                // Bounded and all succeeded: counted like single uses (a broken log refuses).
                log.check_usable()?;
                if let Some(n) = self.cached_counter(Some(h), op, Some(mech.ck_type()), 0, None) {
                    n.add(u64::try_from(count).unwrap_or(u64::MAX));
                }
                outbox::end();
                return results.into_iter().collect();
            }
        }
        if let Some(log) = &self.guard.log {
            let (object, label) = self.describe(h);
            let actor = self.actor(None);
            let every = class.is_some();
            let evs: Vec<AuditEvent> = results
                .iter()
                .filter(|r| every || r.is_err())
                .map(|r| AuditEvent {
                    actor: actor.clone(),
                    session: 0,
                    op,
                    mechanism: Some(mech.ck_type()),
                    object: object.clone(),
                    label: label.clone(),
                    result: audit::result_code(r),
                    detail: String::new(),
                })
                .collect();
            if !evs.is_empty() {
                // No result leaves before its record is sequenced; durable before the reply
                // unless every item succeeded under the bounded key-use policy.
                let all_ok = results.iter().all(Result::is_ok);
                let class = class.filter(|_| all_ok).unwrap_or(audit::Durability::Durable);
                log.append_all_with(&evs, class)?;
            }
        }
        outbox::end();
        results.into_iter().collect()
    }
}
