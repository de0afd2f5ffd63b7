//! Every listener survives connections that do not speak: raw TCP connections that never start
//! TLS, TLS connections that never send an HTTP/2 frame, HTTP clients that never finish their
//! headers, idle unix-socket connections, and running out of file descriptors. The daemon keeps
//! serving a real client, closes the silent connections after its deadlines, refuses
//! connections beyond its limit at once, and writes a bounded number of log lines.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_value, login_as, spawn_dev_with};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const LIMITS: [(&str, &str); 4] = [
    ("BULWARKD_MAX_CONNECTIONS", "40"),
    ("BULWARKD_HANDSHAKE_TIMEOUT_SECS", "2"),
    ("BULWARKD_HEADER_TIMEOUT_SECS", "2"),
    ("BULWARKD_IDLE_TIMEOUT_SECS", "4"),
];

fn addr(dir: &Path) -> SocketAddr {
    env_value(dir, "dev.env", "BULWARK_ENDPOINT").trim_start_matches("https://").parse().unwrap()
}

/// The health/metrics address the dev daemon printed.
fn http_addr(printed: &[String]) -> SocketAddr {
    printed
        .iter()
        .find_map(|l| l.strip_prefix("health and metrics: http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether the server closed `s` within `wait` (EOF or reset, not a read timeout).
fn closed_within<S: Read>(s: &mut S, wait: Duration) -> bool {
    let start = Instant::now();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if start.elapsed() >= wait {
                    return false;
                }
            }
            Err(_) => return true,
        }
    }
}

fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    s
}

