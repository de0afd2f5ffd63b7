//! Zeroization is complete: after `Zeroize`, the key bytes that the daemon held are found
//! neither in its store file nor anywhere in its memory (`/proc/PID/mem` of the real
//! `bulwarkd` process), and no share brings them back.
//!
//! The test learns the key bytes the way an authorized operator could before zeroization: it
//! opens the same store in this process with the custodians' shares and wraps the (extractable)
//! keys under a key-encryption key it chose. Reading another process's memory needs ptrace
//! rights over it; the daemon makes itself non-dumpable, so only root (as in CI) may: elsewhere
//! the test says so and checks the rest.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use bulwark_client::Code;
use bulwark_core::attr::{AttrType, AttrValue, ObjectClass};
use bulwark_core::kernel::{as_caller, Caller};
use bulwark_core::mechanism::Mechanism;
use bulwark_core::seal::{Progress, QuorumPolicy, ShareFile, Unsealer};
use bulwark_core::token::Credentials;
use bulwark_core::Token;
use common::{code, connect_as, env_value, login_as, spawn_dev};

/// Which of `needles` occur in the readable memory of process `pid`; `None` when this process
/// may not read it.
fn found_in_memory(pid: u32, needles: &[(&str, &[u8])]) -> Option<Vec<String>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let finders: Vec<_> =
        needles.iter().map(|(n, b)| (*n, memchr::memmem::Finder::new(*b))).collect();
    let overlap = needles.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
    let mut found = std::collections::BTreeSet::new();
    let mut readable = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (start, end) =
            (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        let mut at = start;
        let mut carry: Vec<u8> = Vec::new();
        while at < end {
            let n = usize::try_from((end - at).min(buf.len() as u64)).unwrap();
            let Ok(got) = mem.read_at(&mut buf[..n], at) else { break };
            if got == 0 {
                break;
            }
            readable += got;
            let mut window = std::mem::take(&mut carry);
            window.extend_from_slice(&buf[..got]);
            for (name, finder) in &finders {
                if finder.find(&window).is_some() {
                    found.insert((*name).to_owned());
                }
            }
            carry = window[window.len().saturating_sub(overlap)..].to_vec();
            at += got as u64;
        }
    }
    if readable == 0 {
        return None;
    }
    Some(found.into_iter().collect())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

fn ulong(t: AttrType, v: u64) -> (AttrType, AttrValue) {
    (t, AttrValue::Ulong(v))
}

fn bool_(t: AttrType, v: bool) -> (AttrType, AttrValue) {
    (t, AttrValue::Bool(v))
}

/// The raw bytes of the daemon's extractable keys, learned through a second handle on the
/// store (unsealed with two custodians' shares) by wrapping them under a KEK we know.
fn key_bytes(dir: &Path, labels: &[&str]) -> Vec<Vec<u8>> {
    let store = dir.join("store.db");
    let token = Token::open(&store).unwrap();
    let mut u = Unsealer::new(QuorumPolicy::load(&store).unwrap());
    let mut keys = None;
    for i in 1..=2 {
        let text = std::fs::read(dir.join("shares").join(format!("share-{i}.json"))).unwrap();
        let share = ShareFile::parse(&text).unwrap().share(None).unwrap();
        if let Progress::Complete(k) = u.submit(share).unwrap() {
            keys = Some(k);
        }
    }
    let (vault, ik) = *keys.expect("two shares unseal");
    token.unseal(vault, ik).unwrap();
    // Unsealing logs nobody in: act as the dev crypto officer, and as the security officer to
    // mark the KEK trusted (a daemon store lets keys leave only under trusted keys).
    let as_user = |name: &str, env: &str| {
        let pw = env_value(dir, env, "BULWARK_PASSWORD");
        let creds = Credentials { name, password: pw.as_bytes(), totp: None, cert_sha256: None };
        let principal = token.authenticate(&creds).unwrap();
        Caller { principal, login: 77, client: "zeroize test".into() }
    };
    let (officer, so) = (as_user("crypto", "officer.env"), as_user("so", "so.env"));
    let kek_bytes = [0x5au8; 32];
    let kek_t = vec![
        ulong(AttrType::Class, ObjectClass::SecretKey.to_raw()),
        ulong(AttrType::KeyType, 0x1f),
        bool_(AttrType::Token, true),
        bool_(AttrType::Wrap, true),
        (AttrType::Label, AttrValue::Bytes(b"mem-kek".to_vec())),
        (AttrType::Value, AttrValue::Bytes(kek_bytes.to_vec())),
    ];
    let kek = as_caller(officer.clone(), || token.create_object(&kek_t, 1)).unwrap();
    as_caller(so, || token.set_trusted_by_label("mem-kek", true)).unwrap();
    as_caller(officer, || {
        labels
            .iter()
            .map(|l| {
                let found = token
                    .find(&[
                        (AttrType::Label, AttrValue::Bytes(l.as_bytes().to_vec())),
                        ulong(
                            AttrType::Class,
                            if l.starts_with("mem-aes") {
                                ObjectClass::SecretKey.to_raw()
                            } else {
                                ObjectClass::PrivateKey.to_raw()
                            },
                        ),
                    ])
                    .unwrap();
                assert_eq!(found.len(), 1, "{l}");
                let wrapped = token.wrap_key(kek, &Mechanism::AesKeyWrapPad, found[0]).unwrap();
                let mut out = vec![0u8; wrapped.len()];
                let unwrapper = AesKek::new(&AES_256, &kek_bytes).unwrap();
                let plain = unwrapper.unwrap_with_padding(&wrapped, &mut out).unwrap().to_vec();
                if l.starts_with("mem-aes") {
                    plain
                } else {
                    // PKCS#8 Ed25519: the 32-byte seed follows OCTET STRING { OCTET STRING (32) }.
                    let at = memchr::memmem::find(&plain, &[0x04, 0x22, 0x04, 0x20]).unwrap() + 4;
                    plain[at..at + 32].to_vec()
                }
            })
            .collect()
    })
}

