//! Key lifecycle states (NIST SP 800-57 Part 1, with KMIP's names), the one table of allowed
//! transitions, the date rules that move a key without anyone acting, and which key uses each
//! state permits. Pure functions only: the token (`token/lifecycle.rs`) stores the state with
//! the key's other attributes, inside the authenticated record, and its gate asks
//! [`KeyState::permits`] on every use.
//!
//! A key without a stored state (every key made before lifecycle states existed, and every key
//! made without lifecycle options, as the PKCS#11 drop-in does) is [`KeyState::Active`]: its
//! behaviour does not change.
//!
//! Nothing here reads the system clock directly: the time comes from a [`Clock`], so tests can
//! move it.

use std::sync::Arc;

use crate::attr::{AttrType, Attributes};
use crate::error::{Error, Result};
use crate::token::Usage;

/// A key's lifecycle state. The numeric values are KMIP's `State` enumeration; `Suspended`,
/// which KMIP does not have, takes a value from KMIP's extension range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyState {
    /// Generated, not yet usable (KMIP `Pre-Active`).
    PreActivation,
    /// Usable for everything its usage flags allow.
    Active,
    /// Temporarily unusable; may be resumed.
    Suspended,
    /// Past its protection period: only processes old data (verify, decrypt, unwrap).
    Deactivated,
    /// Known or suspected to be compromised: only processes old data.
    Compromised,
    /// Material removed; metadata and audit history kept.
    Destroyed,
    /// Destroyed, and known or suspected to have been compromised.
    DestroyedCompromised,
}

impl KeyState {
    /// Every state, in lifecycle order.
    pub const ALL: &'static [KeyState] = &[
        KeyState::PreActivation,
        KeyState::Active,
        KeyState::Suspended,
        KeyState::Deactivated,
        KeyState::Compromised,
        KeyState::Destroyed,
        KeyState::DestroyedCompromised,
    ];

    /// The stored (and PKCS#11 vendor attribute) value: KMIP's enumeration.
    pub fn to_raw(self) -> u64 {
        match self {
            KeyState::PreActivation => 1,
            KeyState::Active => 2,
            KeyState::Deactivated => 3,
            KeyState::Compromised => 4,
            KeyState::Destroyed => 5,
            KeyState::DestroyedCompromised => 6,
            KeyState::Suspended => 0x8000_0001,
        }
    }

    /// From the stored value; `None` when unknown.
    pub fn from_raw(v: u64) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.to_raw() == v)
    }

    /// The name people and scripts use (`pre-activation`, `destroyed-compromised`...).
    pub fn name(self) -> &'static str {
        match self {
            KeyState::PreActivation => "pre-activation",
            KeyState::Active => "active",
            KeyState::Suspended => "suspended",
            KeyState::Deactivated => "deactivated",
            KeyState::Compromised => "compromised",
            KeyState::Destroyed => "destroyed",
            KeyState::DestroyedCompromised => "destroyed-compromised",
        }
    }

    /// Whether a key in this state may be used for `usage`: active keys for everything;
    /// deactivated and compromised keys only to process old data (verify, decrypt, unwrap,
    /// decapsulate); every other state for nothing.
    ///
    /// # Errors
    /// `KeyFunctionNotPermitted` naming the state.
    pub fn permits(self, usage: Usage) -> Result<()> {
        let processes =
            matches!(usage, Usage::Verify | Usage::Decrypt | Usage::Unwrap | Usage::Decapsulate);
        match self {
            KeyState::Active => Ok(()),
            KeyState::Deactivated | KeyState::Compromised if processes => Ok(()),
            KeyState::Deactivated => Err(Error::KeyFunctionNotPermitted(
                "key is deactivated: it may only verify, decrypt and unwrap",
            )),
            KeyState::Compromised => Err(Error::KeyFunctionNotPermitted(
                "key is compromised: it may only verify, decrypt and unwrap",
            )),
            KeyState::PreActivation => {
                Err(Error::KeyFunctionNotPermitted("key is not yet active (pre-activation)"))
            }
            KeyState::Suspended => Err(Error::KeyFunctionNotPermitted("key is suspended")),
            KeyState::Destroyed | KeyState::DestroyedCompromised => {
                Err(Error::KeyFunctionNotPermitted("key is destroyed"))
            }
        }
    }

    /// Whether the key still holds material in this state.
    pub fn has_material(self) -> bool {
        !matches!(self, KeyState::Destroyed | KeyState::DestroyedCompromised)
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KeyState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or(Error::ArgumentsBad("unknown key state"))
    }
}

