//! `bulwark key destroy [--cancel]`, `bulwark key list --scheduled`, the scheduled part of
//! `bulwark key show`, and `bulwark settings` (the store's destruction wait and purge
//! protection), embedded and remote (docs/lifecycle.md, "Scheduled destruction"). The CLI
//! names keys and parses durations; the core decides, schedules and records.

use std::process::ExitCode;

use bulwark_client::{v1 as pb, Client};
use bulwark_core::destruction::{format_duration, parse_duration, DestroySettings};
use bulwark_core::token::{DestroyOutcome, ScheduledKey};
use bulwark_core::{Error, Token};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::cmd_approval::{self, ApprovalArgs};
use crate::cmd_lifecycle::format_date;
use crate::{CliError, CliResult, Ctx};

/// `bulwark settings ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum SettingsCommand {
    /// Show the store's destruction wait and purge protection.
    Show {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Set the wait between `key destroy` and the shredding of the key's material: `30d`,
    /// `12h`, `0` (immediate). Daemon stores need quorum approvals below 7 days; under purge
    /// protection the wait can only grow. Security officer.
    DestroyWait {
        /// The wait (s, m, h, d or w suffix; plain seconds without one).
        duration: String,
        #[command(flatten)]
        approval: ApprovalArgs,
    },
    /// Turn purge protection on: from then on the destruction wait can never be shortened, and
    /// purge protection never turned off. Security officer.
    PurgeProtection {
        /// `on` (the only value accepted: it cannot be turned off).
        state: String,
    },
}

fn when(due: u64) -> String {
    format_date(due)
}