/// A TLS connection with the crypto user's certificate that completes the handshake and then
/// sends nothing.
fn tls_silent(
    dir: &Path,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let read = |k: &str| std::fs::read(env_value(dir, "dev.env", k)).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("BULWARK_CA_CERT")) {
        roots.add(c.unwrap()).unwrap();
    }
    let certs = CertificateDer::pem_slice_iter(&read("BULWARK_CLIENT_CERT"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&read("BULWARK_CLIENT_KEY")).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let mut conn = rustls::ClientConnection::new(
        Arc::new(cfg),
        ServerName::try_from("localhost").unwrap().to_owned(),
    )
    .unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    tcp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn silent_and_excess_connections_are_closed_and_the_daemon_keeps_serving() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("bulwarkd.log");
    let (_daemon, dir, printed) =
        spawn_dev_with(d.path(), &[], &LIMITS, Stdio::from(std::fs::File::create(&log).unwrap()));
    let grpc = addr(&dir);
    let http = http_addr(&printed);

    // 20 raw TCP connections that never start TLS, 15 that complete it and say nothing.
    let mut raws: Vec<TcpStream> = (0..20).map(|_| raw(grpc)).collect();
    let mut silent: Vec<_> = (0..15).map(|_| tls_silent(&dir, grpc)).collect();
    // HTTP: 10 connections that never send a request, 5 that never finish their headers.
    let mut http_silent: Vec<TcpStream> = (0..10).map(|_| raw(http)).collect();
    let mut http_slow: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = raw(http);
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    // The unix socket: 10 connections that say nothing.
    let mut unix: Vec<std::os::unix::net::UnixStream> = (0..10)
        .map(|_| {
            let s = std::os::unix::net::UnixStream::connect(dir.join("bulwarkd.sock")).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            s
        })
        .collect();

    // A real client is served meanwhile (40 - 35 places left on the gRPC listener).
    let user = login_as(&dir, "dev.env");
    assert_eq!(user.random(16).unwrap().len(), 16);
    assert!(http_get(http, "/health").starts_with("HTTP/1.1 200"));

    // Beyond the limit, connections are closed at once (long before any deadline).
    let mut excess: Vec<TcpStream> = (0..20).map(|_| raw(grpc)).collect();
    let refused = excess
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_millis(500)))
        .filter(|c| *c)
        .count();
    assert!(refused >= 15, "{refused} of 20 connections beyond the limit closed at once");

    // After the deadlines (2 s handshake, 2 s for the first bytes), every silent connection
    // is closed; the real client, busy meanwhile, is served throughout.
    let busy = |secs: u64| {
        for _ in 0..secs * 2 {
            assert_eq!(user.random(16).unwrap().len(), 16);
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    busy(3);
    let wait = Duration::from_secs(3);
    assert!(raws.iter_mut().all(|s| closed_within(s, wait)), "raw TCP closed");
    assert!(excess.iter_mut().all(|s| closed_within(s, wait)), "excess closed");
    assert!(silent.iter_mut().all(|s| closed_within(s, wait)), "silent TLS closed");
    assert!(http_silent.iter_mut().all(|s| closed_within(s, wait)), "silent HTTP closed");
    assert!(http_slow.iter_mut().all(|s| closed_within(s, wait)), "slow HTTP headers closed");
    assert!(unix.iter_mut().all(|s| closed_within(s, wait)), "silent unix closed");
    // Past the idle timeout (4 s) the busy client's connection is still open.
    busy(5);
    let officer = login_as(&dir, "officer.env");
    assert_eq!(officer.random(8).unwrap().len(), 8);
    assert!(http_get(http, "/metrics").contains("bulwark_sealed 0"));

    // 55 handshake failures, 15 idle closes, 20 refusals: a handful of lines, not one each.
    let lines = log_lines(&log);
    assert!(lines.len() <= 12, "{} log lines: {lines:#?}", lines.len());
}

/// Out of file descriptors: `accept` fails with EMFILE while the connection stays queued. The
/// daemon backs off instead of spinning, logs a few lines, and serves again once the silent
/// connections time out.
#[test]
fn running_out_of_file_descriptors_does_not_spin_or_flood_the_log() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("bulwarkd.log");
    let (daemon, dir, _) = spawn_dev_with(
        d.path(),
        &[],
        &[
            ("BULWARKD_HANDSHAKE_TIMEOUT_SECS", "3"),
            ("BULWARKD_HEADER_TIMEOUT_SECS", "3"),
            ("BULWARKD_IDLE_TIMEOUT_SECS", "30"),
        ],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let grpc = addr(&dir);
    let pid = rustix::process::Pid::from_raw(i32::try_from(daemon.0.id()).unwrap()).unwrap();
    // Room for 20 more descriptors than the daemon has open now.
    let open = std::fs::read_dir(format!("/proc/{}/fd", daemon.0.id())).unwrap().count() as u64;
    let limit = rustix::process::Rlimit { current: Some(open + 20), maximum: Some(open + 20) };
    if let Err(e) = rustix::process::prlimit(Some(pid), rustix::process::Resource::Nofile, limit) {
        eprintln!("SKIPPED: cannot lower the daemon's file limit ({e})");
        return;
    }
    // 100 connections that never start TLS: the daemon runs out of descriptors.
    let started = Instant::now();
    let conns: Vec<TcpStream> = (0..100).map(|_| raw(grpc)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let cpu_before = cpu_ticks(daemon.0.id());
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(daemon.0.id()) - cpu_before;
    // A spinning accept loop burns a whole core (~200 ticks in 2 s at 100 Hz).
    assert!(spent < 50, "{spent} CPU ticks in 2 s while out of descriptors");
    drop(conns);
    // Once the silent connections are gone, the daemon serves again.
    let user = loop {
        if let Ok(c) = std::panic::catch_unwind(|| login_as(&dir, "dev.env")) {
            if c.random(8).is_ok() {
                break c;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "daemon serves again");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(user.random(16).unwrap().len(), 16);
    let lines = log_lines(&log);
    assert!(
        lines.iter().any(|l| l.contains("accept failed")),
        "EMFILE was reached and logged: {lines:#?}"
    );
    assert!(lines.len() <= 12, "{} log lines: {lines:#?}", lines.len());
}

/// utime + stime of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
