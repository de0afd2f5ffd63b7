//! Scheduled destruction: the store's waiting period between "destroy this key" and the
//! crypto-shredding of its material, purge protection, and a key's schedule as stored in its
//! attributes. Pure values and rules only: the token (`token/destruction.rs`) stores the
//! settings as an authenticated setting and the schedule as an attribute of the key (inside the
//! authenticated object record), and carries the destructions out when they are due.
//!
//! While a destruction is scheduled the key is unusable and invisible (`C_FindObjects` does not
//! return it, its handle is invalid), and can be cancelled. When the wait has passed, its
//! material is removed from its record; the record, with every attribute and the schedule, stays
//! (state destroyed or destroyed-compromised), so its audit history still names a key.

use serde::{Deserialize, Serialize};

use crate::attr::{AttrType, Attributes};
use crate::error::{Error, Result};
use crate::lifecycle::KeyState;

/// One day in seconds.
pub const DAY: u64 = 86_400;

/// The waiting period of a daemon store that never changed it.
pub const DAEMON_DEFAULT_WAIT: u64 = 30 * DAY;

/// The shortest waiting period a daemon store accepts without quorum approval.
pub const DAEMON_MIN_WAIT: u64 = 7 * DAY;

/// The longest waiting period accepted (a typing error of years is refused, not stored).
pub const MAX_WAIT: u64 = 10 * 365 * DAY;

/// The store's destruction settings (the authenticated setting `destruction`; a store that never
/// set it has its kind's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroySettings {
    /// Seconds between a destroy request and the shredding of the material (0: immediate).
    pub wait_secs: u64,
    /// A wait below this needs quorum approval (daemon stores: 7 days; embedded: 0).
    pub min_wait_secs: u64,
    /// Once on, the wait can never be shortened, and purge protection never turned off.
    pub purge_protection: bool,
}

impl DestroySettings {
    /// Defaults of an embedded (keyslot) store: immediate, as `C_DestroyObject` always was.
    pub fn embedded() -> Self {
        Self { wait_secs: 0, min_wait_secs: 0, purge_protection: false }
    }

    /// Defaults of a daemon (quorum) store: 30 days, at least 7 without quorum approval.
    pub fn daemon() -> Self {
        Self {
            wait_secs: DAEMON_DEFAULT_WAIT,
            min_wait_secs: DAEMON_MIN_WAIT,
            purge_protection: false,
        }
    }

    /// These settings with a new wait and/or purge protection. `approved`: the request carries
    /// valid quorum approvals (only the daemon can say so).
    ///
    /// # Errors
    /// `ArgumentsBad` for nothing to change or a wait beyond [`MAX_WAIT`]; `ActionProhibited`
    /// for turning purge protection off, shortening the wait under purge protection, or a wait
    /// below the store minimum without approval.
    pub fn changed(&self, wait: Option<u64>, purge: Option<bool>, approved: bool) -> Result<Self> {
        if wait.is_none() && purge.is_none() {
            return Err(Error::ArgumentsBad("no destruction setting given"));
        }
        let mut n = *self;
        if let Some(p) = purge {
            if self.purge_protection && !p {
                return Err(Error::ActionProhibited("purge protection cannot be turned off"));
            }
            n.purge_protection = p;
        }
        if let Some(w) = wait {
            if w > MAX_WAIT {
                return Err(Error::ArgumentsBad("destruction wait longer than 10 years"));
            }
            if n.purge_protection && w < self.wait_secs {
                return Err(Error::ActionProhibited(
                    "purge protection is on: the destruction wait cannot be shortened",
                ));
            }
            if w < self.min_wait_secs && !approved {
                return Err(Error::ActionProhibited(
                    "a destruction wait below the store minimum (7 days) needs quorum approval",
                ));
            }
            n.wait_secs = w;
        }
        Ok(n)
    }
}

/// A key's scheduled destruction, as stored in its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// When the material is shredded (Unix seconds).
    pub due: u64,
}

impl Schedule {
    /// The schedule stored in `a`, if any.
    pub fn of(a: &Attributes) -> Option<Self> {
        a.ulong(AttrType::BulwarkDestroyScheduled).map(|due| Self { due })
    }