/// `bulwark key destroy LABEL [--cancel]` on an embedded store.
pub(crate) fn destroy(t: &Token, label: &str, cancel: bool) -> CliResult<ExitCode> {
    if cancel {
        let pending: Vec<ScheduledKey> =
            t.scheduled_keys(Some(label))?.into_iter().filter(|k| !k.shredded).collect();
        if pending.is_empty() {
            return Err(CliError::Usage(format!(
                "no key labelled {label:?} has a destruction that can still be cancelled"
            )));
        }
        let mut state = "";
        for k in &pending {
            state = t.cancel_destroy(k.handle)?.name();
        }
        println!(
            "cancelled the destruction of {} object(s) labelled {label:?}; state {state}",
            pending.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Every version of the key (`by_label` would name only the current one).
    let objs = crate::cmd_keys::all_labelled(t, label)?;
    let mut due = None;
    for o in &objs {
        if let DestroyOutcome::Scheduled { due: d } = t.destroy_key_object(o.handle)? {
            due = Some(due.map_or(d, |x: u64| x.max(d)));
        }
    }
    print_destroyed(label, objs.len(), due);
    Ok(ExitCode::SUCCESS)
}

fn print_destroyed(label: &str, n: usize, due: Option<u64>) {
    match due {
        Some(d) => println!(
            "scheduled the destruction of {n} object(s) labelled {label:?}: unusable now, \
             material shredded on {} (cancel before then: bulwark key destroy --cancel {label:?})",
            when(d)
        ),
        None => println!("destroyed {n} object(s) labelled {label:?}"),
    }
}

fn scheduled_json(k: &ScheduledKey) -> Value {
    let mut attrs = serde_json::Map::new();
    for (a, v) in k.attrs.iter() {
        attrs.insert(crate::cmd_keys::attr_name(a), crate::cmd_keys::attr_json(a, v));
    }
    json!({
        "handle": k.handle,
        "label": k.attrs.label(),
        "class": k.attrs.class().map_or_else(|| "?".into(), |c| format!("{c:?}")),
        "type": k.key_type,
        "state": k.state.name(),
        "destroy_due": when(k.due),
        "shredded": k.shredded,
        "attributes": Value::Object(attrs),
    })
}

/// `bulwark key list --scheduled` (no label) or `key show LABEL` of a scheduled key.
pub(crate) fn list_scheduled(t: &Token, label: Option<&str>, json: bool) -> CliResult<ExitCode> {
    let keys = t.scheduled_keys(label)?;
    if let (Some(l), true) = (label, keys.is_empty()) {
        return Err(Error::NotFound(l.to_owned()).into());
    }
    if json {
        let v: Vec<Value> = keys.iter().map(scheduled_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    if label.is_some() {
        for k in &keys {
            let what = if k.shredded { "destroyed on" } else { "scheduled for destruction on" };
            println!(
                "object {} ({}), state {}, {what} {}",
                k.handle,
                k.key_type,
                k.state,
                when(k.due)
            );
            for (a, v) in k.attrs.iter() {
                println!(
                    "  {:<24} {}",
                    crate::cmd_keys::attr_name(a),
                    crate::cmd_keys::attr_text(a, v)
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<8} {:<24} {:<11} {:<14} DESTROY ON", "HANDLE", "LABEL", "CLASS", "TYPE");
    for k in &keys {
        println!(
            "{:<8} {:<24} {:<11} {:<14} {}",
            k.handle,
            bulwark_core::display::escape(&k.attrs.label()),
            k.attrs.class().map_or_else(|| "?".into(), |c| format!("{c:?}")),
            k.key_type,
            when(k.due)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_settings(s: &DestroySettings, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "destroy_wait_secs": s.wait_secs,
                "destroy_wait": format_duration(s.wait_secs),
                "min_wait_without_approval_secs": s.min_wait_secs,
                "purge_protection": s.purge_protection,
            })
        );
    } else {
        println!("destroy-wait      {}", format_duration(s.wait_secs));
        println!(
            "minimum wait      {} (shorter needs quorum approval)",
            format_duration(s.min_wait_secs)
        );
        println!("purge-protection  {}", if s.purge_protection { "on" } else { "off" });
    }
}

fn purge_on(state: &str) -> CliResult<()> {
    match state {
        "on" => Ok(()),
        "off" => Err(CliError::Usage("purge protection cannot be turned off".into())),
        _ => Err(CliError::Usage("purge-protection takes `on`".into())),
    }
}

/// `bulwark settings ...` on an embedded store (SO PIN).
pub(crate) fn settings(ctx: &Ctx, cmd: SettingsCommand) -> CliResult<ExitCode> {
    match cmd {
        SettingsCommand::Show { json } => {
            let t = ctx.so_token()?;
            print_settings(&t.destroy_settings()?, json);
        }
        SettingsCommand::DestroyWait { duration, approval } => {
            if approval.is_set() {
                return Err(CliError::Usage(
                    "quorum approvals are for remote HSMs (--endpoint); an embedded store's \
                     security officer sets the wait alone"
                        .into(),
                ));
            }
            let wait = parse_duration(&duration)?;
            let t = ctx.so_token()?;
            let s = t.set_destroy_settings(Some(wait), None, false)?;
            print_settings(&s, false);
        }
        SettingsCommand::PurgeProtection { state } => {
            purge_on(&state)?;
            let t = ctx.so_token()?;
            let s = t.set_destroy_settings(None, Some(true), false)?;
            print_settings(&s, false);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn from_pb(s: &pb::DestroySettings) -> DestroySettings {
    DestroySettings {
        wait_secs: s.wait_secs,
        min_wait_secs: s.min_wait_secs,
        purge_protection: s.purge_protection,
    }
}

/// `bulwark --endpoint URL settings ...`.
pub(crate) fn settings_remote(c: &Client, cmd: SettingsCommand) -> CliResult<ExitCode> {
    match cmd {
        SettingsCommand::Show { json } => print_settings(&from_pb(&c.destroy_settings()?), json),
        SettingsCommand::DestroyWait { duration, approval } => {
            let wait = parse_duration(&duration)?;
            let sid = c.status()?.store_id;
            let field = wait.to_string();
            let fields = [field.as_str()];
            let (approvals, not_after) =
                cmd_approval::collect(&approval, &sid, "destroy-wait", &fields)?;
            let r = pb::SetDestroySettingsRequest {
                set_wait: true,
                wait_secs: wait,
                purge_protection_on: false,
                approvals,
                approval_not_after: not_after,
            };
            let s = c.set_destroy_settings(r).map_err(|e| {
                cmd_approval::explain(e, &approval, &sid, "destroy-wait", &fields, not_after)
            })?;
            print_settings(&from_pb(&s), false);
        }
        SettingsCommand::PurgeProtection { state } => {
            purge_on(&state)?;
            let r = pb::SetDestroySettingsRequest {
                purge_protection_on: true,
                ..pb::SetDestroySettingsRequest::default()
            };
            print_settings(&from_pb(&c.set_destroy_settings(r)?), false);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bulwark --endpoint URL key destroy LABEL [--cancel]`.
pub(crate) fn destroy_remote(c: &Client, label: &str, cancel: bool) -> CliResult<ExitCode> {
    if cancel {
        let r = c.cancel_destroy_key(label)?;
        println!(
            "cancelled the destruction of {} object(s) labelled {label:?}; state {}",
            r.cancelled, r.state
        );
    } else {
        let (n, due) = c.destroy_key_scheduled(label)?;
        print_destroyed(label, n as usize, (due != 0).then_some(due));
    }
    Ok(ExitCode::SUCCESS)
}

/// `bulwark --endpoint URL key list --scheduled` / `key show LABEL` of a scheduled key.
pub(crate) fn list_scheduled_remote(
    c: &Client,
    label: Option<&str>,
    json: bool,
) -> CliResult<ExitCode> {
    let keys = c.list_scheduled_keys(label)?;
    if let (Some(l), true) = (label, keys.is_empty()) {
        return Err(Error::NotFound(l.to_owned()).into());
    }
    if json {
        let v: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({
                    "handle": k.handle, "label": k.label, "class": k.class, "type": k.key_type,
                    "state": k.state, "destroy_due": when(k.due), "shredded": k.shredded,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8} {:<24} {:<11} {:<14} {:<22} DESTROY ON",
        "HANDLE", "LABEL", "CLASS", "TYPE", "STATE"
    );
    for k in &keys {
        println!(
            "{:<8} {:<24} {:<11} {:<14} {:<22} {}",
            k.handle,
            bulwark_core::display::escape(&k.label),
            k.class,
            k.key_type,
            k.state,
            when(k.due)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `bulwark key archive LABEL --out FILE` (embedded store, SO PIN).
pub(crate) fn archive(
    ctx: &Ctx,
    label: &str,
    out: &std::path::Path,
    passphrase_file: Option<&std::path::Path>,
) -> CliResult<ExitCode> {
    if out.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists: choose another file name",
            out.display()
        )));
    }
    let t = ctx.so_token()?;
    let pass = crate::cmd_backup::passphrase(passphrase_file, true)?;
    let s = t.archive_key(label, out, &pass, bulwark_core::token::BACKUP_KDF)?;
    println!(
        "archived {} object(s) labelled {label:?} to {} ({} bytes): the material left the store \
         on {}; bring it back with `bulwark restore --in {}`",
        s.objects,
        out.display(),
        s.bytes,
        when(s.archived_at),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
