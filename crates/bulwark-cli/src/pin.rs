//! Where PINs come from: an environment variable, a file, or a prompt on the terminal. Never a
//! command-line argument (it would show in `ps` and shell history).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use bulwark_core::secret::Pin;
use clap::Subcommand;

use crate::{CliError, CliResult, Ctx};

/// PIN management commands.
#[derive(Subcommand, Debug)]
pub(crate) enum PinCommand {
    /// Change the user PIN (old PIN as usual; new PIN from BULWARK_NEW_PIN, --new-pin-file or a
    /// prompt). With --so, change the SO PIN instead.
    Change {
        /// Change the security officer's PIN.
        #[arg(long)]
        so: bool,
        /// Read the new PIN from this file.
        #[arg(long, value_name = "FILE")]
        new_pin_file: Option<std::path::PathBuf>,
    },
    /// Security officer: set a new user PIN, which also unlocks a locked user (SO PIN as usual;
    /// new user PIN from BULWARK_NEW_PIN, --new-pin-file or a prompt).
    InitUser {
        /// Read the new user PIN from this file.
        #[arg(long, value_name = "FILE")]
        new_pin_file: Option<std::path::PathBuf>,
    },
}

/// Reads a PIN file, refused when the group or others can access it (as ssh refuses an
/// unprotected key).
fn from_file(path: &Path) -> CliResult<Pin> {
    let raw = bulwark_core::fsutil::read_private(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => CliError::Usage(e.to_string()),
        k => CliError::Usage(format!("cannot read PIN file {}: {k}", path.display())),
    })?;
    let mut s = String::from_utf8(raw.to_vec())
        .map_err(|_| CliError::Usage(format!("PIN file {}: not UTF-8", path.display())))?;
    let trimmed_len = s.trim_end_matches(['\r', '\n']).len();
    s.truncate(trimmed_len);
    Ok(Pin::from_string(s))
}

fn from_env(var: &str) -> Option<Pin> {
    std::env::var(var).ok().filter(|v| !v.is_empty()).map(Pin::from_string)
}

fn prompt(what: &str, confirm: bool) -> CliResult<Pin> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "no {what} given: set the environment variable or use a PIN file (no terminal to prompt on)"
        )));
    }
    let first = rpassword::prompt_password(format!("{what}: "))
        .map_err(|e| CliError::Usage(format!("cannot read {what}: {}", e.kind())))?;
    if confirm {
        let mut again = rpassword::prompt_password(format!("{what} (again): "))
            .map_err(|e| CliError::Usage(format!("cannot read {what}: {}", e.kind())))?;
        let same = again == first;
        zeroize::Zeroize::zeroize(&mut again);
        if !same {
            return Err(CliError::Usage(format!("the two {what}s differ")));
        }
    }
    Ok(Pin::from_string(first))
}

fn get(file: Option<&Path>, var: &str, what: &str, confirm: bool) -> CliResult<Pin> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Some(p) = from_env(var) {
        return Ok(p);
    }
    prompt(&format!("{what} ({var})"), confirm)
}

/// The user PIN: `--pin-file`, else `BULWARK_PIN`, else a prompt.
pub(crate) fn user_pin(file: Option<&Path>, confirm: bool) -> CliResult<Pin> {
    get(file, "BULWARK_PIN", "user PIN", confirm)
}

/// The SO PIN: the given file, else `BULWARK_SO_PIN`, else a prompt.
pub(crate) fn so_pin(file: Option<&Path>, confirm: bool) -> CliResult<Pin> {
    get(file, "BULWARK_SO_PIN", "SO PIN", confirm)
}

fn new_pin(file: Option<&Path>) -> CliResult<Pin> {
    get(file, "BULWARK_NEW_PIN", "new PIN", true)
}

pub(crate) fn run(ctx: &Ctx, cmd: PinCommand) -> CliResult<ExitCode> {
    match cmd {
        PinCommand::Change { so, new_pin_file } => {
            let t = ctx.open_token()?;
            let (old, who) = if so {
                (so_pin(ctx.pin_file.as_deref(), false)?, bulwark_core::UserType::So)
            } else {
                (user_pin(ctx.pin_file.as_deref(), false)?, bulwark_core::UserType::User)
            };
            let new = new_pin(new_pin_file.as_deref())?;
            t.login(who, &old)?;
            t.set_pin(&old, &new)?;
            println!("PIN changed");
        }
        PinCommand::InitUser { new_pin_file } => {
            let t = ctx.so_token()?;
            let new = new_pin(new_pin_file.as_deref())?;
            t.init_pin(&new)?;
            println!("user PIN set; the user is unlocked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
