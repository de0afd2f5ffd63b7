//! `bulwark bench`: a load tool to size deployments. Runs signatures or AES-GCM encryptions on
//! N concurrent clients (threads; remote: one connection and session each) for a fixed time,
//! single and (remote) batched, and reports ops/s with p50/p99 latency per call.
//!
//! `--op create` measures durable key creation instead (concurrent creators share commits).
//!
//! Without `--key` it makes a temporary token key (`bench-<random>`, destroyed at the end), so
//! it needs a user that may create keys (embedded: the user PIN; remote: a crypto officer).

// Measurement code: counts become floats for rates and percentiles.
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss, clippy::cast_possible_truncation)]
// Timing loops: short names (thread, time, ops) read best.
#![allow(clippy::many_single_char_names)]

use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bulwark_core::names::{self, LabelledKey};
use bulwark_core::Token;
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::{CliError, CliResult, Ctx};

/// What to measure.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum BenchOp {
    /// Sign with the key's default mechanism (ECDSA keys: r||s, no DER conversion).
    Sign,
    /// AES-256-GCM encryption with a fresh random nonce.
    Encrypt,
    /// Durable creation of token keys (`--type`, default aes-256), each under a new label;
    /// the keys made are destroyed at the end (reported as a second run).
    Create,
}

/// `bulwark bench` arguments.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Operation.
    #[arg(long, value_enum, default_value = "sign")]
    op: BenchOp,
    /// Use this existing key instead of a temporary one.
    #[arg(long, value_name = "LABEL")]
    key: Option<String>,
    /// Type of the temporary key (default: ec-p256 for sign, aes-256 for encrypt).
    #[arg(long = "type", value_name = "TYPE")]
    key_type: Option<String>,
    /// Concurrent clients (threads).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Items per batch request (remote only; 0 skips the batch run).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// JSON output (one object per run).
    #[arg(long)]
    json: bool,
    /// With `--op create` (embedded): create exactly N token keys labelled PREFIX0..PREFIX(N-1)
    /// on `--clients` threads and keep them (fills a store for lookup benchmarks such as
    /// p11bench `find-by-label --count N`); `--seconds` is ignored.
    #[arg(long, value_name = "N", requires = "label_prefix")]
    populate: Option<u64>,
    /// Label prefix of `--populate` (p11bench's is `p11bench-obj-`).
    #[arg(long, value_name = "PREFIX")]
    label_prefix: Option<String>,
    /// First index of `--populate` (to grow a store populated before).
    #[arg(long, value_name = "K", default_value_t = 0, requires = "populate")]
    populate_from: u64,
}

struct Report {
    name: String,
    ops: u64,
    secs: f64,
    lat: Vec<Duration>,
    errors: u64,
    /// The first error seen (what to fix when a run fails).
    first_error: Option<String>,
}

