//! Cluster mode end to end (docs/cluster.md): `bulwarkd --dev --nodes 3` — a private PostgreSQL
//! from the system's `postgresql` package (`scripts/test.sh` installs it) and three node
//! processes on loopback — driven through the real client over mTLS.
//!
//! - a key created on one node signs on the others at once; a destroy, a revocation of access
//!   and a compromise on one node are refused on the others by the time they return;
//! - a node stopped (SIGSTOP) across a destroy: the destroy returns once its lease expired, and
//!   after SIGCONT it refuses (UNAVAILABLE) until it has renewed and caught up, then answers
//!   "not found" — it never signs with the destroyed key;
//! - a client with an endpoint list fails over when its node dies, and its session follows;
//! - the database rolled back behind the nodes' watermarks is refused.
//!
//! Without PostgreSQL 15+ server binaries the tests print why and pass.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulwark_client::{Client, ClientConfig, ClientError, Code};
use rustix::process::Signal;

/// Lease of the test clusters (ms): short, so a stopped node drops out quickly.
const LEASE_MS: u64 = 1500;

struct Cluster {
    dir: tempfile::TempDir,
    parent: Child,
    db_url: String,
    /// Each node's `/metrics` address (`host:port`), from its start-up output.
    http: std::collections::HashMap<u8, String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for k in 1..=3 {
            if let Some(pid) = self.pid(k) {
                send(pid, Signal::CONT);
            }
        }
        send(self.parent.id(), Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.parent.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.parent.kill();
        let _ = self.parent.wait();
    }
}

impl Cluster {
    /// Starts a dev cluster of 3 nodes, or `None` without PostgreSQL.
    fn start() -> Option<Self> {
        if bulwark_store_pg::devserver::find_bin().is_none() {
            eprintln!("SKIPPED: no PostgreSQL 15+ server binaries (scripts/test.sh installs them)");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("bulwark-cluster-").tempdir().unwrap();
        let mut parent = Command::new(env!("CARGO_BIN_EXE_bulwarkd"))
            .args(["--dev", "--nodes", "3", "--lease-ms", &LEASE_MS.to_string(), "--dir"])
            .arg(dir.path())
            .env_remove("BULWARK_STATE_DIR")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = parent.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut db_url = String::new();
        let mut http = std::collections::HashMap::new();
        loop {
            let line = rx.recv_timeout(Duration::from_secs(120)).expect("dev cluster start");
            // "[node-K] metrics http://ADDR/metrics"
            if let Some((k, addr)) = line
                .strip_prefix("[node-")
                .and_then(|r| r.split_once("] metrics http://"))
                .and_then(|(k, r)| Some((k.parse::<u8>().ok()?, r.strip_suffix("/metrics")?)))
            {
                http.insert(k, addr.to_owned());
            }
            if let Some(rest) = line.strip_prefix("database: ") {
                rest.split_whitespace().next().unwrap().clone_into(&mut db_url);
            }
            if line.starts_with("cluster ready") {
                break;
            }
        }
        Some(Self { dir, parent, db_url, http })
    }

    fn node_dir(&self, k: u8) -> PathBuf {
        self.dir.path().join(format!("node-{k}"))
    }

    fn pid(&self, k: u8) -> Option<u32> {
        std::fs::read_to_string(self.node_dir(k).join("pid")).ok()?.trim().parse().ok()
    }

    fn signal(&self, k: u8, sig: Signal) {
        assert!(send(self.pid(k).unwrap(), sig), "signal to node {k}");
    }

    /// The env file value `key` of node `k`'s `file`.
    fn env(&self, k: u8, file: &str, key: &str) -> String {
        env_value(&self.node_dir(k).join(file), key)
    }

    /// A client of node `k` only, logged in as the user of `file` (dev/officer/so.env).
    fn login(&self, k: u8, file: &str) -> Client {
        let list = self.env(k, file, "BULWARK_ENDPOINT");
        let first = list.split(',').next().unwrap().to_owned();
        self.login_at(&first, k, file)
    }

    /// A client of the endpoint list of node `k`'s env file (node k first, then the others).
    fn login_list(&self, k: u8, file: &str) -> Client {
        self.login_at(&self.env(k, file, "BULWARK_ENDPOINT"), k, file)
    }

    fn login_at(&self, endpoint: &str, k: u8, file: &str) -> Client {
        let path = |key: &str| PathBuf::from(self.env(k, file, key));
        let cfg = ClientConfig::from_files(
            endpoint,
            &path("BULWARK_CA_CERT"),
            Some(&path("BULWARK_CLIENT_CERT")),
            Some(&path("BULWARK_CLIENT_KEY")),
        )
        .unwrap();
        let mut c = Client::connect(&cfg).unwrap();
        // A node starved of CPU (several clusters share two cores) may have let its lease lapse
        // for a moment: UNAVAILABLE is retried, as a client without a list would.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match c
                .login(&self.env(k, file, "BULWARK_USER"), &self.env(k, file, "BULWARK_PASSWORD"))
            {
                Ok(_) => return c,
                Err(e) if e.code() == Some(Code::Unavailable) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("login on node {k}: {e}"),
            }
        }
    }

