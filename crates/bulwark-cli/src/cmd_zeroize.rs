//! `bulwark zeroize`, `bulwark tamper ...`, the security-policy options of `bulwark init`, and
//! the process hardening every command runs at start-up.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

use bulwark_core::token::{InitOptions, SecurityPolicy, TamperResponse};
use clap::{Args, Subcommand, ValueEnum};

use crate::{CliError, CliResult, Ctx};

static HARDENING: OnceLock<bulwark_harden::Report> = OnceLock::new();

/// Applies process hardening (no core dumps, not dumpable, memory locked where the limit
/// allows); call first thing in `main`.
pub(crate) fn harden() {
    HARDENING.get_or_init(bulwark_harden::harden);
}

/// Called on every opened token: a tracer attached to this process is a tamper signal when
/// the store's policy says so.
pub(crate) fn on_open(t: &bulwark_core::Token) {
    let tracer = HARDENING.get().and_then(|r| r.tracer).or_else(bulwark_harden::tracer_pid);
    if let Some(pid) = tracer {
        if t.security_policy().tracer_is_tamper {
            t.tamper_signal(&format!("tracer attached (pid {pid})"));
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ResponseArg {
    Alarm,
    Zeroize,
}

/// Security policy, fixed at `bulwark init`.
#[derive(Args, Debug)]
pub(crate) struct PolicyArgs {
    /// Response to tampering: alarm (refuse service until the SO clears it) or zeroize.
    #[arg(long, value_enum, default_value = "alarm")]
    tamper_response: ResponseArg,
    /// A file whose appearance is a tamper signal.
    #[arg(long, value_name = "PATH")]
    tamper_file: Option<PathBuf>,
    /// Consecutive SO PIN failures that count as tampering (0: never).
    #[arg(long, default_value_t = 5)]
    so_failure_limit: u32,
    /// Treat a debugger/tracer attached to a process using the store as tampering.
    #[arg(long)]
    tracer_is_tamper: bool,
    /// Sign an audit checkpoint every N records.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    checkpoint_every: u64,
    /// Sign an audit checkpoint when this many seconds passed since the last one.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    checkpoint_secs: u64,
    /// How successful key uses (sign, verify, encrypt, decrypt) are recorded: `bounded`
    /// (default: counted before each result, written as aggregated use-count records durable
    /// within 10 ms), `durable` (a record and a disk sync per use) or `off` (only refusals;
    /// administration and key management always are recorded).
    #[arg(long, value_enum, default_value = "bounded", value_name = "durable|bounded|off")]
    audit_key_use: KeyUseArg,
    /// Let keys leave the token only wrapped under CKA_TRUSTED keys (which only the SO marks),
    /// and keep unwrapped keys sensitive (default off: standard PKCS#11 behaviour).
    #[arg(long)]
    wrap_requires_trusted: bool,
    /// Refuse AES-GCM encryption with caller-chosen IVs: only IVs the token generates
    /// (CKG_GENERATE_RANDOM through the PKCS#11 3.0 message API), so no nonce is ever reused.
    #[arg(long)]
    require_token_iv: bool,
}

/// How successful key uses are recorded (the store policy `audit_key_use`).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum KeyUseArg {
    /// Durable before each result (one disk sync per use for a single caller).
    Durable,
    /// Counted before each result; the counts are durable within a bounded window (10 ms).
    Bounded,
    /// Not recorded (refusals, key management and administration still are).
    Off,
    /// Same as `durable` (the earlier flag value).
    #[value(hide = true)]
    On,
}

impl From<KeyUseArg> for bulwark_core::audit::AuditKeyUse {
    fn from(a: KeyUseArg) -> Self {
        match a {
            KeyUseArg::Durable | KeyUseArg::On => Self::Durable,
            KeyUseArg::Bounded => Self::Bounded,
            KeyUseArg::Off => Self::Off,
        }
    }
}

impl PolicyArgs {
    pub(crate) fn options(&self) -> InitOptions {
        let tamper_file = self.tamper_file.as_ref().map(|p| {
            // Stored absolute: the policy must mean the same file from any directory.
            std::path::absolute(p).unwrap_or_else(|_| p.clone())
        });
        InitOptions {
            policy: SecurityPolicy {
                tamper_response: match self.tamper_response {
                    ResponseArg::Alarm => TamperResponse::Alarm,
                    ResponseArg::Zeroize => TamperResponse::Zeroize,
                },
                so_failure_limit: self.so_failure_limit,
                tamper_file,
                tracer_is_tamper: self.tracer_is_tamper,
                checkpoint_every_records: self.checkpoint_every,
                checkpoint_every_secs: self.checkpoint_secs,
                audit_key_use: self.audit_key_use.into(),
                wrap_requires_trusted: self.wrap_requires_trusted,
                require_token_iv: self.require_token_iv,
            },
            ..InitOptions::default()
        }
    }
}

/// `bulwark zeroize` arguments.
#[derive(Args, Debug)]
pub(crate) struct ZeroizeArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub(crate) yes: bool,
    /// Quorum approvals (remote HSMs that require them).
    #[command(flatten)]
    pub(crate) approval: crate::cmd_approval::ApprovalArgs,
}

/// Tamper state commands.
#[derive(Subcommand, Debug)]
pub(crate) enum TamperCommand {
    /// Show the tamper alarm, the security policy and this process's hardening.
    Status,
    /// Security officer: clear an active tamper alarm (refused while its cause persists).
    Clear,
}

/// Asks the person at the terminal to type ZEROIZE (unless `yes`).
pub(crate) fn confirm_zeroize(yes: bool, what: &str) -> CliResult<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "refusing to zeroize without confirmation: pass --yes (no terminal to ask on)".into(),
        ));
    }
    eprint!("This destroys every key in {what} irreversibly. Type ZEROIZE to continue: ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CliError::Usage(format!("cannot read the confirmation: {}", e.kind())))?;
    if answer.trim() != "ZEROIZE" {
        return Err(CliError::Usage("not confirmed; nothing was changed".into()));
    }
    Ok(())
}