impl Report {
    fn percentile(&mut self, p: f64) -> f64 {
        self.lat.sort_unstable();
        let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
        self.lat.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    fn print(mut self, as_json: bool) {
        let rate = if self.secs > 0.0 { self.ops as f64 / self.secs } else { 0.0 };
        let (p50, p99) = (self.percentile(0.50), self.percentile(0.99));
        if as_json {
            let v = json!({"run": self.name, "ops": self.ops, "seconds": self.secs,
                "ops_per_sec": rate, "p50_ms": p50, "p99_ms": p99, "errors": self.errors,
                "first_error": self.first_error});
            println!("{v}");
        } else {
            println!(
                "{:<40} {:>10.0} ops/s   p50 {:>8.3} ms   p99 {:>8.3} ms{}",
                self.name,
                rate,
                p50,
                p99,
                match &self.first_error {
                    Some(e) if self.errors > 0 => format!("   {} ERRORS (first: {e})", self.errors),
                    _ => String::new(),
                }
            );
        }
    }
}

/// Runs `make()`'s closure (returning the operations done per call, or an error) on `n`
/// threads for `secs` seconds.
fn run<F>(name: String, n: usize, secs: u64, make: impl Fn() -> CliResult<F>) -> CliResult<Report>
where
    F: FnMut() -> CliResult<u64> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let mut f = make()?;
        let b = barrier.clone();
        handles.push(std::thread::spawn(move || {
            b.wait();
            let end = Instant::now() + Duration::from_secs(secs);
            let (mut ops, mut errors, mut lat, mut first) = (0u64, 0u64, Vec::new(), None);
            while Instant::now() < end {
                let t = Instant::now();
                match f() {
                    Ok(k) => {
                        ops += k;
                        lat.push(t.elapsed());
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ops, errors, lat, first)
        }));
    }
    let t0 = Instant::now();
    let mut r = Report { name, ops: 0, secs: 0.0, lat: Vec::new(), errors: 0, first_error: None };
    for h in handles {
        let (o, e, l, first) =
            h.join().map_err(|_| CliError::Usage("a bench thread failed".into()))?;
        r.ops += o;
        r.errors += e;
        r.lat.extend(l);
        if r.first_error.is_none() {
            r.first_error = first;
        }
    }
    r.secs = t0.elapsed().as_secs_f64();
    Ok(r)
}

fn check(a: &BenchArgs) -> CliResult<String> {
    if !(1..=1024).contains(&a.clients) || !(1..=3600).contains(&a.seconds) {
        return Err(CliError::Usage("--clients must be 1..=1024 and --seconds 1..=3600".into()));
    }
    if a.size > 1 << 20 || a.batch > 4096 {
        return Err(CliError::Usage(
            "--size must be at most 1 MiB and --batch at most 4096".into(),
        ));
    }
    Ok(a.key_type
        .clone()
        .unwrap_or_else(|| if a.op == BenchOp::Sign { "ec-p256" } else { "aes-256" }.to_owned()))
}

fn temp_label() -> String {
    let mut r = [0u8; 6];
    // A name clash only makes the generation fail; the RNG's own failure is reported there.
    let _ = aws_lc_rs::rand::fill(&mut r);
    format!("bench-{}", hex::encode(r))
}

/// Embedded: `clients` threads on one opened token (the PKCS#11 module's situation).
pub(crate) fn embedded(ctx: &Ctx, a: &BenchArgs) -> CliResult<ExitCode> {
    let key_type = check(a)?;
    let t = Arc::new(ctx.user_token()?);
    if let (BenchOp::Create, Some(n), Some(prefix)) = (a.op, a.populate, &a.label_prefix) {
        embedded_populate(&t, a.clients, a.populate_from..n, prefix, &key_type)?.print(a.json);
        return Ok(ExitCode::SUCCESS);
    }
    if a.populate.is_some() {
        return Err(CliError::Usage("--populate needs --op create on an embedded store".into()));
    }
    if a.op == BenchOp::Create {
        for r in embedded_create(&t, a, &key_type)? {
            r.print(a.json);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (label, temporary) = if let Some(l) = &a.key {
        (l.clone(), false)
    } else {
        let spec = names::key_spec(&key_type)
            .ok_or_else(|| CliError::Usage(format!("unknown key type {key_type:?}")))?;
        let label = temp_label();
        let k = LabelledKey { spec, label: &label, id: None, extractable: false, sensitive: true };
        names::generate_labelled(&t, &k, 0)?;
        (label, true)
    };
    let r = embedded_run(&t, a, &label);
    if temporary {
        for h in t.find_by_label(&label).unwrap_or_default() {
            let _ = t.destroy_object(h.handle);
        }
    }
    r?.print(a.json);
    Ok(ExitCode::SUCCESS)
}

/// `--op create`: `clients` threads each generating token keys under fresh labels, then the
/// keys made destroyed (one thread) so the store is left as it was.
fn embedded_create(t: &Arc<Token>, a: &BenchArgs, key_type: &str) -> CliResult<Vec<Report>> {
    let spec = names::key_spec(key_type)
        .ok_or_else(|| CliError::Usage(format!("unknown key type {key_type:?}")))?;
    let prefix = temp_label();
    let made = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let name = format!("embedded create {key_type} x{}", a.clients);
    let created = run(name, a.clients, a.seconds, || {
        let (t, prefix, made) = (t.clone(), prefix.clone(), made.clone());
        Ok(move || {
            let n = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let label = format!("{prefix}-{n}");
            let k =
                LabelledKey { spec, label: &label, id: None, extractable: false, sensitive: true };
            names::generate_labelled(&t, &k, 0)?;
            Ok(1)
        })
    });
    // Every label handed out, made or not: a failed generation left nothing to destroy.
    let n = made.load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    let mut gone = Report {
        name: format!("embedded destroy {key_type} x1"),
        ops: 0,
        secs: 0.0,
        lat: Vec::new(),
        errors: 0,
        first_error: None,
    };
    for i in 0..n {
        for h in t.find_by_label(&format!("{prefix}-{i}")).unwrap_or_default() {
            let s = Instant::now();
            match t.destroy_object(h.handle) {
                Ok(()) => {
                    gone.ops += 1;
                    gone.lat.push(s.elapsed());
                }
                Err(e) => {
                    gone.errors += 1;
                    gone.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    gone.secs = start.elapsed().as_secs_f64();
    Ok(vec![created?, gone])
}

/// `--op create --populate N`: keys `PREFIX{i}` for `i` in `range`, made by `clients` threads
/// taking the next index, kept. Stops at the first failure (a store that refuses one creation would
/// refuse the rest).
fn embedded_populate(
    t: &Arc<Token>,
    clients: usize,
    range: std::ops::Range<u64>,
    prefix: &str,
    key_type: &str,
) -> CliResult<Report> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let spec = names::key_spec(key_type)
        .ok_or_else(|| CliError::Usage(format!("unknown key type {key_type:?}")))?;
    let count = range.end.saturating_sub(range.start);
    let next = AtomicU64::new(range.start);
    let failed = AtomicBool::new(false);
    let start = Instant::now();
    let results: Vec<(u64, Vec<Duration>, Option<String>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let (mut ops, mut lat, mut err) = (0u64, Vec::new(), None);
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= range.end {
                            break;
                        }
                        let label = format!("{prefix}{i}");
                        let k = LabelledKey {
                            spec,
                            label: &label,
                            id: None,
                            extractable: false,
                            sensitive: true,
                        };
                        let t0 = Instant::now();
                        match names::generate_labelled(t, &k, 0) {
                            Ok(_) => {
                                ops += 1;
                                lat.push(t0.elapsed());
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                err = Some(format!("{label}: {e}"));
                            }
                        }
                    }
                    (ops, lat, err)
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    let mut r = Report {
        name: format!("embedded populate {key_type} {}..{} x{clients}", range.start, range.end),
        ops: 0,
        secs: start.elapsed().as_secs_f64(),
        lat: Vec::new(),
        errors: 0,
        first_error: None,
    };
    for (ops, lat, err) in results {
        r.ops += ops;
        r.lat.extend(lat);
        if let Some(e) = err {
            r.errors += 1;
            r.first_error.get_or_insert(e);
        }
    }
    if r.ops != count && r.errors == 0 {
        r.errors = 1;
        r.first_error = Some("a populate thread failed".into());
    }
    Ok(r)
}

fn embedded_run(t: &Arc<Token>, a: &BenchArgs, label: &str) -> CliResult<Report> {
    let msg = vec![0x42u8; a.size];
    let name = format!("embedded {:?} {label} x{}", a.op, a.clients).to_lowercase();
    match a.op {
        BenchOp::Sign => {
            let h = crate::cmd_ops::key_handle(t, label, true)?;
            let (mech, _) = crate::cmd_ops::mechanism_for(t, h, None)?;
            run(name, a.clients, a.seconds, || {
                let (t, m, mech) = (t.clone(), msg.clone(), mech.clone());
                Ok(move || Ok(t.sign(h, &mech, &m).map(|_| 1)?))
            })
        }
        BenchOp::Create => Err(CliError::Usage("--op create makes its own keys".into())),
        BenchOp::Encrypt => {
            let h = crate::cmd_ops::aes_key(t, label)?;
            run(name, a.clients, a.seconds, || {
                let (t, m) = (t.clone(), msg.clone());
                Ok(move || {
                    let mut iv = [0u8; 12];
                    t.random(&mut iv)?;
                    let mech = bulwark_core::mechanism::Mechanism::AesGcm {
                        iv: iv.to_vec(),
                        aad: Vec::new(),
                        tag_bits: 128,
                    };
                    Ok(t.encrypt(h, &mech, &m).map(|_| 1)?)
                })
            })
        }
    }
}

/// Remote: `clients` connections, each logged in, single calls then batches.
pub(crate) fn remote(
    connect: &dyn Fn() -> CliResult<bulwark_client::Client>,
    endpoint: &str,
    a: &BenchArgs,
) -> CliResult<ExitCode> {
    let key_type = check(a)?;
    if a.populate.is_some() {
        return Err(CliError::Usage("--populate needs --op create on an embedded store".into()));
    }
    let admin = connect()?;
    if a.op == BenchOp::Create {
        let prefix = temp_label();
        let made = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let name = format!("remote create {key_type} x{} ({endpoint})", a.clients);
        let created = run(name, a.clients, a.seconds, || {
            let (c, prefix, made, ty) =
                (connect()?, prefix.clone(), made.clone(), key_type.clone());
            Ok(move || {
                let n = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                c.generate_key(&ty, &format!("{prefix}-{n}"), false)?;
                Ok(1)
            })
        });
        for i in 0..made.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = admin.destroy_key(&format!("{prefix}-{i}"));
        }
        created?.print(a.json);
        return Ok(ExitCode::SUCCESS);
    }
    let (label, temporary) = if let Some(l) = &a.key {
        (l.clone(), false)
    } else {
        let label = temp_label();
        admin.generate_key(&key_type, &label, false)?;
        (label, true)
    };
    let r = remote_runs(connect, endpoint, a, &label);
    if temporary {
        let _ = admin.destroy_key(&label);
    }
    for rep in r? {
        rep.print(a.json);
    }
    Ok(ExitCode::SUCCESS)
}

fn remote_runs(
    connect: &dyn Fn() -> CliResult<bulwark_client::Client>,
    endpoint: &str,
    a: &BenchArgs,
    label: &str,
) -> CliResult<Vec<Report>> {
    let msg = vec![0x42u8; a.size];
    let op = format!("{:?}", a.op).to_lowercase();
    let mut out = Vec::new();
    let single = format!("remote {op} {label} x{} ({endpoint})", a.clients);
    out.push(run(single, a.clients, a.seconds, || {
        let (c, m, l, sign) = (connect()?, msg.clone(), label.to_owned(), a.op == BenchOp::Sign);
        Ok(move || {
            if sign {
                c.sign(&l, "", &m, false)?;
            } else {
                c.encrypt(&l, &m)?;
            }
            Ok(1)
        })
    })?);
    if a.batch > 0 {
        let name = format!("remote batch {op} ({}/req) x{}", a.batch, a.clients);
        out.push(run(name, a.clients, a.seconds, || {
            let (c, l, sign) = (connect()?, label.to_owned(), a.op == BenchOp::Sign);
            let items = vec![msg.clone(); a.batch];
            Ok(move || {
                let n = if sign {
                    c.batch_sign(&l, "", items.clone(), false)?.len()
                } else {
                    c.batch_encrypt(&l, items.clone())?.len()
                };
                Ok(n as u64)
            })
        })?);
    }
    Ok(out)
}