    fn http(&self, k: u8) -> String {
        self.http.get(&k).cloned().unwrap_or_else(|| panic!("node {k} printed no metrics address"))
    }

    fn db(&self) -> postgres::Client {
        postgres::Client::connect(&self.db_url, postgres::NoTls).unwrap()
    }
}

/// A plain HTTP/1.0 GET of `path` on `addr`; the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or(out)
}

/// Sends `sig` to process `pid`; whether it was delivered.
fn send(pid: u32, sig: Signal) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    rustix::process::kill_process(p, sig).is_ok()
}

fn env_value(file: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("export ")?.strip_prefix(key)?.strip_prefix('=')?;
            Some(rest.trim_matches('\'').to_owned())
        })
        .unwrap_or_else(|| panic!("{key} in {}", file.display()))
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Code {
    match r {
        Err(e) => e.code().unwrap_or_else(|| panic!("not a status: {e}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

fn make_key(officer: &Client, label: &str) {
    officer.generate_key("ec-p256", label, false).unwrap();
    officer.set_key_access(label, &[("user:user", &["sign", "verify", "public"])]).unwrap();
}

#[test]
fn keys_are_coherent_across_nodes() {
    let Some(cl) = Cluster::start() else { return };
    let officer = cl.login(1, "officer.env");
    let users = [cl.login(2, "dev.env"), cl.login(3, "dev.env")];
    for round in 0..10 {
        let label = format!("k{round}");
        make_key(&officer, &label);
        // Created on node 1: usable on nodes 2 and 3 as soon as the call returned.
        for u in &users {
            let sig = u.sign(&label, "", b"hello", true).unwrap();
            assert!(u.verify(&label, "", b"hello", &sig, true).unwrap());
        }
        match round % 3 {
            0 => {
                officer.destroy_key(&label).unwrap();
                for u in &users {
                    assert_eq!(code(u.sign(&label, "", b"hello", true)), Code::NotFound);
                }
            }
            1 => {
                // Access taken away on node 1: refused on the others at once.
                officer.set_key_access(&label, &[]).unwrap();
                for u in &users {
                    let c = code(u.sign(&label, "", b"hello", true));
                    assert!(matches!(c, Code::NotFound | Code::PermissionDenied), "{c:?}");
                }
            }
            _ => {
                officer.change_key_state(&label, "compromise", [0; 3]).unwrap();
                for u in &users {
                    let c = code(u.sign(&label, "", b"hello", true));
                    assert!(
                        matches!(c, Code::FailedPrecondition | Code::PermissionDenied),
                        "{c:?}"
                    );
                }
            }
        }
    }
    // Every node is live and has applied everything.
    let so = cl.login(2, "so.env");
    let s = so.cluster_status().unwrap();
    assert!(s.cluster && s.serving);
    assert_eq!(s.nodes.len(), 3);
    assert!(s.nodes.iter().all(|n| n.live), "{:?}", s.nodes);
}

#[test]
fn a_stopped_node_refuses_until_it_caught_up() {
    let Some(cl) = Cluster::start() else { return };
    let officer = cl.login(1, "officer.env");
    let user3 = cl.login(3, "dev.env");
    make_key(&officer, "web");
    user3.sign("web", "", b"x", true).unwrap();
    cl.signal(3, Signal::STOP);
    // Node 3 cannot acknowledge: the destroy returns once its lease has expired.
    let t = Instant::now();
    officer.destroy_key("web").unwrap();
    let waited = t.elapsed();
    assert!(waited < Duration::from_millis(LEASE_MS * 3), "waited {waited:?}");
    let status = cl.login(2, "so.env").cluster_status().unwrap();
    let n3 = status.nodes.iter().find(|n| n.node_id == "node-3").unwrap();
    assert!(!n3.live, "the stopped node's lease lapsed");
    cl.signal(3, Signal::CONT);
    // Never a signature with the destroyed key: UNAVAILABLE while it catches up, then gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw = Vec::new();
    loop {
        let c = code(user3.sign("web", "", b"x", true));
        saw.push(c);
        match c {
            Code::Unavailable if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Code::NotFound => break,
            other => panic!("unexpected {other:?} after {saw:?}"),
        }
    }
    // It lapsed once, and it is back.
    let s = cl.login(3, "so.env").cluster_status().unwrap();
    assert!(s.serving);
    assert!(s.lease_lapses >= 1, "{s:?}");
    // The same in its /metrics.
    let http = cl.http(3);
    let m = http_get(&http, "/metrics");
    assert!(m.contains("bulwark_cluster_serving{node=\"node-3\"} 1"), "{m}");
    assert!(!m.contains("bulwark_cluster_lease_lapses_total{node=\"node-3\"} 0"), "{m}");
}

#[test]
fn clients_fail_over_and_sessions_follow() {
    let Some(cl) = Cluster::start() else { return };
    let officer = cl.login(1, "officer.env");
    make_key(&officer, "fo");
    // Node 1 first, then 2 and 3.
    let user = cl.login_list(1, "dev.env");
    let first = user.current_endpoint();
    user.sign("fo", "", b"a", true).unwrap();
    cl.signal(1, Signal::KILL);
    // The same client, the same session: the call moves to node 2, which logs in again.
    let sig = user.sign("fo", "", b"b", true).unwrap();
    assert!(user.verify("fo", "", b"b", &sig, true).unwrap());
    assert_ne!(user.current_endpoint(), first);
    // A client started now skips the dead node.
    let late = cl.login_list(1, "dev.env");
    late.sign("fo", "", b"c", true).unwrap();
    // A node that does not serve (lease lapsed) sends clients on, too.
    let user2 = cl.login_list(2, "dev.env");
    cl.signal(2, Signal::STOP);
    std::thread::sleep(Duration::from_millis(LEASE_MS + 200));
    cl.signal(2, Signal::CONT);
    // Node 2 answers UNAVAILABLE until it renewed, or already serves: either way it works.
    user2.sign("fo", "", b"d", true).unwrap();
}

#[test]
fn a_database_rolled_back_behind_the_nodes_is_refused() {
    let Some(cl) = Cluster::start() else { return };
    let officer = cl.login(1, "officer.env");
    make_key(&officer, "before");
    let user2 = cl.login(2, "dev.env");
    let user3 = cl.login(3, "dev.env");
    user2.sign("before", "", b"x", true).unwrap();
    // The attacker's snapshot of every table.
    let mut db = cl.db();
    let tables = ["header", "commits", "keyslots", "objects", "records", "attempts"];
    for t in tables {
        db.batch_execute(&format!("CREATE TABLE snap_{t} AS SELECT * FROM {t}")).unwrap();
    }
    make_key(&officer, "after");
    user2.sign("after", "", b"x", true).unwrap();
    // Point-in-time restore of the snapshot (every row, consistent and correctly MACed).
    let restore: Vec<String> = tables
        .iter()
        .map(|t| format!("DELETE FROM {t}; INSERT INTO {t} SELECT * FROM snap_{t};"))
        .collect();
    let mut sql = format!("BEGIN;{}", restore.concat());
    sql.push_str("COMMIT; NOTIFY bulwark_commits;");
    db.batch_execute(&sql).unwrap();
    // Every node has seen a later generation: none serves the rolled-back store.
    std::thread::sleep(Duration::from_millis(300));
    for (k, u) in [(2u8, &user2), (3, &user3)] {
        let r = u.sign("before", "", b"x", true);
        eprintln!("node {k} after the rollback: {r:?}");
        let c = code(r);
        assert!(matches!(c, Code::DataLoss | Code::FailedPrecondition), "node {k}: {c:?}");
    }
}

/// Each node's sealed watermark (docs/cluster.md "Anti-rollback across the cluster"): a node
/// whose watermark file was deleted does not start again; one lowered by hand on a running node
/// is refused at its next verification.
#[test]
fn a_node_watermark_deleted_or_forged_is_refused() {
    let Some(cl) = Cluster::start() else { return };
    let officer = cl.login(1, "officer.env");
    make_key(&officer, "marked");
    let mark_of = |k: u8| {
        let state = cl.node_dir(k).join("data/state");
        std::fs::read_dir(&state)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "generation"))
            .unwrap_or_else(|| panic!("node {k}: no watermark in {}", state.display()))
    };
    // Sealed: the generation and a 64-digit tag.
    let mark3 = mark_of(3);
    let text = std::fs::read_to_string(&mark3).unwrap();
    let (digits, tag) = text.trim().split_once(' ').expect("a sealed watermark");
    assert_eq!(tag.len(), 64, "{text:?}");
    let gen: u64 = digits.parse().unwrap();

    // Node 3 killed, its watermark deleted: it refuses to start, naming why.
    cl.signal(3, Signal::KILL);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&mark3).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulwarkd"))
        .arg("--config")
        .arg(cl.node_dir(3).join("bulwarkd.toml"))
        .arg("--dev-unseal-from")
        .arg(cl.dir.path().join("shares"))
        .env_remove("BULWARK_STATE_DIR")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "node 3 started without its watermark");
    assert!(err.contains("anti-rollback watermark is missing"), "{err}");

    // Node 2's watermark lowered by hand while it runs: the next change from another node makes
    // it verify the store again, and it refuses to serve instead of taking the lower baseline.
    let user2 = cl.login(2, "dev.env");
    user2.sign("marked", "", b"x", true).unwrap();
    std::fs::write(mark_of(2), format!("{:020}\n", gen.saturating_sub(1))).unwrap();
    // A commit on node 1 (if node 2 has not already verified again after another commit):
    // node 2 refuses (DATA_LOSS naming the watermark) and raises the store's tamper alarm,
    // which every node then answers with.
    let _ = officer.generate_key("ec-p256", "after-forgery", false);
    std::thread::sleep(Duration::from_millis(300));
    let r = user2.sign("marked", "", b"x", true);
    eprintln!("node 2 with a forged watermark: {r:?}");
    let e = r.expect_err("node 2 served with a forged watermark");
    let e = e.to_string();
    assert!(e.contains("mark is not sealed") || e.contains("tamper alarm"), "{e}");
}

