//! The CLI's files and terminal output: secret outputs are created 0600 and never through a
//! symbolic link, a symlinked store path is refused, and labels cannot put control characters
//! or ANSI escapes on the officer's terminal.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::PathBuf;

use common::Env;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn secret_outputs_are_private_and_never_follow_symlinks() {
    let e = Env::new();
    e.ok(&[
        "key",
        "generate",
        "--type",
        "aes-256",
        "--label",
        "k",
        "--extractable",
        "--not-sensitive",
    ]);
    e.ok(&["key", "generate", "--type", "aes-256", "--label", "kek"]);
    let input = e.path("in.txt");
    std::fs::write(&input, b"attack at dawn").unwrap();
    let ct = e.path("ct.bin");
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    e.ok(&["encrypt", "--key", "k", "--in", &s(&input), "--out", &s(&ct)]);
    // decrypt --out into an existing world-readable file: truncated and tightened to 0600.
    let pt = e.path("pt.txt");
    std::fs::write(&pt, b"previous contents, longer than the plaintext").unwrap();
    std::fs::set_permissions(&pt, PermissionsExt::from_mode(0o644)).unwrap();
    e.ok(&["decrypt", "--key", "k", "--in", &s(&ct), "--out", &s(&pt)]);
    assert_eq!(std::fs::read(&pt).unwrap(), b"attack at dawn");
    // key export --out, key wrap --out, random --out: new files, 0600.
    let exported = e.path("k.key");
    e.ok(&["key", "export", "k", "--out", &s(&exported)]);
    let wrapped = e.path("k.wrapped");
    e.ok(&["key", "wrap", "k", "--wrapping-key", "kek", "--out", &s(&wrapped)]);
    let random = e.path("random.bin");
    e.ok(&["random", "--bytes", "32", "--out", &s(&random)]);
    for p in [&ct, &pt, &exported, &wrapped, &random] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    // A symlink planted where the output goes: refused, its target untouched.
    let victim = e.path("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    let link = e.path("out-link");
    symlink(&victim, &link).unwrap();
    let o = e.run(&["key", "export", "k", "--out", &s(&link)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("symbolic link"));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}

#[test]
fn init_refuses_a_symlinked_store_path() {
    let d = tempfile::tempdir().unwrap();
    let e = Env { dir: d };
    let target = e.path("elsewhere/store.db");
    let store = e.path("link.db");
    symlink(&target, &store).unwrap();
    let o = e.run_on(&store, &["init", "--label", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("symbolic link"));
    assert!(!target.exists() && !e.path("elsewhere").exists());
    // Not through a link to an existing store either.
    let real = e.path("real.db");
    assert!(e.run_on(&real, &["init", "--label", "x"]).status.success());
    let alias = e.path("alias.db");
    symlink(&real, &alias).unwrap();
    let o = e.run_on(&alias, &["key", "list"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn labels_cannot_drive_the_terminal() {
    let e = Env::new();
    let evil = "ok\u{1b}[2J\u{1b}]0;owned\u{7}\nFORGED row";
    e.ok(&["key", "generate", "--type", "aes-256", "--label", evil]);
    for args in [&["key", "list"][..], &["key", "show", evil]] {
        let out = e.ok(args);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{args:?}: {out:?}");
        assert!(!out.lines().any(|l| l.starts_with("FORGED")), "{args:?}: {out:?}");
        assert!(out.contains("\\x1b[2J"), "{args:?}: {out:?}");
    }
}

#[test]
fn the_cli_applies_the_same_label_limit() {
    let e = Env::new();
    let long = "l".repeat(bulwark_core::limits::MAX_LABEL + 1);
    let o = e.run(&["key", "generate", "--type", "aes-256", "--label", &long]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let ok = "l".repeat(bulwark_core::limits::MAX_LABEL);
    e.ok(&["key", "generate", "--type", "aes-256", "--label", &ok]);
}