pub(crate) fn zeroize(ctx: &Ctx, a: &ZeroizeArgs) -> CliResult<ExitCode> {
    let path = crate::store_path(ctx.store.as_ref())?;
    if a.approval.is_set() {
        return Err(CliError::Usage(
            "--approval and --approval-request-out apply to a remote HSM (--endpoint)".into(),
        ));
    }
    confirm_zeroize(a.yes, &path.display().to_string())?;
    let t = ctx.so_token()?;
    t.zeroize()?;
    println!(
        "store {} zeroized: every master-key wrapping, object and the audit key are destroyed",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn tamper(ctx: &Ctx, cmd: &TamperCommand) -> CliResult<ExitCode> {
    match cmd {
        TamperCommand::Status => {
            let t = ctx.open_token()?;
            match t.tamper_alarm() {
                Some(r) => println!("tamper alarm: ACTIVE ({r})"),
                None => println!("tamper alarm: none"),
            }
            let p = t.security_policy();
            println!("tamper response: {:?}", p.tamper_response);
            println!("SO failure limit: {}", p.so_failure_limit);
            println!(
                "tamper file: {}",
                p.tamper_file.map_or_else(|| "-".into(), |f| f.display().to_string())
            );
            println!("tracer is tamper: {}", p.tracer_is_tamper);
            println!("audit key use:    {}", p.audit_key_use.as_str());
            if let Some(w) = t.audit_log().map(bulwark_core::audit::AuditLog::window) {
                println!(
                    "audit window:     {} ms or {} records (bounded records are durable by then)",
                    w.max_delay.as_millis(),
                    w.max_records
                );
            }
            if let Some(h) = HARDENING.get() {
                println!(
                    "this process: core dumps disabled {}, not dumpable {}, memory {:?}",
                    h.core_dumps_disabled, h.not_dumpable, h.memory
                );
            }
        }
        TamperCommand::Clear => {
            let t = ctx.so_token()?;
            t.clear_tamper()?;
            println!("tamper alarm cleared");
        }
    }
    Ok(ExitCode::SUCCESS)
}
