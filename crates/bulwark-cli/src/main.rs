//! `bulwark`: the Bulwark HSM command-line tool (embedded store mode).
//!
//! Every command opens the store named by `--store` or `BULWARK_STORE`, logs in with a PIN
//! taken from `BULWARK_PIN` / `BULWARK_SO_PIN`, a `--pin-file`, or a prompt (never from a plain
//! argument), does one thing, and exits: 0 on success, 1 when `verify` finds a bad signature,
//! 2 or more on any error, which is printed as one line on stderr.

#![forbid(unsafe_code)]

mod cmd_approval;
mod cmd_audit;
mod cmd_backup;
mod cmd_bench;
mod cmd_byok;
mod cmd_cluster;
mod cmd_destroy;
mod cmd_keys;
mod cmd_lifecycle;
mod cmd_ops;
mod cmd_remote;
mod cmd_remote_init;
mod cmd_usepolicy;
mod cmd_versions;
mod cmd_zeroize;
mod pin;

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_core::Error;
use clap::{Parser, Subcommand};

/// Exit code for errors (1 is reserved for "signature invalid").
const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "bulwark", version, about = "Bulwark software HSM", propagate_version = true)]
struct Cli {
    /// Store file (embedded mode).
    #[arg(long, global = true, env = "BULWARK_STORE", value_name = "PATH")]
    store: Option<PathBuf>,
    /// Read the user PIN (or the SO PIN for SO commands) from this file.
    #[arg(long, global = true, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    /// Remote HSM (bulwarkd), e.g. https://127.0.0.1:7443; TLS files from BULWARK_CA_CERT,
    /// BULWARK_CLIENT_CERT, BULWARK_CLIENT_KEY; login from BULWARK_USER, BULWARK_PASSWORD.
    #[arg(long, global = true, env = "BULWARK_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// An approval for one use of a key with a per-use quorum (repeat, one file per approver;
    /// see `bulwark key use-request`).
    #[arg(long = "use-approval", global = true, value_name = "FILE")]
    use_approval: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new store (SO PIN from BULWARK_SO_PIN or --so-pin-file, user PIN from
    /// BULWARK_PIN or --pin-file, else prompts). With --endpoint: initialize a remote HSM that
    /// has no store yet (--shares, --threshold, --share-dir; see docs/daemon.md).
    Init {
        /// Token label (1 to 32 bytes).
        #[arg(long)]
        label: String,
        /// Read the SO PIN from this file (embedded store).
        #[arg(long, value_name = "FILE")]
        so_pin_file: Option<PathBuf>,
        #[command(flatten)]
        policy: cmd_zeroize::PolicyArgs,
        #[command(flatten)]
        remote: cmd_remote_init::InitArgs,
    },
    /// Key management.
    #[command(subcommand)]
    Key(cmd_keys::KeyCommand),
    /// Sign a file.
    Sign(cmd_ops::SignArgs),
    /// Verify a signature (exit 0 valid, 1 invalid, 2 error).
    Verify(cmd_ops::VerifyArgs),
    /// Encrypt a file with an AES key (AES-256-GCM, fresh random nonce; see docs/cli.md).
    Encrypt(cmd_ops::CryptArgs),
    /// Decrypt a file made by `bulwark encrypt`.
    Decrypt(cmd_ops::CryptArgs),
    /// Random bytes from the HSM's RNG.
    Random {
        /// How many bytes.
        #[arg(long)]
        bytes: usize,
        /// Print hex instead of raw bytes.
        #[arg(long)]
        hex: bool,
        /// Write the raw bytes to this file (created 0600) instead of stdout.
        #[arg(long, value_name = "FILE", conflicts_with = "hex")]
        out: Option<PathBuf>,
    },
    /// Run the power-on self-tests and print each result.
    Selftest,
    /// Show the token status.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Seal a remote HSM: wipe its keys from memory (security officer; --endpoint).
    Seal,
    /// Present one unseal share to a remote HSM (a custodian; --endpoint).
    Unseal(cmd_remote::UnsealArgs),
    /// Users of a remote HSM: add (with optional TOTP), list, delete (security officer;
    /// --endpoint).
    #[command(subcommand)]
    User(cmd_remote::UserCommand),
    /// Replace a key's access list on a remote HSM (crypto officer; --endpoint).
    Access(cmd_remote::AccessArgs),
    /// Mark a wrapping key CKA_TRUSTED on a remote HSM: keys leave only under trusted keys
    /// there (security officer; --endpoint).
    Trust(cmd_remote::TrustArgs),
    /// PIN management.
    #[command(subcommand)]
    Pin(pin::PinCommand),
    /// Audit log: export, public-key, verify (offline), prove.
    #[command(subcommand)]
    Audit(cmd_audit::AuditCommand),
    /// Write an encrypted, authenticated backup of the whole store (SO PIN; backup passphrase
    /// from --passphrase-file, BULWARK_BACKUP_PASSPHRASE or a prompt). See docs/backup.md.
    Backup(cmd_backup::BackupArgs),
    /// Restore a backup into a freshly initialized store (SO PIN; backup passphrase as for
    /// backup). The whole file is checked first; any refusal changes nothing.
    Restore(cmd_backup::RestoreArgs),
    /// Destroy every key in the store irreversibly (SO PIN; asks for confirmation).
    Zeroize(cmd_zeroize::ZeroizeArgs),
    /// Tamper alarm: status, clear.
    #[command(subcommand)]
    Tamper(cmd_zeroize::TamperCommand),
    /// Load test: ops/s and p50/p99 latency of sign or encrypt on N concurrent clients
    /// (embedded, or remote single and batch with --endpoint).
    Bench(cmd_bench::BenchArgs),
    /// Store settings: the destruction wait and purge protection (security officer; see
    /// docs/lifecycle.md).
    #[command(subcommand)]
    Settings(cmd_destroy::SettingsCommand),
    /// Quorum approvals: make an approver key, approve a request (works offline).
    #[command(subcommand)]
    Approval(cmd_approval::ApprovalCommand),
    /// Cluster mode: nodes, leases, applied generation, lag (--endpoint).
    #[command(subcommand)]
    Cluster(cmd_cluster::ClusterCommand),
}

fn main() -> ExitCode {
    cmd_zeroize::harden();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulwark: error: {}", one_line(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Errors of the CLI itself (bad files, missing options) or of the core.
#[derive(Debug)]
pub(crate) enum CliError {
    Core(Error),
    Usage(String),
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Core(e)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Core(e) => write!(f, "{}", describe(e)),
            CliError::Usage(s) => f.write_str(s),
        }
    }
}

