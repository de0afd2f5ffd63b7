//! Load test: remote ECDSA P-256 signing through bulwarkd (dev mode, in-process, loopback)
//! against the embedded token, single and batch. Prints ops/s and p50/p99 latency.
//!
//! `cargo run --release -p bulwarkd --example load -- [clients] [seconds] [batch]`
//! (defaults 32, 3, 64). Client and server share the machine, as the targets assume.

// Measurement code: counts become floats for rates and percentiles; short names are the maths.
#![allow(clippy::cast_precision_loss, clippy::cast_sign_loss, clippy::many_single_char_names)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bulwark_client::{Client, ClientConfig};
use bulwark_core::attr::{AttrType, AttrValue};
use bulwark_core::crypto::Curve;
use bulwark_core::mechanism::{KeyGenMechanism, Mechanism};
use bulwark_core::secret::Pin;
use bulwark_core::{Token, UserType};

struct Report {
    ops: u64,
    secs: f64,
    lat: Vec<Duration>,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn print(name: &str, mut r: Report) {
    println!(
        "{name:<34} {:>10.0} ops/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
        r.ops as f64 / r.secs,
        pct(&mut r.lat, 0.50),
        pct(&mut r.lat, 0.99)
    );
}

/// Runs `f` (returning signatures made per call) on `n` threads for `secs`.
fn run<F>(n: usize, secs: u64, make: impl Fn() -> F) -> Report
where
    F: FnMut() -> u64 + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let mut f = make();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let end = Instant::now() + Duration::from_secs(secs);
                let (mut ops, mut lat) = (0u64, Vec::new());
                while Instant::now() < end {
                    let t = Instant::now();
                    ops += f();
                    lat.push(t.elapsed());
                }
                (ops, lat)
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut r = Report { ops: 0, secs: 0.0, lat: Vec::new() };
    for h in handles {
        let (o, l) = h.join().unwrap();
        r.ops += o;
        r.lat.extend(l);
    }
    r.secs = t0.elapsed().as_secs_f64();
    r
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let clients = args.first().copied().unwrap_or(32);
    let secs = args.get(1).copied().unwrap_or(3) as u64;
    let batch = args.get(2).copied().unwrap_or(64);
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", tmp.path().join("state"));
    let msg = b"load test message".to_vec();

    // Embedded baseline: the same key type on a keyslots token, `clients` threads.
    let path = tmp.path().join("embedded.db");
    Token::init(
        &path,
        "bench",
        &Pin::new(b"so-pin-1".to_vec()),
        Some(&Pin::new(b"user-pin".to_vec())),
    )
    .unwrap();
    let t = Arc::new(Token::open(&path).unwrap());
    t.login(UserType::User, &Pin::new(b"user-pin".to_vec())).unwrap();
    let common = vec![
        (AttrType::Token, AttrValue::Bool(true)),
        (AttrType::Label, AttrValue::Bytes(b"k".to_vec())),
    ];
    let mut public = common.clone();
    public.push((AttrType::EcParams, AttrValue::Bytes(Curve::P256.oid_der().to_vec())));
    let (_, h) = t.generate_key_pair(KeyGenMechanism::EcKeyPairGen, &public, &common, 1).unwrap();
    let r = run(clients, secs, || {
        let (t, m) = (t.clone(), msg.clone());
        move || {
            t.sign(h, &Mechanism::EcdsaSha256, &m).unwrap();
            1
        }
    });
    let embedded = r.ops as f64 / r.secs;
    print(&format!("embedded sign x{clients}"), r);

    // Remote.
    let server = bulwarkd::dev::DevServer::start(&tmp.path().join("dev")).unwrap();
    let pki = server.dir.join("pki");
    let cfg = ClientConfig::from_files(
        &format!("https://{}", server.addr),
        &pki.join("ca.pem"),
        Some(&pki.join("crypto.pem")),
        Some(&pki.join("crypto-key.pem")),
    )
    .unwrap();
    let pw = std::fs::read_to_string(server.dir.join("officer.env"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("export BULWARK_PASSWORD=").map(|v| v.trim_matches('\'').to_owned())
        })
        .unwrap();
    let login = || {
        let mut c = Client::connect(&cfg).unwrap();
        c.login("crypto", &pw).unwrap();
        c
    };
    login().generate_key("ec-p256", "k", false).unwrap();
    let clients_vec: Vec<_> = (0..clients).map(|_| login()).collect();
    let pool = Arc::new(std::sync::Mutex::new(clients_vec));
    let r = run(clients, secs, || {
        let c = pool.lock().unwrap().pop().unwrap();
        let m = msg.clone();
        move || {
            c.sign("k", "", &m, false).unwrap();
            1
        }
    });
    let remote = r.ops as f64 / r.secs;
    print(&format!("remote sign x{clients}"), r);
    let clients_vec: Vec<_> = (0..clients).map(|_| login()).collect();
    let pool = Arc::new(std::sync::Mutex::new(clients_vec));
    let r = run(clients, secs, || {
        let c = pool.lock().unwrap().pop().unwrap();
        let items = vec![msg.clone(); batch];
        move || c.batch_sign("k", "", items.clone(), false).unwrap().len() as u64
    });
    let remote_batch = r.ops as f64 / r.secs;
    print(&format!("remote batch sign ({batch}/req) x{clients}"), r);
    println!(
        "remote/embedded: single {:.0} %, batch {:.0} %",
        100.0 * remote / embedded,
        100.0 * remote_batch / embedded
    );
}