/// An explicit change of state, asked for by someone allowed to manage the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// pre-activation → active.
    Activate,
    /// active → suspended.
    Suspend,
    /// suspended → active.
    Resume,
    /// active or suspended → deactivated.
    Deactivate,
    /// any live state → compromised; destroyed → destroyed-compromised.
    Compromise,
    /// pre-activation, deactivated → destroyed; compromised → destroyed-compromised. Removes
    /// the material, keeps the metadata.
    Destroy,
}

impl Transition {
    /// Every transition.
    pub const ALL: &'static [Transition] = &[
        Transition::Activate,
        Transition::Suspend,
        Transition::Resume,
        Transition::Deactivate,
        Transition::Compromise,
        Transition::Destroy,
    ];

    /// The name used by the CLI, the daemon API and audit records.
    pub fn name(self) -> &'static str {
        match self {
            Transition::Activate => "activate",
            Transition::Suspend => "suspend",
            Transition::Resume => "resume",
            Transition::Deactivate => "deactivate",
            Transition::Compromise => "compromise",
            Transition::Destroy => "destroy",
        }
    }

    /// Why this transition is refused from a state not in the table.
    fn refusal(self) -> &'static str {
        match self {
            Transition::Activate => "only a pre-activation key can be activated",
            Transition::Suspend => "only an active key can be suspended",
            Transition::Resume => "only a suspended key can be resumed",
            Transition::Deactivate => "only an active or suspended key can be deactivated",
            Transition::Compromise => "the key is already marked compromised",
            Transition::Destroy => {
                "only a pre-activation, deactivated or compromised key can be destroyed \
                 (deactivate an active or suspended key first)"
            }
        }
    }
}

impl std::str::FromStr for Transition {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or(Error::ArgumentsBad("unknown key state transition"))
    }
}

/// The allowed transitions (NIST SP 800-57 Part 1 Rev. 5 §7, with suspension): `(from, what,
/// to)`. Every pair not listed is refused.
pub const TRANSITIONS: &[(KeyState, Transition, KeyState)] = {
    use KeyState as S;
    use Transition as T;
    &[
        (S::PreActivation, T::Activate, S::Active),
        (S::PreActivation, T::Compromise, S::Compromised),
        (S::PreActivation, T::Destroy, S::Destroyed),
        (S::Active, T::Suspend, S::Suspended),
        (S::Active, T::Deactivate, S::Deactivated),
        (S::Active, T::Compromise, S::Compromised),
        (S::Suspended, T::Resume, S::Active),
        (S::Suspended, T::Deactivate, S::Deactivated),
        (S::Suspended, T::Compromise, S::Compromised),
        (S::Deactivated, T::Compromise, S::Compromised),
        (S::Deactivated, T::Destroy, S::Destroyed),
        (S::Compromised, T::Destroy, S::DestroyedCompromised),
        (S::Destroyed, T::Compromise, S::DestroyedCompromised),
    ]
};

/// The state `t` leads to from `from`.
///
/// # Errors
/// `ActionProhibited` saying which states the transition starts from.
pub fn next_state(from: KeyState, t: Transition) -> Result<KeyState> {
    TRANSITIONS
        .iter()
        .find(|(f, x, _)| *f == from && *x == t)
        .map(|(_, _, to)| *to)
        .ok_or(Error::ActionProhibited(t.refusal()))
}

