//! `bulwarkd`: runs the Bulwark network HSM, or sets one up (`init`, `pki`), or recovers a
//! locked-out security officer with the custodians' shares (`recover-user`).
//!
//! `bulwarkd --config FILE` serves a quorum-policy store, sealed until M custodians present
//! their shares (`bulwark unseal --share FILE`). `bulwarkd --dev [--dir DIR]` runs an
//! initialized, unsealed HSM for trying things out (NOT FOR PRODUCTION).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bulwark_core::token::{SecurityPolicy, TamperResponse};
use bulwarkd::config::Config;
use bulwarkd::error::DaemonError;
use bulwarkd::users::Role;
use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

/// Every heap block is wiped when it is freed. Passwords, shares and plaintexts pass through
/// buffers this daemon does not own (hyper's and h2's frame buffers, rustls's record buffers,
/// prost's decoded strings, tonic's encode buffers); wiping them one by one is not possible, so
/// freed memory never keeps them. Blocks still in use are wiped by their owners (Zeroizing).
#[global_allocator]
static ALLOC: zalloc::ZeroizingAlloc<std::alloc::System> =
    zalloc::ZeroizingAlloc(std::alloc::System);

#[derive(Parser, Debug)]
#[command(name = "bulwarkd", version, about = "Bulwark network HSM daemon")]
struct Cli {
    /// Configuration file (TOML; BULWARKD_* environment variables override it).
    #[arg(long, env = "BULWARKD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dev mode: initialized, unsealed, NOT FOR PRODUCTION.
    #[arg(long)]
    dev: bool,
    /// Dev mode directory (default: a new directory under the system temp dir).
    #[arg(long, value_name = "DIR", requires = "dev")]
    dir: Option<PathBuf>,
    /// Dev mode listen address (loopback only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443", requires = "dev")]
    listen: SocketAddr,
    /// Dev mode: how successful key uses are recorded (`bounded`, the default: durable within
    /// 10 ms; `durable`: before each result; `off`: only refusals, key management and
    /// administration).
    #[arg(
        long,
        value_enum,
        default_value = "bounded",
        value_name = "durable|bounded|off",
        requires = "dev"
    )]
    dev_audit_key_use: KeyUseArg,
    /// Dev mode: run a cluster of this many nodes on a private PostgreSQL (needs --dir).
    #[arg(long, value_name = "N", requires = "dev", requires = "dir")]
    nodes: Option<u8>,
    /// Dev cluster: lease length of each node, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000, requires = "nodes")]
    lease_ms: u64,
    /// A dev cluster's node: unseal at start with shares 1 and 2 of this directory.
    #[arg(long, value_name = "DIR", hide = true, conflicts_with = "dev")]
    dev_unseal_from: Option<PathBuf>,
    /// Dev mode: the response to tampering (SIGUSR1, integrity failures, ...).
    #[arg(long, value_enum, default_value = "alarm", requires = "dev")]
    dev_tamper_response: ResponseArg,
    #[command(subcommand)]
    command: Option<Cmd>,
}

/// How successful key uses are recorded (the store policy `audit_key_use`).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum KeyUseArg {
    /// Durable before each result (one disk sync per use for a single caller).
    Durable,
    /// Sequenced and chained before each result, durable within a bounded window (10 ms).
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

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ResponseArg {
    Alarm,
    Zeroize,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a quorum-policy store and write the custodians' share files.
    Init {
        /// Token label.
        #[arg(long, default_value = "bulwark")]
        label: String,
        /// Number of shares (custodians).
        #[arg(long)]
        shares: u8,
        /// Shares needed to unseal.
        #[arg(long)]
        threshold: u8,
        /// Directory for share-<i>.json.
        #[arg(long, value_name = "DIR")]
        share_dir: PathBuf,
        /// Encrypt each share to a passphrase (prompted once per custodian).
        #[arg(long)]
        encrypt_shares: bool,
        /// Response to tampering: alarm (refuse service until the SO clears it) or zeroize.
        #[arg(long, value_enum, default_value = "alarm")]
        tamper_response: ResponseArg,
        /// A file whose appearance is a tamper signal.
        #[arg(long, value_name = "PATH")]
        tamper_file: Option<PathBuf>,
        /// Treat a debugger/tracer attached to the daemon as tampering.
        #[arg(long)]
        tracer_is_tamper: bool,
        /// How successful key uses are recorded: `bounded` (default: chained before each
        /// result, durable within 10 ms), `durable` (before each result) or `off`.
        #[arg(long, value_enum, default_value = "bounded", value_name = "durable|bounded|off")]
        audit_key_use: KeyUseArg,
        /// The first security officer's name (password from BULWARK_NEW_PASSWORD or a prompt).
        #[arg(long, default_value = "so")]
        so_name: String,
        /// Let keys leave wrapped under any key the caller may use, as plain PKCS#11 allows
        /// (default: only under CKA_TRUSTED keys, which only the security officer marks).
        #[arg(long)]
        insecure_wrap_under_untrusted_keys: bool,
    },
    /// PKI: CA, server and client certificates.
    #[command(subcommand)]
    Pki(PkiCmd),
    /// Users.
    #[command(subcommand)]
    User(UserCmd),
}