/// Audit across nodes (docs/audit.md "Cluster audit"): every node ships its records, a signed
/// global chain covers them, the cluster export verifies offline and each tampering of it is
/// named; a record forged in the database at a node's next position is a fork that node
/// refuses (integrity alarm) while the key keeps the original rows.
#[test]
fn cluster_audit_exports_verify_and_forks_are_refused() {
    use bulwark_core::audit::verify_cluster_export;
    let Some(cl) = Cluster::start() else { return };
    let officer = cl.login(1, "officer.env");
    make_key(&officer, "audited");
    let users = [cl.login(1, "dev.env"), cl.login(2, "dev.env"), cl.login(3, "dev.env")];
    for u in &users {
        for _ in 0..3 {
            u.sign("audited", "", b"hello", true).unwrap();
        }
    }
    // Other nodes' records are covered once one of them appended a global entry over them.
    std::thread::sleep(Duration::from_millis(2500));
    let so = cl.login(1, "so.env");
    let pk = so.audit_public_key().unwrap();
    let mut lines = Vec::new();
    so.audit_export_cluster_each(|l| {
        lines.push(l.to_owned());
        Ok(())
    })
    .unwrap();
    let rep = verify_cluster_export(&lines, &pk);
    assert!(rep.ok(), "{:?}", rep.problems);
    assert_eq!(rep.nodes.len(), 3, "{:?}", rep.nodes);
    assert!(rep.nodes.values().all(|n| n.records > 0));
    assert!(lines.iter().any(|l| l.contains("\"label\":\"audited\"")));
    let problems = |ls: &[String]| verify_cluster_export(ls, &pk).problems.join("\n");

    // Tampering with the export: an edited record, a deleted one, a forked one inserted, a
    // global entry dropped.
    // Record 1 of the first node section.
    let rec = lines.iter().position(|l| l.starts_with("{\"type\":\"node\"")).unwrap() + 2;
    assert!(lines[rec].contains("\"seq\":1,"), "{}", lines[rec]);
    let mut edited = lines.clone();
    edited[rec] = edited[rec].replace("\"time_ms\":", "\"time_ms\":1");
    assert!(problems(&edited).contains("does not match its chain value (edited)"));
    let mut deleted = lines.clone();
    deleted.remove(rec);
    assert!(problems(&deleted).contains("is missing (gap)"), "{}", problems(&deleted));
    let mut forked = lines.clone();
    forked.insert(rec + 1, lines[rec].replace("\"time_ms\":", "\"time_ms\":2"));
    assert!(problems(&forked).contains("a fork"), "{}", problems(&forked));
    let globals = lines.iter().filter(|l| l.starts_with("{\"type\":\"global\"")).count();
    assert!(globals >= 1);
    let mut dropped = lines.clone();
    dropped.remove(1);
    let dropped_p = problems(&dropped);
    if globals > 1 {
        assert!(dropped_p.contains("global checkpoint 0 is missing (gap"), "{dropped_p}");
    } else {
        assert!(dropped_p.contains("not covered by a signed global checkpoint"), "{dropped_p}");
    }

    // The database: the key refuses a second record for a taken position...
    let mut db = cl.db();
    let row = db.query_one(
        "SELECT node_id, max(seq) FROM audit_records WHERE node_id = (SELECT max(node_id) \
         FROM audit_records) GROUP BY node_id",
        &[],
    );
    let row = row.unwrap();
    let (node, last): (String, i64) = (row.get(0), row.get(1));
    let err = db
        .execute(
            "INSERT INTO audit_records (node_id, seq, record) VALUES ($1, $2, 'forged')",
            &[&node, &last],
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(&postgres::error::SqlState::UNIQUE_VIOLATION));
    // ... and a record forged ahead of the node is a fork that node finds when it ships its own
    // record for that position: it raises the integrity alarm and stops serving.
    db.execute(
        "INSERT INTO audit_records (node_id, seq, record) SELECT $1, max(seq) + 1, 'forged' \
         FROM audit_records WHERE node_id = $1",
        &[&node],
    )
    .unwrap();
    let k: u8 = node.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().unwrap();
    let u = &users[usize::from(k - 1)];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if u.sign("audited", "", b"hello", true).is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "node {node} still serves after a fork");
        std::thread::sleep(Duration::from_millis(200));
    }
    let forged: Vec<u8> = db
        .query_one(
            "SELECT record FROM audit_records WHERE node_id = $1 AND seq = $2",
            &[&node, &(last + 1)],
        )
        .unwrap()
        .get(0);
    assert_eq!(forged, b"forged", "the node's own record never overwrote the row");
}