    /// Whether the attributes carry a schedule (pending or carried out): such a key is
    /// invisible to every ordinary lookup.
    pub fn is_scheduled(a: &Attributes) -> bool {
        a.contains(AttrType::BulwarkDestroyScheduled)
    }

    /// Writes the schedule into `a`.
    pub fn store_in(&self, a: &mut Attributes) {
        a.set_ulong(AttrType::BulwarkDestroyScheduled, self.due);
    }

    /// Removes a schedule from `a` (a cancel).
    pub fn clear(a: &mut Attributes) {
        a.remove(AttrType::BulwarkDestroyScheduled);
    }

    /// Whether the waiting period has ended at `now`.
    pub fn is_due(&self, now: u64) -> bool {
        self.due <= now
    }

    /// The state a key in `state` ends in once its destruction is carried out.
    pub fn final_state(state: KeyState) -> KeyState {
        match state {
            KeyState::Compromised | KeyState::DestroyedCompromised => {
                KeyState::DestroyedCompromised
            }
            _ => KeyState::Destroyed,
        }
    }
}

/// Parses a duration as people write it: `30d`, `12h`, `90m`, `45s` or plain seconds.
///
/// # Errors
/// `ArgumentsBad` for anything else.
pub fn parse_duration(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num.parse().map_err(|_| Error::ArgumentsBad("bad duration (e.g. 30d, 12h)"))?;
    let mul = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => DAY,
        'w' => 7 * DAY,
        _ => return Err(Error::ArgumentsBad("bad duration unit (use s, m, h, d or w)")),
    };
    n.checked_mul(mul).ok_or(Error::ArgumentsBad("duration too long"))
}

/// A duration for people: `30d`, `36h`, `90s`.
pub fn format_duration(secs: u64) -> String {
    if secs != 0 && secs % DAY == 0 {
        format!("{}d", secs / DAY)
    } else if secs != 0 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_rules() {
        let d = DestroySettings::daemon();
        assert!(d.changed(None, None, false).is_err());
        assert_eq!(d.changed(Some(8 * DAY), None, false).unwrap().wait_secs, 8 * DAY);
        assert!(matches!(d.changed(Some(DAY), None, false), Err(Error::ActionProhibited(_))));
        assert_eq!(d.changed(Some(DAY), None, true).unwrap().wait_secs, DAY);
        assert!(d.changed(Some(MAX_WAIT + 1), None, true).is_err());
        let p = d.changed(None, Some(true), false).unwrap();
        assert!(p.purge_protection);
        assert!(p.changed(None, Some(false), true).is_err(), "purge protection stays on");
        assert!(p.changed(Some(29 * DAY), None, true).is_err(), "no shortening, even approved");
        assert_eq!(p.changed(Some(60 * DAY), None, false).unwrap().wait_secs, 60 * DAY);
        // Turning purge protection on and shortening in one request is refused too.
        assert!(d.changed(Some(8 * DAY), Some(true), false).is_err());
        let e = DestroySettings::embedded();
        assert_eq!(e.changed(Some(0), None, false).unwrap().wait_secs, 0);
    }

    #[test]
    fn schedule_round_trip() {
        let mut a = Attributes::new();
        assert_eq!(Schedule::of(&a), None);
        Schedule { due: 50 }.store_in(&mut a);
        assert!(Schedule::is_scheduled(&a));
        let s = Schedule::of(&a).unwrap();
        assert!(!s.is_due(49));
        assert!(s.is_due(50));
        Schedule::clear(&mut a);
        assert!(!Schedule::is_scheduled(&a));
        assert_eq!(Schedule::final_state(KeyState::Active), KeyState::Destroyed);
        assert_eq!(Schedule::final_state(KeyState::Compromised), KeyState::DestroyedCompromised);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), 30 * DAY);
        assert_eq!(parse_duration("12h").unwrap(), 12 * 3600);
        assert_eq!(parse_duration("45").unwrap(), 45);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("-1d").is_err());
        assert_eq!(format_duration(30 * DAY), "30d");
        assert_eq!(format_duration(7200), "2h");
        assert_eq!(format_duration(0), "0s");
    }
}