/// The message a person sees for a core error: the error itself, plus what to do about it
/// where that is not obvious.
fn describe(e: &Error) -> String {
    match e {
        Error::PinIncorrect => "incorrect PIN".into(),
        Error::PinLocked => {
            "PIN is locked after too many failed attempts; the security officer must set a new one \
             (bulwark pin init-user)"
                .into()
        }
        Error::NotInitialized(p) => {
            format!("no store at {p}: create one with `bulwark init --label LABEL`")
        }
        Error::UseApprovalRequired(m) => format!(
            "quorum approval required: {m}; make a request with `bulwark key use-request LABEL \
             --op OP --out FILE`, have each approver sign it, then re-run with --use-approval FILE \
             for each"
        ),
        e => e.to_string(),
    }
}

fn one_line(e: &CliError) -> String {
    e.to_string().replace('\n', " ")
}

pub(crate) type CliResult<T> = Result<T, CliError>;

/// The embedded store's path; refused when it (or one of its companion files) is a symbolic
/// link, dangling or not.
pub(crate) fn store_path(cli_store: Option<&PathBuf>) -> CliResult<PathBuf> {
    let p = cli_store.cloned().ok_or_else(|| {
        CliError::Usage("no store given: use --store PATH or set BULWARK_STORE".into())
    })?;
    bulwark_core::fsutil::check_store_path(&p)?;
    Ok(p)
}

/// Runs the command; with `--use-approval`, every key use it makes carries those approvals
/// (embedded: to the core; remote: in the request metadata).
fn run(mut cli: Cli) -> CliResult<ExitCode> {
    let files = std::mem::take(&mut cli.use_approval);
    match cmd_usepolicy::use_approvals(&files)? {
        Some(a) => bulwark_core::token::with_use_approvals(a, || run_command(cli)),
        None => run_command(cli),
    }
}