#[test]
fn zeroize_leaves_no_key_bytes_in_the_store_or_the_daemon_memory() {
    let d = tempfile::tempdir().unwrap();
    let (mut daemon, dir) = spawn_dev(d.path(), &[]);
    std::env::set_var("BULWARK_STATE_DIR", d.path().join("state"));
    let pid = daemon.0.id();

    // Keys the daemon generates and uses (so that they are parsed and cached in its memory).
    let crypto = login_as(&dir, "officer.env");
    let labels = ["mem-aes-1", "mem-aes-2", "mem-ed-1"];
    crypto.generate_key("aes-256", labels[0], true).unwrap();
    crypto.generate_key("aes-256", labels[1], true).unwrap();
    crypto.generate_key("ed25519", labels[2], true).unwrap();
    let marker = b"plaintext-marker-0123456789-zeroize-test".to_vec();
    for _ in 0..3 {
        crypto.encrypt(labels[0], &marker).unwrap();
        crypto.encrypt(labels[1], &marker).unwrap();
        crypto.sign(labels[2], "", &marker, true).unwrap();
    }
    let keys = key_bytes(&dir, &labels);
    let needles: Vec<(&str, &[u8])> =
        labels.iter().zip(&keys).map(|(l, k)| (*l, k.as_slice())).collect();
    for (l, k) in &needles {
        assert_eq!(k.len(), 32, "{l}");
    }
    let store_before = std::fs::read(dir.join("store.db")).unwrap();
    for (l, k) in &needles {
        assert!(!contains(&store_before, k), "{l} is in the store file in plaintext");
    }

    let before = found_in_memory(pid, &needles);
    match &before {
        None => eprintln!(
            "note: cannot read /proc/{pid}/mem (not root, and bulwarkd is non-dumpable): \
             the memory half of this test needs root"
        ),
        Some(found) => {
            eprintln!("before zeroize, found in daemon memory: {found:?}");
            // The scan works: a key in use is in memory before (AES key schedules start with
            // the key itself; Ed25519 private keys hold the seed).
            assert!(!found.is_empty(), "the memory scan found none of the keys in use");
        }
    }

    // Zeroize as the security officer (dev mode has no approvals configured).
    let so = login_as(&dir, "so.env");
    so.zeroize(bulwark_client::v1::ZeroizeRequest::default()).unwrap();
    let st = so.status().unwrap();
    assert!(st.zeroized && st.sealed);
    assert_eq!(code(crypto.encrypt(labels[0], b"x")).0, Code::FailedPrecondition);
    let anon = connect_as(&dir, "officer.env");
    for i in 1..=3 {
        let text = std::fs::read(dir.join("shares").join(format!("share-{i}.json"))).unwrap();
        assert!(anon.unseal(&text).is_err(), "share {i} accepted after zeroize");
    }
    // Offline too: the shares no longer open the store.
    let store = dir.join("store.db");
    let t = Token::open(&store).unwrap();
    assert!(t.status().unwrap().zeroized);
    drop(t);

    let store_after = std::fs::read(&store).unwrap();
    for (l, k) in &needles {
        assert!(!contains(&store_after, k), "{l} is in the zeroized store file");
    }
    if before.is_some() {
        let after = found_in_memory(pid, &needles).expect("memory still readable");
        assert!(after.is_empty(), "key bytes left in daemon memory after zeroize: {after:?}");
    }
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon keeps running, zeroized");
}

/// After `seal`, no password and no plaintext that passed through the daemon is left in its
/// memory: not in the decoded requests (login, create-user, encrypt), not in the responses
/// (decrypt), not in the buffers they were decoded from or encoded into.
#[test]
fn seal_leaves_no_password_or_plaintext_in_the_daemon_memory() {
    let d = tempfile::tempdir().unwrap();
    let (daemon, dir) = spawn_dev(d.path(), &[]);
    let pid = daemon.0.id();
    let mut rnd = [0u8; 12];
    bulwark_core::crypto::Provider::get().unwrap().random(&mut rnd).unwrap();
    let password = format!("pw-{}-memory-test", hex::encode(rnd));
    let plaintext = format!("plaintext-{}-memory-test", hex::encode(rnd)).into_bytes();

    let so = login_as(&dir, "so.env");
    so.create_user("memtest", "crypto-officer", &password, false).unwrap();
    {
        let mut officer = connect_as(&dir, "officer.env");
        officer.login("memtest", &password).unwrap();
        officer.generate_key("aes-256", "mem-seal-k", false).unwrap();
        for _ in 0..3 {
            let ct = officer.encrypt("mem-seal-k", &plaintext).unwrap();
            assert_eq!(&officer.decrypt("mem-seal-k", &ct).unwrap()[..], &plaintext[..]);
        }
    }
    let needles: [(&str, &[u8]); 2] =
        [("password", password.as_bytes()), ("plaintext", &plaintext)];
    let Some(before) = found_in_memory(pid, &needles) else {
        eprintln!("note: cannot read /proc/{pid}/mem (needs root): memory check skipped");
        return;
    };
    eprintln!("before seal, found in daemon memory: {before:?}");
    so.seal().unwrap();
    drop(so);
    // Closed connections are dropped by the server asynchronously.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = found_in_memory(pid, &needles).expect("memory still readable");
    assert!(after.is_empty(), "left in daemon memory after seal: {after:?}");
}