#[derive(Subcommand, Debug)]
enum PkiCmd {
    /// Create a CA and a server certificate.
    Init {
        /// PKI directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Server names (DNS or IP); default localhost, 127.0.0.1, ::1.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Issue a client certificate.
    Client {
        /// PKI directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Client name (certificate CN).
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Recovery with the custodians' shares (the quorum outranks any officer): unlocks a user
    /// locked out by failed logins and, with --new-password, sets its password; creates it (as
    /// --role) if it does not exist. For the security officer locked out of a running HSM.
    /// Share passphrases and the new password come from prompts or BULWARK_NEW_PASSWORD.
    Recover {
        /// User name.
        #[arg(long)]
        name: String,
        /// Role for a user that does not exist yet.
        #[arg(long, default_value = "security-officer")]
        role: String,
        /// Set a new password (BULWARK_NEW_PASSWORD or a prompt).
        #[arg(long)]
        new_password: bool,
        /// A custodian's share file; give at least the threshold.
        #[arg(long = "share", value_name = "FILE", required = true)]
        shares: Vec<PathBuf>,
    },
}

/// A new password: BULWARK_NEW_PASSWORD, or typed twice at a prompt.
fn new_password_input() -> Result<Zeroizing<String>, DaemonError> {
    let pw = match std::env::var("BULWARK_NEW_PASSWORD") {
        Ok(p) if !p.is_empty() => Zeroizing::new(p),
        _ => {
            let a = prompt("new password: ")?;
            if *a != *prompt("again: ")? {
                return Err(DaemonError::Setup("passwords differ".into()));
            }
            a
        }
    };
    if pw.len() < 8 {
        return Err(DaemonError::Setup("passwords must be at least 8 bytes".into()));
    }
    Ok(pw)
}

fn prompt(msg: &str) -> Result<Zeroizing<String>, DaemonError> {
    rpassword::prompt_password(msg)
        .map(Zeroizing::new)
        .map_err(|e| DaemonError::Setup(format!("cannot read: {e}")))
}

fn config(cli: &Cli) -> Result<Config, DaemonError> {
    let p = cli.config.as_deref().ok_or_else(|| {
        DaemonError::Config("no configuration: use --config FILE (or --dev)".into())
    })?;
    Config::load(p)
}

fn main() -> ExitCode {
    bulwarkd::logging::init();
    // The daemon holds the master key: no core dumps, not dumpable, memory locked if allowed.
    let hardening = bulwark_harden::harden();
    tracing::info!(
        core_dumps_disabled = hardening.core_dumps_disabled,
        not_dumpable = hardening.not_dumpable,
        memory = ?hardening.memory,
        "process hardening"
    );
    if let Some(pid) = hardening.tracer {
        tracing::warn!(tracer = pid, "a tracer is attached to bulwarkd");
    }
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulwarkd: error: {}", bulwark_core::display::escape(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: &Cli) -> Result<(), DaemonError> {
    match &cli.command {
        Some(Cmd::Pki(PkiCmd::Init { dir, hosts })) => {
            let hosts = if hosts.is_empty() {
                vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
            } else {
                hosts.clone()
            };
            bulwarkd::pki::init(dir, &hosts).map_err(DaemonError::Setup)?;
            println!("CA and server certificate written to {}", dir.display());
            Ok(())
        }
        Some(Cmd::Pki(PkiCmd::Client { dir, name })) => {
            let (c, k) = bulwarkd::pki::issue_client(dir, name).map_err(DaemonError::Setup)?;
            println!("client certificate {} and key {}", c.display(), k.display());
            Ok(())
        }
        Some(Cmd::User(UserCmd::Recover { name, role, new_password, shares })) => {
            let cfg = config(cli)?;
            let role =
                Role::parse(role).ok_or_else(|| DaemonError::Setup("unknown role".into()))?;
            let pw = if *new_password { Some(new_password_input()?) } else { None };
            let mut files = Vec::new();
            for p in shares {
                let text =
                    Zeroizing::new(std::fs::read(p).map_err(|e| DaemonError::file("read", p, e))?);
                let f = bulwark_core::seal::ShareFile::parse(&text)?;
                let pass = if f.is_encrypted() {
                    Some(prompt(&format!("passphrase for {}: ", p.display()))?)
                } else {
                    None
                };
                files.push(f.share(pass.as_ref().map(|p| p.as_bytes()))?);
            }
            let done = bulwarkd::recover::recover_user(&cfg, name, role, pw.as_ref(), files)
                .map_err(DaemonError::Setup)?;
            println!("{done}");
            Ok(())
        }
        Some(Cmd::Init {
            label,
            shares,
            threshold,
            share_dir,
            encrypt_shares,
            tamper_response,
            tamper_file,
            tracer_is_tamper,
            audit_key_use,
            so_name,
            insecure_wrap_under_untrusted_keys,
        }) => {
            let policy = SecurityPolicy {
                tamper_response: match tamper_response {
                    ResponseArg::Alarm => TamperResponse::Alarm,
                    ResponseArg::Zeroize => TamperResponse::Zeroize,
                },
                tamper_file: tamper_file
                    .as_ref()
                    .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
                tracer_is_tamper: *tracer_is_tamper,
                audit_key_use: (*audit_key_use).into(),
                wrap_requires_trusted: !*insecure_wrap_under_untrusted_keys,
                ..SecurityPolicy::default()
            };
            let cfg = config(cli)?;
            bulwark_core::kernel::check_user_name(so_name)?;
            let so = bulwark_core::token::InitialUser {
                name: so_name.clone(),
                role: Role::SecurityOfficer,
                password: Zeroizing::new(new_password_input()?.as_bytes().to_vec()),
            };
            let mut pass = Vec::new();
            if *encrypt_shares {
                for i in 1..=*shares {
                    let p = prompt(&format!("passphrase for custodian {i}: "))?;
                    if p.len() < 8 {
                        return Err(DaemonError::Setup(
                            "passphrases must be at least 8 bytes".into(),
                        ));
                    }
                    pass.push(Some(p));
                }
            }
            let files = match cfg.store_location() {
                bulwarkd::config::StoreLocation::File(store) => bulwarkd::dev::init_store_with(
                    store,
                    label,
                    (*shares, *threshold),
                    share_dir,
                    &pass,
                    &policy,
                    std::slice::from_ref(&so),
                )?,
                bulwarkd::config::StoreLocation::Postgres(url) => bulwarkd::cluster_open::init_pg(
                    &cfg,
                    url,
                    label,
                    (*shares, *threshold),
                    share_dir,
                    &pass,
                    &policy,
                    std::slice::from_ref(&so),
                )?,
            };
            println!(
                "store {} created: {threshold} of {shares} shares unseal it; give each custodian one file:",
                cfg.store_shown()
            );
            for f in files {
                println!("  {}", f.display());
            }
            Ok(())
        }
        None if cli.dev && cli.nodes.is_some() => {
            let dir = cli.dir.as_deref().ok_or_else(|| DaemonError::Config("--dir".into()))?;
            run_dev_cluster(dir, cli.nodes.unwrap_or(1), cli.lease_ms)
        }
        None if cli.dev => {
            let policy = SecurityPolicy {
                audit_key_use: cli.dev_audit_key_use.into(),
                tamper_response: match cli.dev_tamper_response {
                    ResponseArg::Alarm => TamperResponse::Alarm,
                    ResponseArg::Zeroize => TamperResponse::Zeroize,
                },
                ..SecurityPolicy::for_daemon()
            };
            run_dev(cli.dir.as_deref(), cli.listen, &policy)
        }
        None => {
            let cfg = config(cli)?;
            if let Some(d) = bulwarkd::cluster_open::state_dir_for(&cfg) {
                // A cluster node's anti-rollback watermark is its own (no thread runs yet).
                std::env::set_var("BULWARK_STATE_DIR", d);
            }
            let unseal_from = cli.dev_unseal_from.clone();
            serve(async move {
                // No store yet: only the bootstrap service until a client initializes the HSM
                // (`bulwark --endpoint URL init`), then the normal service on the same socket.
                let store = cfg.store.clone();
                // Written, not println!: a closed stdout must not panic the server task.
                let listening = move |addr, initialized| {
                    use std::io::Write;
                    let line = if initialized {
                        format!("listening on {addr}")
                    } else {
                        let _ = writeln!(
                            std::io::stderr(),
                            "bulwarkd: NOT INITIALIZED: no store at {}; serving only remote \
                            initialization (`bulwark --endpoint URL init ...`) on {addr}",
                            store.display()
                        );
                        format!("listening on {addr} (not initialized)")
                    };
                    let _ = writeln!(std::io::stdout(), "{line}");
                };
                let running =
                    bulwarkd::bootstrap::start_daemon(&cfg, stop_signal(), listening).await?;
                if let (Some(r), Some(shares)) = (&running, unseal_from) {
                    let st = r.state.clone();
                    tokio::task::spawn_blocking(move || {
                        bulwarkd::dev::unseal_with_dev_shares(&shares, &st)
                    })
                    .await
                    .map_err(|e| DaemonError::Server(e.to_string()))??;
                    if let Some(h) = r.http {
                        let line = format!("metrics http://{h}/metrics\n");
                        let _ = std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes());
                    }
                    let _ = std::io::Write::write_all(&mut std::io::stdout(), b"unsealed\n");
                }
                Ok(running)
            })
        }
    }
}

fn run_dev(
    dir: Option<&Path>,
    listen: SocketAddr,
    policy: &SecurityPolicy,
) -> Result<(), DaemonError> {
    if !listen.ip().is_loopback() {
        return Err(DaemonError::Config("dev mode listens on loopback addresses only".into()));
    }
    let dir = if let Some(d) = dir {
        d.to_owned()
    } else {
        let mut b = [0u8; 4];
        bulwark_core::crypto::Provider::get().and_then(|p| p.random(&mut b))?;
        std::env::temp_dir().join(format!("bulwark-dev-{}", hex::encode(b)))
    };
    eprintln!("{}", bulwarkd::dev::BANNER);
    serve(async move {
        let (setup, running) = bulwarkd::dev::start_with(&dir, listen, policy, |_| ()).await?;
        println!("dev directory: {}", setup.dir.display());
        println!("crypto user:      . {}/dev.env", setup.dir.display());
        println!("crypto officer:   . {}/officer.env", setup.dir.display());
        println!("security officer: . {}/so.env", setup.dir.display());
        println!("unseal shares (3, threshold 2): {}/shares/", setup.dir.display());
        if let Some(h) = running.http {
            println!("health and metrics: http://{h}/metrics");
        }
        println!("listening on {}", running.addr);
        Ok(Some(running))
    })
}

fn run_dev_cluster(dir: &Path, nodes: u8, lease_ms: u64) -> Result<(), DaemonError> {
    eprintln!("{}", bulwarkd::dev_cluster::BANNER);
    let cluster = bulwarkd::dev_cluster::start(dir, nodes, lease_ms)?;
    let d = cluster.dir.display();
    println!("dev directory: {d}");
    println!("database: {} (socket in {}/pg/sock)", cluster.pg.tcp_url("bulwark"), d);
    for n in &cluster.nodes {
        println!(
            "{}: https://{} (pid {}): . {d}/{}/officer.env | dev.env | so.env",
            n.id,
            n.addr,
            n.pid(),
            n.id
        );
    }
    println!("unseal shares (3, threshold 2): {d}/shares/");
    println!("cluster ready ({} nodes)", cluster.nodes.len());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Server(e.to_string()))?;
    // Also stop when whoever started us is gone (a test harness that died): nothing of a dev
    // cluster may outlive it.
    let parent = rustix::process::getppid();
    rt.block_on(async {
        tokio::select! {
            () = stop_signal() => {}
            () = async {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    if rustix::process::getppid() != parent {
                        break;
                    }
                }
            } => {}
        }
    });
    eprintln!("bulwarkd: stopping the dev cluster");
    cluster.stop();
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = async {
            if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await }
        } => {}
    }
}