/// A key's lifecycle as stored with its attributes. Dates are seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// The stored state; `None`: a key made without lifecycle options (active).
    pub state: Option<KeyState>,
    /// When a pre-activation key becomes active.
    pub activation: Option<u64>,
    /// When the key stops protecting (sign, encrypt, wrap, MAC, derive): it becomes
    /// deactivated (KMIP's Protect Stop Date).
    pub protect_stop: Option<u64>,
    /// When the key becomes deactivated (KMIP's Deactivation Date).
    pub deactivation: Option<u64>,
    /// When it was marked compromised.
    pub compromise: Option<u64>,
    /// When its material was destroyed.
    pub destroyed: Option<u64>,
}

impl Lifecycle {
    /// The lifecycle stored in a key's attributes.
    ///
    /// # Errors
    /// `Integrity` for a state value this build does not know (the record is authenticated,
    /// so it was written by a newer build or corrupted).
    pub fn of(a: &Attributes) -> Result<Self> {
        let state = match a.ulong(AttrType::BulwarkState) {
            Some(v) => {
                Some(KeyState::from_raw(v).ok_or(Error::Integrity("unknown key state stored"))?)
            }
            None => None,
        };
        Ok(Self {
            state,
            activation: a.ulong(AttrType::BulwarkActivationDate),
            protect_stop: a.ulong(AttrType::BulwarkProtectStopDate),
            deactivation: a.ulong(AttrType::BulwarkDeactivationDate),
            compromise: a.ulong(AttrType::BulwarkCompromiseDate),
            destroyed: a.ulong(AttrType::BulwarkDestroyDate),
        })
    }

    /// The lifecycle of a new object made from a template: a key given an activation date
    /// starts in pre-activation (and is active from that date); the dates are checked against
    /// each other. An object that already carries a state (a copy) is left as it is.
    ///
    /// # Errors
    /// `TemplateInconsistent` when a stop date does not come after the activation date.
    pub(crate) fn for_new(a: &mut Attributes) -> Result<()> {
        let l = Self::of(a)?;
        if l.state.is_some() || !l.is_set() {
            return Ok(());
        }
        if let (Some(act), Some(stop)) = (l.activation, l.stop()) {
            if stop <= act {
                return Err(Error::TemplateInconsistent(
                    "the deactivation (protect-stop) date must come after the activation date",
                ));
            }
        }
        if l.activation.is_some() {
            Self { state: Some(KeyState::PreActivation), ..l }.store_in(a);
        }
        Ok(())
    }

    /// Whether the key carries any lifecycle attribute at all.
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// Writes this lifecycle into `a` (absent fields are removed).
    pub fn store_in(&self, a: &mut Attributes) {
        let mut put = |t: AttrType, v: Option<u64>| match v {
            Some(v) => a.set_ulong(t, v),
            None => {
                a.remove(t);
            }
        };
        put(AttrType::BulwarkState, self.state.map(KeyState::to_raw));
        put(AttrType::BulwarkActivationDate, self.activation);
        put(AttrType::BulwarkProtectStopDate, self.protect_stop);
        put(AttrType::BulwarkDeactivationDate, self.deactivation);
        put(AttrType::BulwarkCompromiseDate, self.compromise);
        put(AttrType::BulwarkDestroyDate, self.destroyed);
    }

