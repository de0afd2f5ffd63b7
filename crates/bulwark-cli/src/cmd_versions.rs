//! `bulwark key rotate|rotation|history|min-decrypt-version`: key versions and rotation
//! (docs/lifecycle.md, "Versions and rotation"). The CLI names the key and parses periods;
//! the core makes versions, checks who may, and records every change.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_core::attr::ObjectClass;
use bulwark_core::history::KeyHistory;
use bulwark_core::token::KeyVersionInfo;
use bulwark_core::Token;
use clap::Subcommand;

use crate::cmd_lifecycle::format_date;
use crate::{CliError, CliResult};

/// Version commands (flattened into `bulwark key`).
#[derive(Subcommand, Debug)]
pub(crate) enum VersionCommand {
    /// Make a new version of a key (same type, size, usage, allowed mechanisms and access
    /// list); the label names it from now on, and the previous version is deactivated (it
    /// still verifies, decrypts and unwraps).
    Rotate {
        /// Key label.
        label: String,
    },
    /// Set or turn off automatic rotation by period (every key type).
    Rotation {
        /// Key label.
        label: String,
        /// Rotation period: a number with a unit s, m, h, d or w (e.g. 90d); at least 1h.
        #[arg(
            long,
            value_name = "PERIOD",
            conflicts_with = "off",
            required_unless_present = "off"
        )]
        every: Option<String>,
        /// Turn automatic rotation off.
        #[arg(long)]
        off: bool,
    },
    /// Export the public-key history of a key pair (every version's public key and signing
    /// window) as a JSON bundle for offline verification (`bulwark verify --bundle`).
    History {
        /// Key label.
        label: String,
        /// Write the bundle to this file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Retire old versions: versions below N refuse every use, decrypt and verify included.
    /// It only goes up.
    MinDecryptVersion {
        /// Key label.
        label: String,
        /// The lowest version that may still be used.
        #[arg(value_name = "N")]
        min_version: u64,
    },
}

/// Parses a rotation period (`90d`, `12h`, `2w`, `3600s`, `30m`) into seconds.
pub(crate) fn parse_period(s: &str) -> CliResult<u64> {
    let bad = || {
        CliError::Usage(format!(
            "{:?} is not a period: a number with a unit s, m, h, d or w (e.g. 90d)",
            bulwark_core::display::escape(s)
        ))
    };
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(bad)
}

/// A period for people: the largest unit that divides it.
pub(crate) fn format_period(secs: u64) -> String {
    for (u, m) in [('w', 7 * 86_400), ('d', 86_400), ('h', 3600), ('m', 60)] {
        if secs % m == 0 {
            return format!("{}{u}", secs / m);
        }
    }
    format!("{secs}s")
}

/// The secret or private key among the objects a label names (the handle a rotation takes).
fn main_handle(t: &Token, label: &str) -> CliResult<u64> {
    let objs = crate::cmd_keys::by_label(t, label)?;
    crate::cmd_keys::one_of(&objs, ObjectClass::PrivateKey, label)
        .or_else(|_| crate::cmd_keys::one_of(&objs, ObjectClass::SecretKey, label))
        .or_else(|_| crate::cmd_keys::one_of(&objs, ObjectClass::PublicKey, label))
}

