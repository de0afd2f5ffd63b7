//! `bulwark key state|activate|suspend|resume|deactivate|compromise|dates`: key lifecycle
//! states (docs/lifecycle.md). The CLI only names the key and parses dates; the core checks
//! the transition table, who may change the state, and records every change.
//!
//! A label names one key or both halves of a key pair: a change applies to every key object
//! with that label, in one write.

use std::process::ExitCode;

use bulwark_core::attr::ObjectClass;
use bulwark_core::lifecycle::{KeyState, Lifecycle, Transition};
use bulwark_core::token::{LifecycleDates, ObjectInfo};
use bulwark_core::{Error, Token};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{CliError, CliResult};

/// Lifecycle dates given on the command line (RFC 3339, e.g. `2027-01-31T00:00:00Z`).
#[derive(Args, Debug, Default, Clone)]
#[allow(clippy::struct_field_names)] // the fields are the flags' names
pub(crate) struct DateArgs {
    /// When the key becomes active (RFC 3339); until then it is in pre-activation and does
    /// nothing.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) activate_at: Option<String>,
    /// When the key stops protecting (signing, encrypting, wrapping, MAC): it is deactivated
    /// from then on and only verifies, decrypts and unwraps (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub(crate) protect_stop_at: Option<String>,
    /// When the key becomes deactivated (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub(crate) deactivate_at: Option<String>,
}

impl DateArgs {
    /// Whether any date is given.
    pub(crate) fn is_set(&self) -> bool {
        self.activate_at.is_some() || self.protect_stop_at.is_some() || self.deactivate_at.is_some()
    }

    /// The dates as Unix seconds.
    pub(crate) fn parse(&self) -> CliResult<LifecycleDates> {
        let p =
            |flag: &str, v: &Option<String>| v.as_deref().map(|s| parse_date(flag, s)).transpose();
        Ok(LifecycleDates {
            activation: p("--activate-at", &self.activate_at)?,
            protect_stop: p("--protect-stop-at", &self.protect_stop_at)?,
            deactivation: p("--deactivate-at", &self.deactivate_at)?,
        })
    }
}

/// Lifecycle commands (flattened into `bulwark key`).
#[derive(Subcommand, Debug)]
pub(crate) enum LifecycleCommand {
    /// Show a key's lifecycle state and dates.
    State {
        /// Key label.
        label: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// pre-activation → active.
    Activate {
        /// Key label.
        label: String,
    },
    /// active → suspended (temporarily unusable).
    Suspend {
        /// Key label.
        label: String,
    },
    /// suspended → active.
    Resume {
        /// Key label.
        label: String,
    },
    /// active or suspended → deactivated (only verifies, decrypts and unwraps from now on).
    Deactivate {
        /// Key label.
        label: String,
    },
    /// Mark a key compromised (only verifies, decrypts and unwraps from now on; cannot be
    /// undone).
    Compromise {
        /// Key label.
        label: String,
    },
    /// Set lifecycle dates of an existing key.
    Dates {
        /// Key label.
        label: String,
        #[command(flatten)]
        dates: DateArgs,
    },
}

/// Parses an RFC 3339 date-time into Unix seconds.
pub(crate) fn parse_date(flag: &str, s: &str) -> CliResult<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        CliError::Usage(format!(
            "{flag}: {:?} is not an RFC 3339 date-time (e.g. 2027-01-31T00:00:00Z)",
            bulwark_core::display::escape(s)
        ))
    })?;
    u64::try_from(t.unix_timestamp())
        .map_err(|_| CliError::Usage(format!("{flag}: dates before 1970 are not accepted")))
}

