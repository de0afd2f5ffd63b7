//! Key lifecycle states on the token: the state check of the gate, the audited transitions and
//! date changes, and the clock dates are evaluated against.
//!
//! The state and its dates are attributes of the key (`CKA_BULWARK_*`), so they live in the
//! authenticated object record like every other attribute: editing, deleting or replaying them
//! in the store is caught as tampering, and a backup carries them. Who may change a state is
//! who may manage the key ([`Token::check_manage`]): a role that may only use a key can neither
//! suspend, compromise nor destroy it. Every change is one authenticated write (all the objects
//! named, for a key pair both halves, change together or none does) recorded through
//! [`Token::audited`].

use std::sync::Arc;

use super::guard::Call;
use super::objects::is_key;
use super::{read, write, Material, Obj, Token, Usage};
use crate::attr::Attributes;
use crate::error::{Error, Result};
use crate::lifecycle::{KeyState, Lifecycle, Transition};
use crate::store::Store;

/// New lifecycle dates (Unix seconds); `None` leaves a date as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifecycleDates {
    /// When a pre-activation key becomes active.
    pub activation: Option<u64>,
    /// When the key stops protecting (becomes deactivated).
    pub protect_stop: Option<u64>,
    /// When the key becomes deactivated.
    pub deactivation: Option<u64>,
}

impl LifecycleDates {
    /// Whether no date is given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl<S: Store> Token<S> {
    /// The current time of this token's clock (seconds since the Unix epoch).
    pub fn now(&self) -> u64 {
        read(&self.clock).now()
    }

    /// Replaces the clock lifecycle dates are evaluated against (tests only: the feature
    /// `test-clock` is never built into a release). Prepared keys pass the gate again.
    #[cfg(any(test, feature = "test-clock"))]
    pub fn set_clock(&self, clock: Arc<dyn crate::lifecycle::Clock>) {
        *write(&self.clock) = clock;
        self.bump_epoch();
    }

    /// The gate's lifecycle check: the key's state now must permit `usage`.
    pub(crate) fn check_state(&self, o: &Obj, usage: Usage) -> Result<()> {
        Self::check_present(o)?;
        let l = Lifecycle::of(&o.attrs)?;
        if !l.is_set() {
            return Ok(()); // no lifecycle: active, as every key made before states existed
        }
        l.state_at(self.now()).permits(usage)
    }

    /// Whether key `o` may leave the HSM (wrapped, or in plaintext where that is allowed) in
    /// its state now: a compromised key never does (exported and imported again it would come
    /// back active), and a destroyed key has nothing to export.
    pub(crate) fn check_export_state(&self, o: &Obj) -> Result<()> {
        let l = Lifecycle::of(&o.attrs)?;
        match l.state_at(self.now()) {
            KeyState::Compromised | KeyState::DestroyedCompromised => {
                Err(Error::KeyUnextractable("key is compromised: it may not leave the HSM"))
            }
            KeyState::Destroyed => Err(Error::KeyFunctionNotPermitted("key is destroyed")),
            _ => Ok(()),
        }
    }