/// Runs the server on a multi-threaded runtime until SIGINT/SIGTERM, then shuts down gracefully.
/// `start` yields None when the daemon stopped before it served (an uninitialized daemon told
/// to stop).
fn serve<F>(start: F) -> Result<(), DaemonError>
where
    F: std::future::Future<Output = Result<Option<bulwarkd::server::Running>, DaemonError>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Server(e.to_string()))?;
    rt.block_on(async move {
        // Installs the SIGUSR1 handler from the start: the default action would kill an
        // uninitialized daemon. This receiver is never read; the one below, made once the HSM
        // has a store, sees only the signals that arrive from then on.
        let _usr1_installed =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1());
        let Some(running) = start.await? else { return Ok(()) };
        let state = running.state.clone();
        tokio::spawn(async move {
            // SIGUSR1: the external tamper signal (an enclosure sensor's stand-in).
            let Ok(mut usr1) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            else {
                tracing::error!("cannot watch SIGUSR1: no external tamper signal");
                return;
            };
            while usr1.recv().await.is_some() {
                let st = state.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    st.external_tamper("SIGUSR1 to bulwarkd (external tamper signal)");
                })
                .await;
            }
        });
        let stop = running.stopper();
        tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("shutting down");
            let _ = stop.send(true);
        });
        running.wait().await
    })
}