/// Unix seconds as RFC 3339 (UTC).
pub(crate) fn format_date(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// The key objects labelled `label`, secret or private keys first.
fn keys(t: &Token, label: &str) -> CliResult<Vec<ObjectInfo>> {
    let mut v: Vec<ObjectInfo> = crate::cmd_keys::by_label(t, label)?
        .into_iter()
        .filter(|o| {
            matches!(
                o.attrs.class(),
                Some(ObjectClass::SecretKey | ObjectClass::PrivateKey | ObjectClass::PublicKey)
            )
        })
        .collect();
    if v.is_empty() {
        return Err(Error::NotFound(label.to_owned()).into());
    }
    v.sort_by_key(|o| o.attrs.class() == Some(ObjectClass::PublicKey));
    Ok(v)
}

/// The state and dates of one key as JSON.
pub(crate) fn lifecycle_json(l: &Lifecycle, now: KeyState) -> Value {
    let d = |v: Option<u64>| v.map_or(Value::Null, |s| json!(format_date(s)));
    json!({
        "state": now.name(),
        "stored_state": l.state.map_or(Value::Null, |s| json!(s.name())),
        "activation_date": d(l.activation),
        "protect_stop_date": d(l.protect_stop),
        "deactivation_date": d(l.deactivation),
        "compromise_date": d(l.compromise),
        "destroy_date": d(l.destroyed),
    })
}

fn class_name(o: &ObjectInfo) -> String {
    o.attrs.class().map_or_else(|| "?".into(), |c| format!("{c:?}"))
}

/// Runs a lifecycle command on the embedded store.
pub(crate) fn run(t: &Token, cmd: LifecycleCommand) -> CliResult<ExitCode> {
    let (label, tr) = match cmd {
        LifecycleCommand::State { label, json } => {
            let objs = keys(t, &label)?;
            let mut out = Vec::new();
            for o in &objs {
                let (l, now) = t.key_lifecycle(o.handle)?;
                if json {
                    let mut v = lifecycle_json(&l, now);
                    v["handle"] = json!(o.handle);
                    v["class"] = json!(class_name(o));
                    out.push(v);
                } else {
                    print_one(o.handle, &class_name(o), &l, now);
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            }
            return Ok(ExitCode::SUCCESS);
        }
        LifecycleCommand::Dates { label, dates } => {
            if !dates.is_set() {
                return Err(CliError::Usage(
                    "give --activate-at, --protect-stop-at or --deactivate-at".into(),
                ));
            }
            let d = dates.parse()?;
            let hs: Vec<u64> = keys(t, &label)?.iter().map(|o| o.handle).collect();
            t.set_key_dates(&hs, d).map_err(|e| refused(t, &label, hs[0], e))?;
            println!("dates of {label:?} set");
            return Ok(ExitCode::SUCCESS);
        }
        LifecycleCommand::Activate { label } => (label, Transition::Activate),
        LifecycleCommand::Suspend { label } => (label, Transition::Suspend),
        LifecycleCommand::Resume { label } => (label, Transition::Resume),
        LifecycleCommand::Deactivate { label } => (label, Transition::Deactivate),
        LifecycleCommand::Compromise { label } => (label, Transition::Compromise),
    };
    let hs: Vec<u64> = keys(t, &label)?.iter().map(|o| o.handle).collect();
    let states = t.transition_keys(&hs, tr).map_err(|e| refused(t, &label, hs[0], e))?;
    let to = states.first().map_or("-", |s| s.name());
    println!("{label:?}: {} ({} object(s) now {to})", tr.name(), hs.len());
    Ok(ExitCode::SUCCESS)
}

/// Runs a lifecycle command against `bulwarkd` (the daemon's `KeyState` / `ChangeKeyState`).
pub(crate) fn run_remote(c: &bulwark_client::Client, cmd: LifecycleCommand) -> CliResult<ExitCode> {
    use bulwark_client::v1 as pb;
    let show = |r: &pb::KeyStateResponse, json: bool| {
        let d = |v: u64| (v != 0).then_some(v);
        let mut out = Vec::new();
        for o in &r.objects {
            let l = Lifecycle {
                state: o.stored_state.parse().ok(),
                activation: d(o.activation_date),
                protect_stop: d(o.protect_stop_date),
                deactivation: d(o.deactivation_date),
                compromise: d(o.compromise_date),
                destroyed: d(o.destroy_date),
            };
            let now: KeyState = o.state.parse().unwrap_or(KeyState::Active);
            if json {
                let mut v = lifecycle_json(&l, now);
                v["handle"] = json!(o.handle);
                v["class"] = json!(o.class);
                out.push(v);
            } else {
                print_one(o.handle, &o.class, &l, now);
            }
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
    };
    let (label, tr, dates) = match cmd {
        LifecycleCommand::State { label, json } => {
            show(&c.key_state(&label)?, json);
            return Ok(ExitCode::SUCCESS);
        }
        LifecycleCommand::Dates { label, dates } => {
            if !dates.is_set() {
                return Err(CliError::Usage(
                    "give --activate-at, --protect-stop-at or --deactivate-at".into(),
                ));
            }
            let d = dates.parse()?;
            let v = |x: Option<u64>| x.unwrap_or(0);
            (label, "", [v(d.activation), v(d.protect_stop), v(d.deactivation)])
        }
        LifecycleCommand::Activate { label } => (label, "activate", [0; 3]),
        LifecycleCommand::Suspend { label } => (label, "suspend", [0; 3]),
        LifecycleCommand::Resume { label } => (label, "resume", [0; 3]),
        LifecycleCommand::Deactivate { label } => (label, "deactivate", [0; 3]),
        LifecycleCommand::Compromise { label } => (label, "compromise", [0; 3]),
    };
    let r = c.change_key_state(&label, tr, dates)?;
    let to = r.objects.first().map_or("-", |o| o.state.as_str());
    if tr.is_empty() {
        println!("dates of {label:?} set");
    } else {
        println!("{label:?}: {tr} ({} object(s) now {to})", r.objects.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_one(handle: u64, class: &str, l: &Lifecycle, now: KeyState) {
    match l.state {
        Some(s) if s != now => {
            println!("object {handle} ({class}): {} (stored: {s}, moved by its dates)", now.name());
        }
        _ => println!("object {handle} ({class}): {}", now.name()),
    }
    let dates = [
        ("activation", l.activation),
        ("protect-stop", l.protect_stop),
        ("deactivation", l.deactivation),
        ("compromise", l.compromise),
        ("destroyed", l.destroyed),
    ];
    for (n, d) in dates {
        if let Some(d) = d {
            println!("  {n:<13} {}", format_date(d));
        }
    }
}

/// Says on stderr that a key used to process old data is not active (issue 11: deactivated
/// and compromised keys still verify and decrypt, "and the response says so").
pub(crate) fn note_state(label: &str, state: &str) {
    if !state.is_empty() && state != KeyState::Active.name() {
        eprintln!(
            "bulwark: note: key {:?} is {state}: it only processes old data",
            bulwark_core::display::escape(label)
        );
    }
}

/// [`note_state`] for a key of the embedded store.
pub(crate) fn note_key(t: &Token, h: u64, label: &str) {
    if let Ok((_, s)) = t.key_lifecycle(h) {
        note_state(label, s.name());
    }
}

/// A refused change, with the key's current state in the message.
fn refused(t: &Token, label: &str, h: u64, e: Error) -> CliError {
    match (&e, t.key_lifecycle(h)) {
        (Error::ActionProhibited(why), Ok((_, now))) => CliError::Usage(format!(
            "refused: {why} (key {:?} is {now})",
            bulwark_core::display::escape(label)
        )),
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_and_format() {
        assert_eq!(parse_date("--x", "1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_date("--x", "2026-01-01T01:00:00+01:00").unwrap(), 1_767_225_600);
        assert_eq!(format_date(1_767_225_600), "2026-01-01T00:00:00Z");
        for bad in ["2026-01-01", "tomorrow", "1969-12-31T23:59:59Z", ""] {
            assert!(parse_date("--x", bad).is_err(), "{bad}");
        }
    }
}