    /// When a date next changes the state of the key behind `h` (a prepared key passes the
    /// gate again then).
    pub(crate) fn state_horizon(&self, h: u64) -> Option<u64> {
        let o = self.obj(h).ok()?;
        let now = self.now();
        let dates = Lifecycle::of(&o.attrs).ok()?.next_change_after(now);
        // A due automatic rotation deactivates the version too (versions.rs).
        let rotation = super::versions::rotation_due_at(&o.attrs).filter(|d| *d > now);
        match (dates, rotation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The stored lifecycle of key `h` and its state now. Reading it is not audited, like any
    /// other attribute read.
    ///
    /// # Errors
    /// `ObjectHandleInvalid` when the caller may not see it; `KeyTypeInconsistent` for an
    /// object that is not a key.
    pub fn key_lifecycle(&self, h: u64) -> Result<(Lifecycle, KeyState)> {
        let o = self.obj(h)?;
        if !is_key(&o.attrs) {
            return Err(Error::KeyTypeInconsistent);
        }
        let l = Lifecycle::of(&o.attrs)?;
        Ok((l, l.state_at(self.now())))
    }

    /// Moves the keys behind `handles` (one key, or both halves of a pair) through transition
    /// `t`, in one authenticated write, audited as `key-state`. Each key's state now (dates
    /// applied) must allow `t` ([`crate::lifecycle::TRANSITIONS`]); otherwise nothing changes.
    /// A destroy removes the material from the store and keeps every attribute. Returns each
    /// key's new state.
    ///
    /// # Errors
    /// `ActionProhibited` for a transition the table refuses or a caller who may not manage the
    /// key; `ObjectHandleInvalid` for a key the caller cannot see.
    pub fn transition_keys(&self, handles: &[u64], t: Transition) -> Result<Vec<KeyState>> {
        let first = handles.first().copied();
        for h in handles {
            let _ = self.obj(*h); // loaded, so the record can name it
        }
        let mut c = Call::new("key-state");
        c.handle = first;
        let r = self.precheck(&c).and_then(|()| self.transition_unaudited(handles, t));
        let detail = match &r {
            Ok(states) => {
                let to = states.first().map_or("-", |s| s.name());
                format!("{} -> {to}", t.name())
            }
            Err(_) => t.name().to_owned(),
        };
        self.finish(&c, r, detail)
    }

    /// Sets lifecycle dates of the keys behind `handles` in one authenticated write, audited as
    /// `key-dates`. The activation date can be set only before a key is active (it then starts
    /// in pre-activation), the stop dates only before it is deactivated; stop dates must come
    /// after the activation date.
    ///
    /// # Errors
    /// `ActionProhibited` / `ArgumentsBad` with the reason; nothing changes.
    pub fn set_key_dates(&self, handles: &[u64], dates: LifecycleDates) -> Result<()> {
        let mut c = Call::new("key-dates");
        c.handle = handles.first().copied();
        for h in handles {
            let _ = self.obj(*h);
        }
        let r = self.precheck(&c).and_then(|()| self.set_dates_unaudited(handles, dates));
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |d| d.to_string());
        let detail = format!(
            "activation={} protect-stop={} deactivation={}",
            show(dates.activation),
            show(dates.protect_stop),
            show(dates.deactivation)
        );
        self.finish(&c, r, detail)
    }

    fn transition_unaudited(&self, handles: &[u64], t: Transition) -> Result<Vec<KeyState>> {
        let now = self.now();
        self.change_lifecycles(handles, t == Transition::Destroy, |attrs, l| {
            if t == Transition::Destroy && !attrs.bool_or(crate::attr::AttrType::Destroyable, true)
            {
                return Err(Error::ActionProhibited("object is not destroyable"));
            }
            l.after(t, now)
        })
    }

    fn set_dates_unaudited(&self, handles: &[u64], d: LifecycleDates) -> Result<()> {
        if d.is_empty() {
            return Err(Error::ArgumentsBad("no date given"));
        }
        let now = self.now();
        self.change_lifecycles(handles, false, |_, l| {
            l.with_dates(now, d.activation, d.protect_stop, d.deactivation)
        })
        .map(|_| ())
    }

    /// Checks that the caller may manage every key, then computes each key's new lifecycle
    /// with `f` (all must succeed) and stores them in one write; `drop_material` removes the
    /// keys' material too. For token objects `f` runs on the row as the write transaction reads
    /// it, so a concurrent change (another process compromising the key) is never overwritten
    /// with a decision made on an older state.
    fn change_lifecycles(
        &self,
        handles: &[u64],
        drop_material: bool,
        f: impl Fn(&Attributes, &Lifecycle) -> Result<Lifecycle>,
    ) -> Result<Vec<KeyState>> {
        if handles.is_empty() {
            return Err(Error::ArgumentsBad("no key given"));
        }
        let w = self.who();
        let now = self.now();
        let mut objs: Vec<Arc<Obj>> = Vec::new();
        for h in handles {
            let o = self.obj(*h)?;
            self.check_manage(&w, &o)?;
            if !is_key(&o.attrs) {
                return Err(Error::ActionProhibited("only keys have a lifecycle state"));
            }
            // Checked here too, so that a refusal changes nothing anywhere.
            f(&o.attrs, &Lifecycle::of(&o.attrs)?)?;
            objs.push(o);
        }
        let token: Vec<&Arc<Obj>> = objs.iter().filter(|o| o.session.is_none()).collect();
        let mut states: std::collections::HashMap<u64, KeyState> = std::collections::HashMap::new();
        if !token.is_empty() {
            let (_, ik) = self.require_vault()?;
            let done = self.write(&ik, |a| {
                let mut done = Vec::new();
                for o in &token {
                    let row = a.object(o.handle)?.ok_or(Error::ObjectHandleInvalid)?;
                    if row.uid != o.uid {
                        return Err(Error::ObjectHandleInvalid);
                    }
                    let mut attrs = Attributes::decode(&row.attrs)?;
                    let next = f(&attrs, &Lifecycle::of(&attrs)?)?;
                    next.store_in(&mut attrs);
                    let mut new_row = row.clone();
                    new_row.attrs = attrs.encode();
                    if drop_material {
                        new_row.secret = None;
                    }
                    a.update_object(&new_row)?;
                    done.push((o.handle, next.state_at(now)));
                }
                Ok(done)
            })?;
            states.extend(done);
        }
        {
            let mut session = write(&self.session_objects);
            for o in objs.iter().filter(|o| o.session.is_some()) {
                let cur = session.get(&o.handle).cloned().ok_or(Error::ObjectHandleInvalid)?;
                let mut attrs = cur.attrs.clone();
                let next = f(&attrs, &Lifecycle::of(&attrs)?)?;
                next.store_in(&mut attrs);
                let material = match &cur.material {
                    Material::Plain(m) if !drop_material => {
                        Material::Plain(crate::crypto::KeyMaterial::new(
                            m.spec(),
                            crate::secret::SecretBytes::from_slice(m.expose_secret()),
                        ))
                    }
                    _ => Material::None,
                };
                let n = Obj {
                    handle: cur.handle,
                    uid: cur.uid,
                    attrs,
                    material,
                    mac: Vec::new(),
                    session: cur.session,
                    login: cur.login,
                    verified: true,
                };
                session.insert(o.handle, Arc::new(n));
                states.insert(o.handle, next.state_at(now));
            }
        }
        {
            let mut c = write(&self.cache);
            for o in &objs {
                c.objects.remove(&o.handle);
                c.keys.remove(&o.handle);
            }
        }
        self.bump_epoch();
        handles.iter().map(|h| states.get(h).copied().ok_or(Error::ObjectHandleInvalid)).collect()
    }
}
