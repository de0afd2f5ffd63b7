//! End-to-end tests of `bulwark audit`, `bulwark zeroize` and `bulwark tamper` on an embedded
//! store: the offline verifier catches every kind of log manipulation at the right sequence
//! number, zeroization is complete, and a tamper file leads to its configured response.

#![allow(clippy::many_single_char_names)] // e (env), l (lines), i (index) throughout

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bulwark_core::audit::{chain_next, ExportLine};

const SO_PIN: &str = "so-secret-1234";
const PIN: &str = "user-pin-5678";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(init_extra: &[&str]) -> Self {
        let e = Self { dir: tempfile::tempdir().unwrap() };
        let mut args = vec!["init", "--label", "test"];
        args.extend_from_slice(init_extra);
        e.ok(&args);
        e
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .env("BULWARK_STORE", self.store())
            .env("BULWARK_SO_PIN", SO_PIN)
            .env("BULWARK_PIN", PIN)
            .env("BULWARK_STATE_DIR", self.dir.path().join("state"))
            .stdin(Stdio::null())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    fn fails(&self, args: &[&str], needle: &str) {
        let o = self.run(args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.to_lowercase().contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A store with some history, its export and public key.
fn exported() -> (Env, Vec<String>) {
    let e = Env::new(&["--checkpoint-every", "4"]);
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "k"]);
    std::fs::write(e.path("msg"), b"hello").unwrap();
    for _ in 0..4 {
        e.ok(&["sign", "--key", "k", "--in", &e.s("msg"), "--out", &e.s("sig")]);
    }
    e.ok(&["audit", "export", "--out", &e.s("log.jsonl")]);
    e.ok(&["audit", "public-key", "--out", &e.s("pub.pem")]);
    let lines = std::fs::read_to_string(e.path("log.jsonl")).unwrap();
    (e, lines.lines().map(str::to_owned).collect())
}

/// Runs `audit verify` on `lines`: `Ok(stdout)` or `Err(first bad seq)`.
fn verify(e: &Env, lines: &[String]) -> Result<String, u64> {
    let mut text = lines.join("\n");
    text.push('\n');
    verify_text(e, &text)
}

fn verify_text(e: &Env, text: &str) -> Result<String, u64> {
    std::fs::write(e.path("check.jsonl"), text).unwrap();
    let o =
        e.run(&["audit", "verify", "--log", &e.s("check.jsonl"), "--public-key", &e.s("pub.pem")]);
    if o.status.success() {
        return Ok(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let n = err
        .split("first bad sequence number ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok());
    Err(n.unwrap_or_else(|| panic!("no sequence number in {err:?}")))
}

fn idx_of(lines: &[String], seq: u64) -> usize {
    let needle = format!("\"type\":\"record\",\"seq\":{seq},");
    lines.iter().position(|l| l.contains(&needle)).unwrap()
}

fn checkpoint_sizes(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| match serde_json::from_str(l).unwrap() {
            ExportLine::Checkpoint(c) => Some(c.size),
            _ => None,
        })
        .collect()
}

/// The last checkpoint size at or before `seq` (what a recomputing attacker falls back to).
fn covered_before(lines: &[String], seq: u64) -> u64 {
    checkpoint_sizes(lines).into_iter().filter(|&s| s <= seq).max().unwrap_or(0)
}

#[test]
fn verify_accepts_the_genuine_export() {
    let (e, lines) = exported();
    let out = verify(&e, &lines).unwrap();
    let n = lines.iter().filter(|l| l.contains("\"type\":\"record\"")).count();
    assert!(out.starts_with(&format!("OK: {n} records")), "{out}");
    assert!(out.contains("last signed checkpoint: size"), "{out}");
    // The export ends with a checkpoint covering every record.
    assert_eq!(*checkpoint_sizes(&lines).last().unwrap(), n as u64);
    assert!(lines.last().unwrap().contains("\"type\":\"checkpoint\""));
    // Intermediate checkpoints were signed on the way (every 4 records).
    assert!(checkpoint_sizes(&lines).len() >= 3, "{lines:#?}");
}

#[test]
fn edited_record_is_caught_at_its_sequence_number() {
    let (e, lines) = exported();
    let mut l = lines.clone();
    let i = idx_of(&l, 6);
    assert!(l[i].contains("\"result\":\"ok\""));
    l[i] = l[i].replace("\"result\":\"ok\"", "\"result\":\"pin-incorrect\"");
    assert_eq!(verify(&e, &l), Err(6));
    // Editing the actor of the first record the crypto user made, too.
    let mut l = lines.clone();
    let i = l.iter().position(|x| x.contains("\"actor\":\"user\"")).unwrap();
    let seq = match serde_json::from_str(&l[i]).unwrap() {
        ExportLine::Record { record, .. } => record.seq,
        _ => unreachable!(),
    };
    l[i] = l[i].replace("\"actor\":\"user\"", "\"actor\":\"so\"");
    assert_eq!(verify(&e, &l), Err(seq));
}

#[test]
fn deleted_record_is_caught() {
    let (e, lines) = exported();
    let mut l = lines.clone();
    l.remove(idx_of(&l, 7));
    assert_eq!(verify(&e, &l), Err(7));
}

#[test]
fn inserted_record_is_caught_even_when_correctly_chained() {
    let (e, lines) = exported();
    let mut l = lines.clone();
    let i = idx_of(&l, 6);
    // Forge a record 6 that chains correctly from record 5.
    let ExportLine::Record { chain: prev, .. } = serde_json::from_str(&l[idx_of(&l, 5)]).unwrap()
    else {
        panic!()
    };
    let ExportLine::Record { mut record, .. } = serde_json::from_str(&l[i]).unwrap() else {
        panic!()
    };
    record.op = "destroy-object".into();
    let prev: [u8; 32] = hex::decode(prev).unwrap().try_into().unwrap();
    let chain = hex::encode(chain_next(&prev, &record.canonical()));
    l.insert(i, serde_json::to_string(&ExportLine::Record { record, chain }).unwrap());
    assert_eq!(verify(&e, &l), Err(6));
}

#[test]
fn reordered_records_are_caught() {
    let (e, lines) = exported();
    let mut l = lines.clone();
    let (a, b) = (idx_of(&l, 8), idx_of(&l, 9));
    l.swap(a, b);
    assert_eq!(verify(&e, &l), Err(8));
}

#[test]
fn truncated_export_is_caught() {
    let (e, lines) = exported();
    // Cut after record 9: the records after the last surviving checkpoint are uncovered.
    let cut = idx_of(&lines, 9) + 1;
    let l: Vec<String> =
        lines[..cut].iter().filter(|x| !x.contains("\"size\":10,")).cloned().collect();
    let expect = covered_before(&l, 9);
    assert_eq!(verify(&e, &l), Err(expect));
    // A file cut in the middle of record 9's line.
    let mut text = lines[..idx_of(&lines, 9)].join("\n");
    text.push('\n');
    text.push_str(&lines[idx_of(&lines, 9)][..40]);
    assert_eq!(verify_text(&e, &text), Err(9));
}

#[test]
fn edit_with_recomputed_chain_is_caught_by_the_next_checkpoint() {
    let (e, lines) = exported();
    let mut l = lines.clone();
    let start = idx_of(&l, 6);
    let ExportLine::Record { chain: prev, .. } = serde_json::from_str(&l[idx_of(&l, 5)]).unwrap()
    else {
        panic!()
    };
    let mut prev: [u8; 32] = hex::decode(prev).unwrap().try_into().unwrap();
    for line in l.iter_mut().skip(start) {
        if let ExportLine::Record { mut record, .. } = serde_json::from_str(line).unwrap() {
            if record.seq == 6 {
                record.result = "pin-incorrect".into();
            }
            prev = chain_next(&prev, &record.canonical());
            *line = serde_json::to_string(&ExportLine::Record { record, chain: hex::encode(prev) })
                .unwrap();
        }
    }
    assert_eq!(verify(&e, &l), Err(covered_before(&lines, 6)));
}

#[test]
fn inclusion_proof_verifies_and_its_tampered_twin_fails() {
    let (e, lines) = exported();
    std::fs::write(e.path("proof.json"), e.ok(&["audit", "prove", "3"])).unwrap();
    let out = e.ok(&[
        "audit",
        "verify",
        "--public-key",
        &e.s("pub.pem"),
        "--proof",
        &e.s("proof.json"),
        "--log",
        &e.s("log.jsonl"),
    ]);
    assert!(out.contains("record 3 is included"), "{out}");
    // The proof against a log whose record 3 was edited fails.
    let mut l = lines.clone();
    let i = idx_of(&l, 3);
    l[i] = l[i].replace("\"session\":0", "\"session\":9");
    std::fs::write(e.path("edited.jsonl"), l.join("\n")).unwrap();
    let o = e.run(&[
        "audit",
        "verify",
        "--public-key",
        &e.s("pub.pem"),
        "--proof",
        &e.s("proof.json"),
        "--log",
        &e.s("edited.jsonl"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    // A proof with a flipped path node fails.
    let p = std::fs::read_to_string(e.path("proof.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&p).unwrap();
    let node = v["path"][0].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", if node.starts_with('0') { "1" } else { "0" }, &node[1..]);
    std::fs::write(e.path("bad.json"), p.replace(&node, &flipped)).unwrap();
    let o =
        e.run(&["audit", "verify", "--public-key", &e.s("pub.pem"), "--proof", &e.s("bad.json")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn only_the_so_reads_the_log_and_failures_are_recorded() {
    let e = Env::new(&[]);
    // The user PIN does not open the log (the SO PIN variable holds the user's PIN here).
    let o = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .env("BULWARK_STORE", e.store())
        .env("BULWARK_SO_PIN", PIN)
        .env("BULWARK_STATE_DIR", e.dir.path().join("state"))
        .stdin(Stdio::null())
        .args(["audit", "export", "--out", &e.s("x.jsonl")])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("incorrect PIN"), "{}", stderr(&o));
    e.ok(&["audit", "export", "--out", &e.s("log.jsonl")]);
    let log = std::fs::read_to_string(e.path("log.jsonl")).unwrap();
    assert!(log.contains("\"op\":\"login\"") && log.contains("\"result\":\"pin-incorrect\""));
    assert!(!log.contains(PIN) && !log.contains(SO_PIN));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn side(p: &Path, ext: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

#[test]
fn zeroize_destroys_every_key_and_says_zeroized() {
    let e = Env::new(&[]);
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "a", "--not-sensitive"]);
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "k"]);
    let key = hex::decode(e.ok(&["key", "export", "a"]).trim()).unwrap();
    assert_eq!(key.len(), 32);
    e.ok(&["audit", "public-key", "--out", &e.s("pub.pem")]);
    // Without --yes and without a terminal nothing happens.
    e.fails(&["zeroize"], "--yes");
    e.ok(&["key", "show", "a"]);
    let out = e.ok(&["zeroize", "--yes"]);
    assert!(out.contains("zeroized"), "{out}");
    for p in [e.store(), side(&e.store(), "-wal"), side(&e.store(), "-audit")] {
        if let Ok(bytes) = std::fs::read(&p) {
            assert!(!contains(&bytes, &key), "key bytes remain in {}", p.display());
        }
    }
    for args in [
        &["key", "list"][..],
        &["key", "export", "a"],
        &["sign", "--key", "k", "--in", "/dev/null", "--out", "/dev/null"],
        &["pin", "init-user"],
        &["zeroize", "--yes"],
        &["tamper", "clear"],
    ] {
        e.fails(args, "zeroized");
    }
    let st = e.ok(&["status", "--json"]);
    assert!(st.contains("\"zeroized\": true"), "{st}");
    // Re-running init does not silently replace it either.
    e.fails(&["init", "--label", "again"], "exists");
    // The log is still readable without any PIN and verifies; it ends with the zeroize.
    let o = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .env("BULWARK_STORE", e.store())
        .env("BULWARK_STATE_DIR", e.dir.path().join("state"))
        .stdin(Stdio::null())
        .args(["audit", "export", "--out", &e.s("log.jsonl")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(e.path("log.jsonl")).unwrap();
    let lines: Vec<String> = log.lines().map(str::to_owned).collect();
    verify(&e, &lines).unwrap();
    let last_record = lines.iter().rev().find(|l| l.contains("\"type\":\"record\"")).unwrap();
    assert!(last_record.contains("\"op\":\"zeroize\""), "{last_record}");
}

#[test]
fn tamper_file_alarm_refuses_service_until_cleared() {
    let e2 = Env { dir: tempfile::tempdir().unwrap() };
    let flag = e2.path("case-open");
    e2.ok(&["init", "--label", "t", "--tamper-file", flag.to_str().unwrap()]);
    e2.ok(&["key", "generate", "--type", "aes-256", "--label", "a"]);
    std::fs::write(&flag, b"").unwrap();
    e2.fails(&["key", "list"], "tamper alarm");
    assert!(e2.ok(&["tamper", "status"]).contains("ACTIVE"));
    e2.fails(&["tamper", "clear"], "still present");
    std::fs::remove_file(&flag).unwrap();
    e2.ok(&["tamper", "clear"]);
    assert!(e2.ok(&["key", "list"]).contains('a'));
    let st = e2.ok(&["tamper", "status"]);
    assert!(st.contains("tamper alarm: none"), "{st}");
    assert!(st.contains("core dumps disabled true, not dumpable true"), "{st}");
}

#[test]
fn zeroize_response_on_tamper_file() {
    let e = Env { dir: tempfile::tempdir().unwrap() };
    let flag = e.path("case-open");
    e.ok(&[
        "init",
        "--label",
        "t",
        "--tamper-file",
        flag.to_str().unwrap(),
        "--tamper-response",
        "zeroize",
    ]);
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "a"]);
    std::fs::write(&flag, b"").unwrap();
    e.fails(&["key", "list"], "zeroized");
    e.fails(&["key", "list"], "zeroized");
}

#[test]
fn tracer_is_a_tamper_signal_when_configured() {
    let strace = Command::new("sh").args(["-c", "command -v strace"]).output().unwrap();
    assert!(
        strace.status.success(),
        "strace is not installed: run the tests through scripts/test.sh, which installs it"
    );
    let e = Env::new(&["--tracer-is-tamper"]);
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "a"]);
    let o = Command::new("strace")
        .args(["-f", "-o", "/dev/null", env!("CARGO_BIN_EXE_bulwark"), "key", "list"])
        .env("BULWARK_STORE", e.store())
        .env("BULWARK_PIN", PIN)
        .env("BULWARK_STATE_DIR", e.dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("tracer attached"), "{}", stderr(&o));
    assert!(e.ok(&["tamper", "status"]).contains("ACTIVE"));
    e.ok(&["tamper", "clear"]);
    e.ok(&["key", "list"]);
    // Without the option a tracer is only a tracer.
    let e = Env::new(&[]);
    let o = Command::new("strace")
        .args(["-f", "-o", "/dev/null", env!("CARGO_BIN_EXE_bulwark"), "key", "list"])
        .env("BULWARK_STORE", e.store())
        .env("BULWARK_PIN", PIN)
        .env("BULWARK_STATE_DIR", e.dir.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `audit verify` refuses export lines carrying fields it does not check, and names the line.
#[test]
fn verify_rejects_unknown_fields_and_names_the_line() {
    let (e, lines) = exported();
    let i = idx_of(&lines, 3);
    let mut l = lines.clone();
    l[i] = l[i].replacen('{', "{\"approved_by\":\"mallory\",", 1);
    let mut text = l.join("\n");
    text.push('\n');
    std::fs::write(e.path("check.jsonl"), &text).unwrap();
    let o =
        e.run(&["audit", "verify", "--log", &e.s("check.jsonl"), "--public-key", &e.s("pub.pem")]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&format!("line {}", i + 1)) && err.contains("approved_by"), "{err}");
    // An unknown field in a checkpoint is refused just the same.
    let last = lines.len() - 1;
    let mut l = lines.clone();
    l[last] = l[last].replacen('{', "{\"extra\":1,", 1);
    assert!(verify(&e, &l).is_err());
}

/// Restoring an older copy of the audit log, between two checkpoints, is noticed by the next
/// process that opens the store; the out-of-store mark is private.
#[test]
fn audit_log_rolled_back_within_the_checkpoint_interval_is_detected_at_the_next_open() {
    let e = Env::new(&["--checkpoint-every", "1000"]);
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "k"]);
    std::fs::write(e.path("msg"), b"hello").unwrap();
    let log = side(&e.store(), "-audit");
    let old = std::fs::read(&log).unwrap();
    assert!(!side(&e.store(), "-audit-wal").exists(), "closed cleanly: no WAL left");
    e.ok(&["sign", "--key", "k", "--in", &e.s("msg"), "--out", &e.s("sig")]);
    std::fs::write(&log, old).unwrap();
    let o = e.run(&["sign", "--key", "k", "--in", &e.s("msg"), "--out", &e.s("sig")]);
    assert!(!o.status.success(), "a rolled-back audit log went unnoticed");
    let err = stderr(&o).to_lowercase();
    assert!(err.contains("tamper") || err.contains("integrity"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let state = e.path("state");
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        let marks: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|d| d.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "audit"))
            .collect();
        assert_eq!(marks.len(), 1, "{marks:?}");
        assert_eq!(std::fs::metadata(&marks[0]).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

/// `O_NONBLOCK` on Linux.
const O_NONBLOCK: i32 = 0o4000;

/// A `bulwark` process killed (SIGKILL) while it has the store open leaves an
/// `unclean-shutdown` record, written by the next process; `audit verify` reports it, and
/// fails with `--strict`.
#[test]
fn killed_process_is_reported_as_an_unclean_shutdown() {
    use std::os::unix::fs::OpenOptionsExt;
    let e = Env::new(&[]);
    e.ok(&["key", "generate", "--type", "ec-p256", "--label", "k"]);
    let fifo = e.path("in.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut ch = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .env("BULWARK_STORE", e.store())
        .env("BULWARK_PIN", PIN)
        .env("BULWARK_STATE_DIR", e.dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .args(["sign", "--key", "k", "--in", fifo.to_str().unwrap(), "--out", &e.s("sig")])
        .spawn()
        .unwrap();
    // The signer opens the store, logs in, then blocks reading the FIFO: wait for its read end
    // (opening a FIFO's write end without blocking fails until a reader has it open).
    let start = std::time::Instant::now();
    let _writer = loop {
        if let Ok(w) = std::fs::OpenOptions::new().write(true).custom_flags(O_NONBLOCK).open(&fifo)
        {
            break w;
        }
        assert!(start.elapsed().as_secs() < 60, "the signer never read its input");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    ch.kill().unwrap(); // SIGKILL
    ch.wait().unwrap();
    e.ok(&["audit", "export", "--out", &e.s("log.jsonl")]);
    e.ok(&["audit", "public-key", "--out", &e.s("pub.pem")]);
    let check = ["audit", "verify", "--log", &e.s("log.jsonl"), "--public-key", &e.s("pub.pem")];
    let out = e.ok(&check);
    assert!(out.contains("unclean shutdowns: 1"), "{out}");
    assert!(out.contains("UNCLEAN SHUTDOWN"), "{out}");
    let mut strict = check.to_vec();
    strict.push("--strict");
    let o = e.run(&strict);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("unclean shutdown"));
    // The clean runs before and after left no such record.
    let log = std::fs::read_to_string(e.path("log.jsonl")).unwrap();
    assert_eq!(log.matches("\"op\":\"unclean-shutdown\"").count(), 1);
}