fn run_command(cli: Cli) -> CliResult<ExitCode> {
    if let Command::Approval(a) = cli.command {
        return cmd_approval::run(a);
    }
    if let Some(endpoint) = cli.endpoint.as_deref() {
        return cmd_remote::run(endpoint, cli.command);
    }
    let ctx = Ctx { store: cli.store, pin_file: cli.pin_file };
    match cli.command {
        Command::Init { label, so_pin_file, policy, remote } => {
            if let Some(opt) = remote.first_given() {
                return Err(CliError::Usage(format!(
                    "{opt} initializes a remote HSM: use it with --endpoint URL (an embedded \
                     store is protected by PINs, not unseal shares)"
                )));
            }
            let path = store_path(ctx.store.as_ref())?;
            let so = pin::so_pin(so_pin_file.as_deref(), true)?;
            let user = pin::user_pin(ctx.pin_file.as_deref(), true)?;
            bulwark_core::Token::init_with_options(
                &path,
                &label,
                &so,
                Some(&user),
                &policy.options(),
            )?;
            println!("initialized store {} (label {label:?})", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Key(k) => cmd_keys::run(&ctx, k),
        Command::Sign(a) => cmd_ops::sign(&ctx, &a),
        Command::Verify(a) => cmd_ops::verify(&ctx, &a),
        Command::Encrypt(a) => cmd_ops::encrypt(&ctx, &a),
        Command::Decrypt(a) => cmd_ops::decrypt(&ctx, &a),
        Command::Random { bytes, hex, out } => cmd_ops::random(&ctx, bytes, hex, out.as_deref()),
        Command::Selftest => cmd_ops::selftest(),
        Command::Status { json } => cmd_ops::status(&ctx, json),
        Command::Pin(p) => pin::run(&ctx, p),
        Command::Seal
        | Command::Unseal(_)
        | Command::User(_)
        | Command::Access(_)
        | Command::Trust(_) => {
            Err(CliError::Usage("seal, unseal, user, access and trust need --endpoint".into()))
        }
        Command::Audit(a) => cmd_audit::run(&ctx, a),
        Command::Backup(a) => cmd_backup::backup(&ctx, &a),
        Command::Restore(a) => cmd_backup::restore(&ctx, &a),
        Command::Zeroize(a) => cmd_zeroize::zeroize(&ctx, &a),
        Command::Tamper(t) => cmd_zeroize::tamper(&ctx, &t),
        Command::Approval(_) => unreachable!("handled above"),
        Command::Bench(a) => cmd_bench::embedded(&ctx, &a),
        Command::Settings(s) => cmd_destroy::settings(&ctx, s),
        Command::Cluster(_) => Err(CliError::Usage("cluster needs --endpoint".into())),
    }
}

/// What every command needs: where the store is and where the PIN comes from.
pub(crate) struct Ctx {
    pub(crate) store: Option<PathBuf>,
    pub(crate) pin_file: Option<PathBuf>,
}

impl Ctx {
    /// Opens the store and logs in as the normal user.
    pub(crate) fn user_token(&self) -> CliResult<bulwark_core::Token> {
        let t = self.open_token()?;
        let p = pin::user_pin(self.pin_file.as_deref(), false)?;
        t.login(bulwark_core::UserType::User, &p)?;
        Ok(t)
    }

    /// Opens the store and logs in as the security officer.
    pub(crate) fn so_token(&self) -> CliResult<bulwark_core::Token> {
        let t = self.open_token()?;
        let p = pin::so_pin(self.pin_file.as_deref(), false)?;
        t.login(bulwark_core::UserType::So, &p)?;
        Ok(t)
    }

    /// Opens the store without logging in.
    pub(crate) fn open_token(&self) -> CliResult<bulwark_core::Token> {
        let t = bulwark_core::Token::open(&store_path(self.store.as_ref())?)?;
        cmd_zeroize::on_open(&t);
        Ok(t)
    }
}