    /// The moment the key stops protecting: the earlier of the protect-stop and deactivation
    /// dates.
    pub fn stop(&self) -> Option<u64> {
        match (self.protect_stop, self.deactivation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The state at time `now`: the stored state moved on by the dates (a pre-activation key
    /// whose activation date has come is active; an active or suspended key whose
    /// protect-stop or deactivation date has come is deactivated).
    pub fn state_at(&self, now: u64) -> KeyState {
        let mut s = self.state.unwrap_or(KeyState::Active);
        if s == KeyState::PreActivation && self.activation.is_some_and(|d| d <= now) {
            s = KeyState::Active;
        }
        if matches!(s, KeyState::Active | KeyState::Suspended)
            && self.stop().is_some_and(|d| d <= now)
        {
            s = KeyState::Deactivated;
        }
        s
    }

    /// The next moment after `now` at which a date changes the state, if any: a prepared key
    /// must pass the gate again then.
    pub fn next_change_after(&self, now: u64) -> Option<u64> {
        let s = self.state_at(now);
        let candidates = match s {
            KeyState::PreActivation => [self.activation, None],
            KeyState::Active | KeyState::Suspended => [self.stop(), None],
            _ => [None, None],
        };
        candidates.into_iter().flatten().filter(|d| *d > now).min()
    }

    /// Checks new activation / deactivation / protect-stop dates against each other and the
    /// state at `now`: the activation date can be set only while the key is not yet active,
    /// the stop dates only while it is not yet deactivated, and a stop date must not come
    /// before the activation date.
    ///
    /// # Errors
    /// `ArgumentsBad` or `ActionProhibited` with the reason; nothing is changed.
    pub fn with_dates(
        &self,
        now: u64,
        activation: Option<u64>,
        protect_stop: Option<u64>,
        deactivation: Option<u64>,
    ) -> Result<Self> {
        let s = self.state_at(now);
        let mut n = *self;
        if let Some(d) = activation {
            if s != KeyState::PreActivation {
                return Err(Error::ActionProhibited(
                    "the activation date can only be set before the key is active",
                ));
            }
            n.activation = Some(d);
            n.state = Some(KeyState::PreActivation);
        }
        if protect_stop.is_some() || deactivation.is_some() {
            if !matches!(s, KeyState::PreActivation | KeyState::Active | KeyState::Suspended) {
                return Err(Error::ActionProhibited(
                    "deactivation dates can only be set before the key is deactivated",
                ));
            }
            if protect_stop.is_some() {
                n.protect_stop = protect_stop;
            }
            if deactivation.is_some() {
                n.deactivation = deactivation;
            }
        }
        if let (Some(a), Some(stop)) = (n.activation, n.stop()) {
            if stop <= a {
                return Err(Error::ArgumentsBad(
                    "the deactivation (protect-stop) date must come after the activation date",
                ));
            }
        }
        Ok(n)
    }

    /// This lifecycle after transition `t` at `now`: the state from [`next_state`] applied to
    /// the state at `now`, with the date the transition stands for.
    ///
    /// # Errors
    /// `ActionProhibited` when the table refuses the transition.
    pub fn after(&self, t: Transition, now: u64) -> Result<Self> {
        let to = next_state(self.state_at(now), t)?;
        let mut n = *self;
        n.state = Some(to);
        match t {
            Transition::Activate => n.activation = Some(now),
            Transition::Deactivate => {
                n.deactivation = Some(n.deactivation.map_or(now, |d| d.min(now)));
            }
            Transition::Compromise => n.compromise = Some(now),
            Transition::Destroy => n.destroyed = Some(now),
            Transition::Suspend | Transition::Resume => {}
        }
        // A resumed (or activated) key whose stop date has passed is deactivated at once by
        // `state_at`; storing the state it was moved to by dates keeps it from going back.
        if to == KeyState::Active {
            n.state = Some(n.state_at(now));
        }
        Ok(n)
    }
}

/// The time source of lifecycle dates (and of CKA_START_DATE / CKA_END_DATE checks).
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock (production).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that tests set by hand.
#[cfg(any(test, feature = "test-clock"))]
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

#[cfg(any(test, feature = "test-clock"))]
impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: u64) -> Arc<Self> {
        Arc::new(Self(std::sync::atomic::AtomicU64::new(now)))
    }
    /// Sets the time.
    pub fn set(&self, now: u64) {
        self.0.store(now, std::sync::atomic::Ordering::SeqCst);
    }
    /// Moves the time forward.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "test-clock"))]
impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The default clock.
pub(crate) fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// `YYYYMMDD` (UTC) of a Unix time, for CK_DATE attributes.
#[allow(clippy::many_single_char_names)] // the published algorithm's names
pub fn ck_date(secs: u64) -> [u8; 8] {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let s = format!("{y:04}{m:02}{d:02}");
    s.as_bytes().try_into().unwrap_or(*b"19700101")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_and_names_round_trip() {
        for s in KeyState::ALL {
            assert_eq!(KeyState::from_raw(s.to_raw()), Some(*s));
            assert_eq!(s.name().parse::<KeyState>().unwrap(), *s);
        }
        assert_eq!(KeyState::from_raw(0), None);
        for t in Transition::ALL {
            assert_eq!(t.name().parse::<Transition>().unwrap(), *t);
        }
    }

    #[test]
    fn the_table_is_the_only_way() {
        for from in KeyState::ALL {
            for t in Transition::ALL {
                let listed = TRANSITIONS.iter().find(|(f, x, _)| f == from && x == t);
                match (listed, next_state(*from, *t)) {
                    (Some((_, _, to)), Ok(got)) => assert_eq!(*to, got),
                    (None, Err(Error::ActionProhibited(_))) => {}
                    other => panic!("{from} {t:?}: {other:?}"),
                }
            }
        }
        // Nothing leaves destroyed-compromised; nothing comes back from destroyed.
        for t in Transition::ALL {
            assert!(next_state(KeyState::DestroyedCompromised, *t).is_err());
        }
    }

    #[test]
    fn dates_move_states() {
        let l = Lifecycle {
            state: Some(KeyState::PreActivation),
            activation: Some(100),
            deactivation: Some(200),
            ..Lifecycle::default()
        };
        assert_eq!(l.state_at(99), KeyState::PreActivation);
        assert_eq!(l.next_change_after(99), Some(100));
        assert_eq!(l.state_at(100), KeyState::Active);
        assert_eq!(l.next_change_after(100), Some(200));
        assert_eq!(l.state_at(200), KeyState::Deactivated);
        assert_eq!(l.next_change_after(200), None);
        let ps = Lifecycle { protect_stop: Some(150), ..l };
        assert_eq!(ps.state_at(150), KeyState::Deactivated);
        assert_eq!(Lifecycle::default().state_at(0), KeyState::Active);
    }

    #[test]
    fn dates_are_checked() {
        let l = Lifecycle::default();
        assert!(l.with_dates(10, Some(20), None, None).is_err(), "active: no activation date");
        let pre = Lifecycle { state: Some(KeyState::PreActivation), ..l };
        assert!(pre.with_dates(10, Some(20), None, Some(20)).is_err(), "stop before activation");
        let n = pre.with_dates(10, Some(20), None, Some(30)).unwrap();
        assert_eq!(n.state_at(25), KeyState::Active);
        let dead = Lifecycle { state: Some(KeyState::Deactivated), ..l };
        assert!(dead.with_dates(10, None, None, Some(30)).is_err());
    }

    #[test]
    fn permits_by_state() {
        use Usage as U;
        let all = [
            U::Sign,
            U::Verify,
            U::Encrypt,
            U::Decrypt,
            U::Wrap,
            U::Unwrap,
            U::Derive,
            U::Encapsulate,
            U::Decapsulate,
        ];
        for u in all {
            let processes = matches!(u, U::Verify | U::Decrypt | U::Unwrap | U::Decapsulate);
            assert!(KeyState::Active.permits(u).is_ok());
            assert_eq!(KeyState::Deactivated.permits(u).is_ok(), processes);
            assert_eq!(KeyState::Compromised.permits(u).is_ok(), processes);
            for s in [
                KeyState::PreActivation,
                KeyState::Suspended,
                KeyState::Destroyed,
                KeyState::DestroyedCompromised,
            ] {
                assert!(s.permits(u).is_err(), "{s} {u:?}");
            }
        }
    }

    #[test]
    fn ck_date_is_civil() {
        assert_eq!(&ck_date(0), b"19700101");
        assert_eq!(&ck_date(951_782_400), b"20000229");
    }
}