/// Runs a version command on the embedded store.
pub(crate) fn run(t: &Token, cmd: VersionCommand) -> CliResult<ExitCode> {
    match cmd {
        VersionCommand::Rotate { label } => {
            let h = main_handle(t, &label)?;
            let (hs, v) = t.rotate_key(h)?;
            println!("rotated {label:?}: version {v} is current (handles {hs:?})");
        }
        VersionCommand::Rotation { label, every, off } => {
            let period = if off { None } else { every.as_deref().map(parse_period).transpose()? };
            let h = main_handle(t, &label)?;
            match (t.set_rotation_period(h, period)?, period) {
                (Some(next), Some(p)) => println!(
                    "{label:?} rotates every {}; next rotation {}",
                    format_period(p),
                    format_date(next)
                ),
                _ => println!("automatic rotation of {label:?} is off"),
            }
        }
        VersionCommand::History { label, out } => {
            let h = t.public_key_history(&label)?;
            write_out(out.as_deref(), &h.to_json())?;
        }
        VersionCommand::MinDecryptVersion { label, min_version: version } => {
            let h = main_handle(t, &label)?;
            t.set_min_decrypt_version(h, version)?;
            println!("{label:?}: versions below {version} are retired");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets or turns off automatic rotation on `bulwarkd` and says when the key rotates next.
pub(crate) fn rotation_remote(
    c: &bulwark_client::Client,
    label: &str,
    period: Option<u64>,
) -> CliResult<()> {
    let r = c.set_rotation_period(label, period)?;
    let next = r.versions.iter().find(|v| v.current).map_or(0, |v| v.next_rotation);
    match period {
        Some(p) if next != 0 => println!(
            "{label:?} rotates every {}; next rotation {}",
            format_period(p),
            format_date(next)
        ),
        _ => println!("automatic rotation of {label:?} is off"),
    }
    Ok(())
}

/// The versions of a `KeyVersions` / `RotateKey` answer as the core's type (for printing).
pub(crate) fn from_pb(r: &bulwark_client::v1::KeyVersionsResponse) -> Vec<KeyVersionInfo> {
    let d = |v: u64| (v != 0).then_some(v);
    r.versions
        .iter()
        .map(|v| KeyVersionInfo {
            family: v.family.clone(),
            version: v.version,
            handles: v.handles.clone(),
            lifecycle: bulwark_core::lifecycle::Lifecycle {
                activation: d(v.activation_date),
                deactivation: d(v.deactivation_date),
                ..bulwark_core::lifecycle::Lifecycle::default()
            },
            state: v.state.parse().unwrap_or(bulwark_core::lifecycle::KeyState::Active),
            current: v.current,
            rotated_at: d(v.rotated_at),
            rotation_period: d(v.rotation_period),
            next_rotation: d(v.next_rotation),
            min_decrypt_version: v.min_decrypt_version.max(1),
        })
        .collect()
}

/// Runs a version command against `bulwarkd` (RotateKey, KeyVersions, SetKeyRotation).
pub(crate) fn run_remote(c: &bulwark_client::Client, cmd: VersionCommand) -> CliResult<ExitCode> {
    match cmd {
        VersionCommand::Rotate { label } => {
            let r = c.rotate_key(&label)?;
            let cur = r.versions.iter().find(|v| v.current);
            let v = cur.map_or(0, |v| v.version);
            let hs = cur.map(|v| v.handles.clone()).unwrap_or_default();
            println!("rotated {label:?}: version {v} is current (handles {hs:?})");
        }
        VersionCommand::Rotation { label, every, off } => {
            let period = if off { None } else { every.as_deref().map(parse_period).transpose()? };
            rotation_remote(c, &label, period)?;
        }
        VersionCommand::History { label, out } => {
            let r = c.key_versions(&label)?;
            if r.history_json.is_empty() {
                return Err(CliError::Usage(format!(
                    "{label:?} has no public-key history (only key pairs have one)"
                )));
            }
            // Checked before it is written: a bundle this build cannot read is refused.
            let h = KeyHistory::from_json(&r.history_json)?;
            write_out(out.as_deref(), &h.to_json())?;
        }
        VersionCommand::MinDecryptVersion { label, min_version: version } => {
            c.set_min_decrypt_version(&label, version)?;
            println!("{label:?}: versions below {version} are retired");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `out` (or stdout).
pub(crate) fn write_out(out: Option<&Path>, text: &str) -> CliResult<()> {
    if let Some(p) = out {
        crate::cmd_ops::write_file(p, format!("{text}\n").as_bytes())
    } else {
        println!("{text}");
        Ok(())
    }
}

/// Prints the versions of a key as `key show` does.
pub(crate) fn print_versions(vs: &[KeyVersionInfo]) {
    println!("versions:");
    println!("  {:<8} {:<22} {:<8} {:<21} HANDLES", "VERSION", "STATE", "CURRENT", "SINCE");
    for v in vs {
        let since = v.lifecycle.activation.or(v.rotated_at).map_or_else(|| "-".into(), format_date);
        println!(
            "  {:<8} {:<22} {:<8} {:<21} {:?}",
            v.version,
            v.state.name(),
            if v.current { "yes" } else { "" },
            since,
            v.handles
        );
    }
    if let Some(cur) = vs.iter().find(|v| v.current) {
        match (cur.rotation_period, cur.next_rotation) {
            (Some(p), Some(n)) => {
                println!("rotation: every {}, next {}", format_period(p), format_date(n));
            }
            (Some(p), None) => println!("rotation: every {} (key not active)", format_period(p)),
            _ => println!("rotation: manual (bulwark key rotate)"),
        }
        if cur.min_decrypt_version > 1 {
            println!("minimum decryption version: {}", cur.min_decrypt_version);
        }
    }
}

/// `bulwark verify --bundle`: verifies offline with a public-key history bundle.
pub(crate) fn verify_bundle(a: &crate::cmd_ops::VerifyArgs, bundle: &Path) -> CliResult<ExitCode> {
    let text = std::fs::read_to_string(bundle)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {}", bundle.display(), e.kind())))?;
    let h = KeyHistory::from_json(&text)?;
    let at = a.at.as_deref().map(|s| crate::cmd_lifecycle::parse_date("--at", s)).transpose()?;
    let mech = a
        .mechanism
        .as_deref()
        .map(|n| {
            bulwark_core::names::signature_mechanism(n)
                .ok_or_else(|| CliError::Usage(format!("unknown mechanism {n:?}")))
        })
        .transpose()?;
    let data = crate::cmd_ops::read(&a.input)?;
    let sig = crate::cmd_ops::read(&a.sig)?;
    match h.verify(a.key_version, at, mech.as_ref(), &data, &sig) {
        Ok(v) => {
            println!("signature OK (version {v})");
            Ok(ExitCode::SUCCESS)
        }
        Err(bulwark_core::Error::SignatureInvalid) => {
            println!("signature INVALID");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_format() {
        assert_eq!(parse_period("90d").unwrap(), 90 * 86_400);
        assert_eq!(parse_period("2w").unwrap(), 14 * 86_400);
        assert_eq!(parse_period("12h").unwrap(), 12 * 3600);
        assert_eq!(parse_period("3600s").unwrap(), 3600);
        for bad in ["", "d", "90", "90y", "-1d", "0d", "1.5d", "99999999999999999999w"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
        assert_eq!(format_period(90 * 86_400), "90d");
        assert_eq!(format_period(14 * 86_400), "2w");
        assert_eq!(format_period(61), "61s");
    }
}
