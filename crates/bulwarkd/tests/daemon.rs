//! The real daemon on a loopback ephemeral port, reached over mTLS through `bulwark-client`:
//! sealed refuses service, quorum unseal (M-1 / M / forged / repeated shares), client
//! certificates required, password and role checks, and an OpenSSL-verified remote signature.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use bulwark_client::{Client, ClientConfig, ClientError, Code};
use bulwarkd::dev::DevServer;
use common::{code, env_value, Daemon};

/// Points the anti-rollback marks at a per-process directory, once: changing the environment
/// while other test threads read it is not safe.
fn state_dir_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("bulwarkd-test-state-{}", std::process::id()));
        std::env::set_var("BULWARK_STATE_DIR", dir);
    });
}

fn dev() -> (tempfile::TempDir, DevServer) {
    let d = tempfile::tempdir().unwrap();
    state_dir_once();
    let s = DevServer::start(&d.path().join("dev")).unwrap();
    (d, s)
}

fn client_as(s: &DevServer, who: &str) -> Client {
    let pki = s.dir.join("pki");
    let cfg = ClientConfig::from_files(
        &format!("https://{}", s.addr),
        &pki.join("ca.pem"),
        Some(&pki.join(format!("{who}.pem"))),
        Some(&pki.join(format!("{who}-key.pem"))),
    )
    .unwrap();
    Client::connect(&cfg).unwrap()
}

fn login(s: &DevServer, env: &str) -> Client {
    let user = env_value(&s.dir, env, "BULWARK_USER");
    let mut c = client_as(s, &user);
    c.login(&user, &env_value(&s.dir, env, "BULWARK_PASSWORD")).unwrap();
    c
}

fn share(s: &DevServer, i: u8) -> Vec<u8> {
    std::fs::read(s.dir.join("shares").join(format!("share-{i}.json"))).unwrap()
}

#[test]
fn sealed_refuses_service_and_quorum_unseals() {
    let (_d, s) = dev();
    let so = login(&s, "so.env");
    let user = login(&s, "officer.env");
    user.generate_key("ec-p256", "before-seal", false).unwrap();
    so.seal().unwrap();
    let anon = client_as(&s, "crypto");
    let st = anon.status().unwrap();
    assert!(st.sealed);
    assert_eq!((st.unseal_progress, st.unseal_threshold, st.unseal_shares), (0, 2, 3));

    // Sealed: every key operation and every login is refused with FAILED_PRECONDITION "sealed".
    assert_eq!(code(user.list_keys()), (Code::FailedPrecondition, "sealed".into()));
    assert_eq!(code(user.sign("before-seal", "", b"x", true)).0, Code::FailedPrecondition);
    assert_eq!(code(user.random(16)).1, "sealed");
    let mut fresh = client_as(&s, "crypto");
    let pw = env_value(&s.dir, "officer.env", "BULWARK_PASSWORD");
    assert_eq!(code(fresh.login("crypto", &pw)), (Code::FailedPrecondition, "sealed".into()));

    // M-1 shares do not unseal.
    let r = anon.unseal(&share(&s, 2)).unwrap();
    assert!(r.sealed);
    assert_eq!((r.progress, r.threshold), (1, 2));
    // A repeated share does not count.
    assert_eq!(code(anon.unseal(&share(&s, 2))).0, Code::AlreadyExists);
    // A forged share (one byte changed) does not count.
    let text = String::from_utf8(share(&s, 3)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let hexshare = v["share"].as_str().unwrap().to_owned();
    let last = hexshare.chars().last().unwrap();
    let forged_hex =
        format!("{}{}", &hexshare[..hexshare.len() - 1], if last == '0' { '1' } else { '0' });
    let forged = text.replace(&hexshare, &forged_hex);
    assert_eq!(code(anon.unseal(forged.as_bytes())).0, Code::InvalidArgument);
    // A share of another store does not count.
    let (_d2, other) = dev();
    assert_eq!(code(anon.unseal(&share(&other, 1))).0, Code::InvalidArgument);
    assert_eq!(code(anon.unseal(b"not a share")).0, Code::InvalidArgument);
    let st = anon.status().unwrap();
    assert!(st.sealed);
    assert_eq!(st.unseal_progress, 1);

    // The M-th distinct valid share unseals; the keys are back.
    let r = anon.unseal(&share(&s, 3)).unwrap();
    assert!(!r.sealed);
    assert_eq!(code(anon.unseal(&share(&s, 1))), (Code::FailedPrecondition, "not sealed".into()));
    fresh.login("crypto", &pw).unwrap();
    assert!(fresh.list_keys().unwrap().iter().any(|k| k.label == "before-seal"));
    // The old sessions ended with the seal.
    assert_eq!(code(user.list_keys()).0, Code::Unauthenticated);

    // Every step is in the audit log, with the daemon's user and client identity.
    let log = s.state.audit_records().join("\n");
    for needle in [
        r#""actor":"so","role":"security-officer""#,
        r#""op":"seal","mechanism":"","object":"","label":"","result":"ok""#,
        r#""op":"unseal-share""#,
        r#""result":"share-refused""#,
        r#""op":"login","mechanism":"","object":"","label":"","result":"sealed""#,
        r#""op":"list-keys","mechanism":"","object":"","label":"","result":"sealed""#,
        r#""actor":"crypto","role":"crypto-officer""#,
        "cert:",
    ] {
        assert!(log.contains(needle), "{needle} missing from the audit log:\n{log}");
    }
}

/// A refused connection: the handshake or the first exchange fails, without any gRPC answer.
fn refused<T: std::fmt::Debug>(r: &Result<T, ClientError>) -> bool {
    match r {
        Err(ClientError::Connect(_)) => true,
        Err(ClientError::Status { code, .. }) => {
            matches!(code, Code::Unavailable | Code::Cancelled | Code::Unknown)
        }
        _ => false,
    }
}

/// Raw TLS 1.3 to the listener: with `identity` None no client certificate is sent. Returns
/// what the server sent after the handshake (an error when it refused us).
fn raw_tls(
    addr: std::net::SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> std::io::Result<usize> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut cfg = match identity {
            None => b.with_no_client_auth(),
            Some((c, k)) => b
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(c).unwrap().map(Result::unwrap).collect(),
                    PrivateKeyDer::from_pem_file(k).unwrap(),
                )
                .unwrap(),
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let conn = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let mut tls = conn.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
        // The HTTP/2 preface; a server that accepted us answers with its SETTINGS frame.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await?;
        tls.flush().await?;
        let mut buf = [0u8; 64];
        tls.read(&mut buf).await
    })
}

#[test]
fn client_certificate_is_required() {
    let (d, s) = dev();
    let pki = s.dir.join("pki");
    let endpoint = format!("https://{}", s.addr);
    // No client certificate: the TLS handshake is refused (certificate required alert), nothing
    // is served.
    let e = raw_tls(s.addr, &pki.join("ca.pem"), None).expect_err("served without a client cert");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let no_cert = ClientConfig::from_files(&endpoint, &pki.join("ca.pem"), None, None).unwrap();
    assert!(refused(&Client::connect(&no_cert).and_then(|c| c.status())));
    // A certificate from another CA: refused too.
    let other = d.path().join("other-pki");
    bulwarkd::pki::init(&other, &["localhost".into()]).unwrap();
    bulwarkd::pki::issue_client(&other, "mallory").unwrap();
    let mallory = (other.join("mallory.pem"), other.join("mallory-key.pem"));
    assert!(raw_tls(s.addr, &pki.join("ca.pem"), Some((&mallory.0, &mallory.1))).is_err());
    let foreign = ClientConfig::from_files(
        &endpoint,
        &pki.join("ca.pem"),
        Some(&mallory.0),
        Some(&mallory.1),
    )
    .unwrap();
    assert!(refused(&Client::connect(&foreign).and_then(|c| c.status())));
    // With the right certificate the same exchanges work.
    let ok = raw_tls(
        s.addr,
        &pki.join("ca.pem"),
        Some((&pki.join("crypto.pem"), &pki.join("crypto-key.pem"))),
    );
    assert!(ok.unwrap() > 0);
    assert!(!client_as(&s, "crypto").status().unwrap().sealed);
}

#[test]
fn wrong_password_unknown_user_and_lockout() {
    let (_d, s) = dev();
    let mut c = client_as(&s, "crypto");
    assert_eq!(
        code(c.login("crypto", "wrong password")),
        (Code::Unauthenticated, "authentication failed".into())
    );
    assert_eq!(code(c.login("nobody", "wrong password")).0, Code::Unauthenticated);
    // Without a session nothing is served.
    assert_eq!(code(c.list_keys()).0, Code::Unauthenticated);
    for _ in 0..4 {
        let _ = c.login("so", "wrong password");
    }
    // The fifth consecutive failure locks the user, even with the right password now.
    let _ = c.login("so", "wrong password");
    let so_pw = env_value(&s.dir, "so.env", "BULWARK_PASSWORD");
    assert_eq!(code(c.login("so", &so_pw)).0, Code::PermissionDenied);
}

#[test]
fn roles_are_enforced() {
    let (_d, s) = dev();
    let user = login(&s, "officer.env");
    let so = login(&s, "so.env");
    // A crypto officer cannot seal; a security officer cannot use keys.
    assert_eq!(code(user.seal()).0, Code::PermissionDenied);
    assert_eq!(code(so.list_keys()).0, Code::PermissionDenied);
    assert!(!so.status().unwrap().sealed);
}

#[test]
fn remote_signatures_verify_with_openssl_and_errors_are_precise() {
    let (d, s) = dev();
    let c = login(&s, "officer.env");
    for (ty, label) in [("ec-p256", "ec"), ("rsa-2048", "rsa"), ("ed25519", "ed")] {
        c.generate_key(ty, label, false).unwrap();
        let data = format!("message signed remotely by {label}").into_bytes();
        let sig = c.sign(label, "", &data, true).unwrap();
        assert!(c.verify(label, "", &data, &sig, true).unwrap());
        assert!(!c.verify(label, "", b"other message", &sig, true).unwrap());
        let (pub_pem, data_f, sig_f) = (
            d.path().join(format!("{label}.pem")),
            d.path().join(format!("{label}.dat")),
            d.path().join(format!("{label}.sig")),
        );
        std::fs::write(&pub_pem, c.public_key(label).unwrap()).unwrap();
        std::fs::write(&data_f, &data).unwrap();
        std::fs::write(&sig_f, &sig).unwrap();
        let out = if ty == "ed25519" {
            Command::new("openssl")
                .args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey"])
                .arg(&pub_pem)
                .arg("-in")
                .arg(&data_f)
                .arg("-sigfile")
                .arg(&sig_f)
                .output()
        } else {
            Command::new("openssl")
                .args(["dgst", "-sha256", "-verify"])
                .arg(&pub_pem)
                .arg("-signature")
                .arg(&sig_f)
                .arg(&data_f)
                .output()
        }
        .expect("openssl is installed (scripts/test.sh installs it)");
        assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stdout));
    }
    // Batch sign: every signature verifies.
    let sigs = c.batch_sign("ec", "", vec![b"a".to_vec(), b"b".to_vec()], true).unwrap();
    assert!(c.verify("ec", "", b"b", &sigs[1], true).unwrap());
    // Encrypt/decrypt round trip; a tampered ciphertext is opaque INVALID_ARGUMENT.
    c.generate_key("aes-256", "aes", false).unwrap();
    let mut ct = c.encrypt("aes", b"remote plaintext").unwrap();
    assert_eq!(&c.decrypt("aes", &ct).unwrap()[..], b"remote plaintext");
    let n = ct.len();
    ct[n - 1] ^= 1;
    assert_eq!(code(c.decrypt("aes", &ct)).0, Code::InvalidArgument);
    assert_eq!(c.random(32).unwrap().len(), 32);
    // Precise statuses.
    assert_eq!(code(c.sign("missing", "", b"x", true)).0, Code::NotFound);
    assert_eq!(code(c.generate_key("ec-p256", "ec", false)).0, Code::AlreadyExists);
    assert_eq!(code(c.generate_key("dsa-1024", "x", false)).0, Code::InvalidArgument);
    assert_eq!(code(c.sign("aes", "", b"x", true)).0, Code::PermissionDenied);
    assert_eq!(c.destroy_key("rsa").unwrap(), 2);
    assert!(c.list_keys().unwrap().iter().all(|k| k.label != "rsa"));
}

/// The `bulwarkd` binary itself in dev mode: prints its address, writes the env files, and stops when
/// killed.
#[test]
fn dev_mode_binary_serves_and_writes_env_files() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("dev");
    let mut child = Daemon(
        Command::new(env!("CARGO_BIN_EXE_bulwarkd"))
            .args(["--dev", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .env("BULWARK_STATE_DIR", d.path().join("state"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut addr = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            addr = Some(a.to_owned());
            break;
        }
    }
    let addr = addr.expect("daemon printed its address");
    let endpoint = env_value(&dir, "officer.env", "BULWARK_ENDPOINT");
    assert_eq!(endpoint, format!("https://{addr}"));
    let cfg = ClientConfig::from_files(
        &endpoint,
        Path::new(&env_value(&dir, "officer.env", "BULWARK_CA_CERT")),
        Some(Path::new(&env_value(&dir, "officer.env", "BULWARK_CLIENT_CERT"))),
        Some(Path::new(&env_value(&dir, "officer.env", "BULWARK_CLIENT_KEY"))),
    )
    .unwrap();
    let mut c = Client::connect(&cfg).unwrap();
    let st = c.status().unwrap();
    assert!(!st.sealed && st.dev_mode);
    assert_eq!(st.policy, "quorum");
    assert_eq!(
        c.login("crypto", &env_value(&dir, "officer.env", "BULWARK_PASSWORD")).unwrap(),
        "crypto-officer"
    );
    assert_eq!(c.random(8).unwrap().len(), 8);
    c.generate_key("ec-p256", "dev-key", false).unwrap();
    for i in 1..=3 {
        assert!(dir.join("shares").join(format!("share-{i}.json")).exists());
    }
    // dev.env is the crypto user: it uses keys it is granted, and manages none.
    let ucfg = ClientConfig::from_files(
        &env_value(&dir, "dev.env", "BULWARK_ENDPOINT"),
        Path::new(&env_value(&dir, "dev.env", "BULWARK_CA_CERT")),
        Some(Path::new(&env_value(&dir, "dev.env", "BULWARK_CLIENT_CERT"))),
        Some(Path::new(&env_value(&dir, "dev.env", "BULWARK_CLIENT_KEY"))),
    )
    .unwrap();
    let mut u = Client::connect(&ucfg).unwrap();
    let who = env_value(&dir, "dev.env", "BULWARK_USER");
    assert_eq!(
        u.login(&who, &env_value(&dir, "dev.env", "BULWARK_PASSWORD")).unwrap(),
        "crypto-user"
    );
    assert!(u.list_keys().unwrap().is_empty(), "no grant yet");
    assert_eq!(code(u.generate_key("ec-p256", "mine", false)).0, Code::PermissionDenied);
    // Without a grant the key is invisible to a crypto user, as if it did not exist.
    assert_eq!(code(u.sign("dev-key", "", b"m", true)).0, Code::NotFound);
    c.set_key_access("dev-key", &[(&format!("user:{who}"), &["sign", "public"])]).unwrap();
    u.sign("dev-key", "", b"m", true).unwrap();
    assert!(dir.join("so.env").exists());
}

fn otp_now(base32: &str) -> String {
    let secret = totp_rs::Secret::try_from_base32(base32).unwrap();
    totp_rs::Builder::new().with_secret(secret).build().unwrap().generate_current().to_string()
}

#[test]
fn totp_second_factor_roles_and_revocation() {
    let (_d, s) = dev();
    let so = login(&s, "so.env");
    let officer = login(&s, "officer.env");
    officer.generate_key("ec-p256", "shared", false).unwrap();
    // Only the security officer manages users.
    assert_eq!(
        code(officer.create_user("eve", "security-officer", "password-1", false)).0,
        Code::PermissionDenied
    );
    let enrolled = so.create_user("bob", "crypto-user", "bob-password", true).unwrap();
    assert!(enrolled.otpauth_uri.starts_with("otpauth://totp/"), "{}", enrolled.otpauth_uri);
    assert_eq!(
        code(so.create_user("bob", "crypto-user", "bob-password", false)).0,
        Code::AlreadyExists
    );
    assert_eq!(code(so.create_user("x", "emperor", "password-1", false)).0, Code::InvalidArgument);

    // Password alone, a wrong code, or a malformed code: refused alike.
    let mut bob = client_as(&s, "crypto");
    assert_eq!(
        code(bob.login("bob", "bob-password")),
        (Code::Unauthenticated, "authentication failed".into())
    );
    let good = otp_now(&enrolled.totp_secret_base32);
    let wrong: String =
        good.chars().map(|c| if c == '9' { '0' } else { char::from(c as u8 + 1) }).collect();
    assert_eq!(code(bob.login_with_otp("bob", "bob-password", &wrong)).0, Code::Unauthenticated);
    assert_eq!(code(bob.login_with_otp("bob", "bob-password", "12ab56")).0, Code::Unauthenticated);
    assert_eq!(code(bob.login_with_otp("bob", "wrong-password", &good)).0, Code::Unauthenticated);
    assert_eq!(bob.login_with_otp("bob", "bob-password", &good).unwrap(), "crypto-user");
    // The same code is accepted once (RFC 6238 §5.2).
    let mut replay = client_as(&s, "crypto");
    assert_eq!(code(replay.login_with_otp("bob", "bob-password", &good)).0, Code::Unauthenticated);

    // A crypto user uses keys but does not manage them, and never sees the daemon's own keys.
    officer.set_key_access("shared", &[("user:bob", &["sign"])]).unwrap();
    assert!(bob.sign("shared", "", b"m", true).is_ok());
    assert_eq!(code(bob.generate_key("ec-p256", "mine", false)).0, Code::PermissionDenied);
    assert_eq!(code(bob.destroy_key("shared")).0, Code::PermissionDenied);
    // TOTP secrets are sealed in the users' records: no key of the daemon's own is listed.
    assert!(officer.list_keys().unwrap().iter().all(|k| !k.label.starts_with("bulwarkd.")));

    let users = so.list_users().unwrap();
    assert!(users.iter().any(|u| u.name == "bob" && u.totp && u.role == "crypto-user"));

    // Revocation: deleting bob ends his session at once; he cannot log in again.
    so.delete_user("bob").unwrap();
    assert_eq!(code(bob.sign("shared", "", b"m", true)).0, Code::Unauthenticated);
    let mut again = client_as(&s, "crypto");
    assert_eq!(code(again.login_with_otp("bob", "bob-password", &good)).0, Code::Unauthenticated);
    assert_eq!(code(so.delete_user("bob")).0, Code::NotFound);
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn health_status_and_metrics_over_http() {
    let (_d, s) = dev();
    let http = s.http.expect("dev mode serves health and metrics");
    let c = login(&s, "officer.env");
    c.generate_key("ec-p256", "m", false).unwrap();
    c.sign("m", "", b"x", true).unwrap();
    let _ = c.sign("absent", "", b"x", true);
    let health = http_get(http, "/health");
    assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok"), "{health}");
    let status = http_get(http, "/status");
    assert!(
        status.contains(r#""sealed":false"#) && status.contains(r#""unseal_threshold":2"#),
        "{status}"
    );
    let m = http_get(http, "/metrics");
    for needle in [
        "bulwark_sealed 0",
        r#"bulwark_operations_total{op="sign",result="ok"} 1"#,
        r#"bulwark_operations_total{op="sign",result="not_found"} 1"#,
        r#"bulwark_operations_total{op="login",result="ok"} 1"#,
        r#"bulwark_operation_seconds_count{op="sign"} 2"#,
    ] {
        assert!(m.contains(needle), "{needle} missing:\n{m}");
    }
    // Nothing secret or personal: no user names, labels or passwords.
    assert!(!m.contains("crypto") && !m.contains("\"m\""));
    login(&s, "so.env").seal().unwrap();
    assert!(http_get(http, "/metrics").contains("bulwark_sealed 1"));
    assert!(http_get(http, "/health").ends_with("sealed"));
}

#[test]
fn local_admin_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, s) = dev();
    let sock = s.dir.join("bulwarkd.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut c = Client::connect_unix(&sock).unwrap();
    assert!(!c.status().unwrap().sealed);
    c.login("so", &env_value(&s.dir, "so.env", "BULWARK_PASSWORD")).unwrap();
    assert!(c.list_users().unwrap().iter().any(|u| u.name == "crypto"));
    c.seal().unwrap();
    assert!(client_as(&s, "crypto").status().unwrap().sealed);
    assert!(s.state.audit_records().iter().any(|l| l.contains("unix uid:")));
}

/// Users live in the store, under the master key and the set commitment: no side file holds
/// them, and editing a user's record (promoting a crypto officer) is caught at the next unseal.
#[test]
fn users_live_in_the_authenticated_store() {
    let (d, s) = dev();
    let dir = s.dir.clone();
    login(&s, "so.env").create_user("dave", "crypto-user", "dave-password", false).unwrap();
    drop(s);
    for side in
        ["users.json", "users.lockouts.json", "users.totp-steps.json", "users.approvals.json"]
    {
        assert!(!dir.join(side).exists(), "{side} must not exist");
    }
    // Restarting on the untouched directory works.
    let s = DevServer::start(&d.path().join("dev")).unwrap();
    login(&s, "officer.env");
    drop(s);
    // Promote the crypto officer by editing its record: the store no longer verifies, so the
    // HSM does not unseal and nobody logs in.
    let db = rusqlite::Connection::open(dir.join("store.db")).unwrap();
    let n = db
        .execute(
            "UPDATE records SET value = CAST(replace(CAST(value AS TEXT), 'crypto-officer', \
             'security-officer') AS BLOB) WHERE kind = 'user' AND CAST(value AS TEXT) LIKE '%crypto-officer%'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    let err = DevServer::start(&d.path().join("dev")).unwrap_err();
    assert!(err.to_string().contains("integrity"), "{err}");
}

#[test]
fn certificate_bound_user() {
    let (_d, s) = dev();
    let so = login(&s, "so.env");
    let pki = s.dir.join("pki");
    let fp =
        bulwark_client::cert_sha256_of_pem(&std::fs::read(pki.join("so.pem")).unwrap()).unwrap();
    so.create_user_bound("erin", "crypto-user", "erin-password", false, &fp).unwrap();
    assert!(so.list_users().unwrap().iter().any(|u| u.name == "erin" && u.cert_bound));
    // With another client certificate, or over the local socket: refused.
    let mut wrong = client_as(&s, "crypto");
    assert_eq!(code(wrong.login("erin", "erin-password")).0, Code::Unauthenticated);
    let mut local = Client::connect_unix(&s.dir.join("bulwarkd.sock")).unwrap();
    assert_eq!(code(local.login("erin", "erin-password")).0, Code::Unauthenticated);
    // With the bound certificate: accepted.
    let mut right = client_as(&s, "so");
    assert_eq!(right.login("erin", "erin-password").unwrap(), "crypto-user");
    assert_eq!(
        code(so.create_user_bound("x", "crypto-user", "password-1", false, "abc")).0,
        Code::InvalidArgument
    );
}

#[test]
fn key_access_lists() {
    let (_d, s) = dev();
    let so = login(&s, "so.env");
    let officer = login(&s, "officer.env");
    officer.generate_key("ec-p256", "k1", false).unwrap();
    officer.generate_key("aes-256", "k2", false).unwrap();
    so.create_user("fay", "crypto-user", "fay-password", false).unwrap();
    so.create_user("gus", "crypto-user", "gus-password", false).unwrap();
    let mut fay = client_as(&s, "crypto");
    fay.login("fay", "fay-password").unwrap();
    let mut gus = client_as(&s, "crypto");
    gus.login("gus", "gus-password").unwrap();

    // No grant: the key is invisible (not listed, not found by its label).
    assert_eq!(code(fay.sign("k1", "", b"m", true)).0, Code::NotFound);
    assert!(fay.list_keys().unwrap().is_empty());

    // A user grant for sign only.
    officer.set_key_access("k1", &[("user:fay", &["sign"])]).unwrap();
    let sig = fay.sign("k1", "", b"m", true).unwrap();
    let (c, m) = code(fay.verify("k1", "", b"m", &sig, true));
    assert_eq!(c, Code::PermissionDenied, "visible, but verify is not granted");
    assert!(m.contains("access list"), "{m}");
    assert_eq!(code(fay.encrypt("k2", b"x")).0, Code::NotFound);
    assert_eq!(code(gus.sign("k1", "", b"m", true)).0, Code::NotFound);
    let listed: Vec<_> = fay.list_keys().unwrap().into_iter().map(|k| k.label).collect();
    assert_eq!(listed, ["k1"]);

    // A role grant covers every crypto user.
    officer.set_key_access("k2", &[("role:crypto-user", &["encrypt", "decrypt"])]).unwrap();
    let ct = gus.encrypt("k2", b"secret").unwrap();
    assert_eq!(&fay.decrypt("k2", &ct).unwrap()[..], b"secret");
    assert_eq!(code(gus.batch_sign("k1", "", vec![b"a".to_vec()], true)).0, Code::NotFound);

    // Grants are validated; only crypto officers set them; the crypto officer uses every key.
    assert_eq!(
        code(officer.set_key_access("k1", &[("everyone", &["sign"])])).0,
        Code::InvalidArgument
    );
    assert_eq!(
        code(officer.set_key_access("k1", &[("user:fay", &["bogus"])])).0,
        Code::InvalidArgument
    );
    assert_eq!(code(officer.set_key_access("nope", &[("user:fay", &["sign"])])).0, Code::NotFound);
    assert_eq!(code(fay.set_key_access("k1", &[("user:fay", &["*"])])).0, Code::PermissionDenied);
    assert!(officer.verify("k1", "", b"m", &sig, true).unwrap());
    assert!(s.state.audit_records().iter().any(|l| l.contains("key-function-not-permitted")));

    // Revoking the grant takes effect at once.
    officer.set_key_access("k1", &[]).unwrap();
    assert_eq!(code(fay.sign("k1", "", b"m", true)).0, Code::NotFound);
}

#[test]
fn security_officer_unlocks_a_locked_user() {
    let (_d, s) = dev();
    let so = login(&s, "so.env");
    let pw = env_value(&s.dir, "officer.env", "BULWARK_PASSWORD");
    let mut c = client_as(&s, "crypto");
    for _ in 0..5 {
        let _ = c.login("crypto", "wrong password");
    }
    assert_eq!(code(c.login("crypto", &pw)).0, Code::PermissionDenied);
    assert!(so.list_users().unwrap().iter().any(|u| u.name == "crypto" && u.locked));
    assert_eq!(code(c.unlock_user("crypto")).0, Code::Unauthenticated);
    so.unlock_user("crypto").unwrap();
    c.login("crypto", &pw).unwrap();
    assert_eq!(code(so.unlock_user("nobody")).0, Code::NotFound);
}

#[test]
fn quorum_approvals_gate_user_changes() {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use bulwark_client::v1::{Approval, CreateUserRequest, DeleteUserRequest};
    let d = tempfile::tempdir().unwrap();
    state_dir_once();
    let setup = bulwarkd::dev::prepare(&d.path().join("dev"), ([127, 0, 0, 1], 0).into()).unwrap();
    let keys: Vec<Ed25519KeyPair> = (0..3).map(|_| Ed25519KeyPair::generate().unwrap()).collect();
    let names = ["ann", "ben", "cat"];
    let mut cfg = setup.config.clone();
    cfg.approvals = Some(bulwarkd::config::ApprovalsConfig {
        threshold: 2,
        approvers: names
            .iter()
            .zip(&keys)
            .map(|(n, k)| bulwarkd::config::Approver {
                name: (*n).into(),
                public_key: hex::encode(k.public_key().as_ref()),
            })
            .collect(),
    });
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let state = bulwarkd::server::open_state(&cfg, true).unwrap();
    setup.unseal(&state).unwrap();
    let running = rt.block_on(bulwarkd::server::start(&cfg, state)).unwrap();
    setup.write_env(running.addr).unwrap();
    let dir = setup.dir.clone();
    let pki = dir.join("pki");
    let ccfg = ClientConfig::from_files(
        &format!("https://{}", running.addr),
        &pki.join("ca.pem"),
        Some(&pki.join("so.pem")),
        Some(&pki.join("so-key.pem")),
    )
    .unwrap();
    let mut so = Client::connect(&ccfg).unwrap();
    so.login("so", &env_value(&dir, "so.env", "BULWARK_PASSWORD")).unwrap();
    let store_id = so.status().unwrap().store_id;
    let not_after =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let fields = ["hal", "crypto-user", "", ""];
    let digest =
        bulwark_proto::approval_digest(&store_id, "create-user", &fields, not_after).unwrap();
    let approve = |i: usize, msg: &[u8]| Approval {
        approver: names[i].into(),
        signature: keys[i].sign(msg).as_ref().to_vec(),
    };
    let request = |approvals: Vec<Approval>| CreateUserRequest {
        name: "hal".into(),
        role: "crypto-user".into(),
        password: "hal-password".into(),
        approvals,
        approval_not_after: not_after,
        ..CreateUserRequest::default()
    };
    // No approvals: refused, and told which digest to sign.
    let (c, m) = code(so.create_user_request(request(vec![])));
    assert_eq!(c, Code::FailedPrecondition);
    assert!(m.contains(&hex::encode(digest)), "{m}");
    // One approval, the same approver twice, a forged one, one over another request: not enough.
    assert_eq!(
        code(so.create_user_request(request(vec![approve(0, &digest)]))).0,
        Code::FailedPrecondition
    );
    let twice = vec![approve(0, &digest), approve(0, &digest)];
    assert_eq!(code(so.create_user_request(request(twice))).0, Code::FailedPrecondition);
    let mut forged = approve(1, &digest);
    forged.signature[0] ^= 1;
    assert_eq!(
        code(so.create_user_request(request(vec![approve(0, &digest), forged]))).0,
        Code::FailedPrecondition
    );
    let other = bulwark_proto::approval_digest(
        &store_id,
        "create-user",
        &["hal", "security-officer", "", ""],
        not_after,
    )
    .unwrap();
    assert_eq!(
        code(so.create_user_request(request(vec![approve(0, &digest), approve(1, &other)]))).0,
        Code::FailedPrecondition
    );
    assert!(!so.list_users().unwrap().iter().any(|u| u.name == "hal"));
    // M valid approvals: done.
    so.create_user_request(request(vec![approve(0, &digest), approve(2, &digest)])).unwrap();
    assert!(so.list_users().unwrap().iter().any(|u| u.name == "hal"));

    // Deleting needs its own approvals, usable once.
    let del =
        bulwark_proto::approval_digest(&store_id, "delete-user", &["hal"], not_after).unwrap();
    let del_req = || DeleteUserRequest {
        name: "hal".into(),
        approvals: vec![approve(1, &del), approve(2, &del)],
        approval_not_after: not_after,
    };
    assert_eq!(code(so.delete_user("hal")).0, Code::FailedPrecondition);
    so.delete_user_request(del_req()).unwrap();
    let (c, m) = code(so.delete_user_request(del_req()));
    assert_eq!(c, Code::FailedPrecondition);
    assert!(m.contains("already used"), "{m}");
    assert!(running.state.audit_records().iter().any(|l| l.contains("approved by [ann,cat]")));

    // A role change needs approvals over the canonical role name, and ends the user's sessions.
    let crypto_pw = env_value(&dir, "officer.env", "BULWARK_PASSWORD");
    let crypto_cfg = ClientConfig::from_files(
        &format!("https://{}", running.addr),
        &pki.join("ca.pem"),
        Some(&pki.join("crypto.pem")),
        Some(&pki.join("crypto-key.pem")),
    )
    .unwrap();
    let mut crypto = Client::connect(&crypto_cfg).unwrap();
    crypto.login("crypto", &crypto_pw).unwrap();
    crypto.generate_key("ec-p256", "before-zeroize", false).unwrap();
    let role = bulwark_proto::approval_digest(
        &store_id,
        "set-user-role",
        &["crypto", "crypto-user"],
        not_after,
    )
    .unwrap();
    let role_req = |approvals| bulwark_client::v1::SetUserRoleRequest {
        name: "crypto".into(),
        role: "cu".into(),
        approvals,
        approval_not_after: not_after,
    };
    assert_eq!(
        code(so.set_user_role(role_req(vec![approve(0, &role)]))).0,
        Code::FailedPrecondition
    );
    so.set_user_role(role_req(vec![approve(0, &role), approve(1, &role)])).unwrap();
    assert_eq!(code(crypto.list_keys()).0, Code::Unauthenticated, "sessions end on a role change");
    crypto.login("crypto", &crypto_pw).unwrap();
    assert_eq!(code(crypto.generate_key("aes-256", "now-a-user", false)).0, Code::PermissionDenied);
    assert!(so.list_users().unwrap().iter().any(|u| u.name == "crypto" && u.role == "crypto-user"));

    // Zeroization: refused without a quorum (and nothing changes), then done with one.
    let z = bulwark_proto::approval_digest(&store_id, "zeroize", &[], not_after).unwrap();
    let z_req =
        |approvals| bulwark_client::v1::ZeroizeRequest { approvals, approval_not_after: not_after };
    assert_eq!(code(so.zeroize(z_req(vec![approve(2, &z)]))).0, Code::FailedPrecondition);
    assert_eq!(
        code(so.zeroize(z_req(vec![approve(0, &role), approve(1, &role)]))).0,
        Code::FailedPrecondition
    );
    assert!(!so.status().unwrap().zeroized);
    // The demoted officer keeps no rights on the key it made (no owner rights outlive a role).
    assert_eq!(code(crypto.show_key("before-zeroize")).0, Code::NotFound);
    so.zeroize(z_req(vec![approve(1, &z), approve(2, &z)])).unwrap();
    let st = so.status().unwrap();
    assert!(st.zeroized && st.sealed, "{st:?}");
    assert_eq!(code(crypto.show_key("before-zeroize")).0, Code::FailedPrecondition);
    // No share brings anything back.
    let anon = Client::connect(&ccfg).unwrap();
    for i in 1..=3u8 {
        let text = std::fs::read(dir.join("shares").join(format!("share-{i}.json"))).unwrap();
        assert_eq!(code(anon.unseal(&text)).0, Code::FailedPrecondition);
    }
    assert!(so.status().unwrap().sealed);
    drop((crypto, anon));
    // Close the client first: graceful shutdown waits for open connections.
    drop(so);
    let done = rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(10), running.shutdown()).await
    });
    assert!(matches!(done, Ok(Ok(()))), "{done:?}");
}

#[test]
fn shutdown_completes_with_idle_clients_and_seals() {
    let d = tempfile::tempdir().unwrap();
    state_dir_once();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (setup, running) = rt
        .block_on(bulwarkd::dev::start(&d.path().join("dev"), ([127, 0, 0, 1], 0).into()))
        .unwrap();
    let pki = setup.dir.join("pki");
    let cfg = ClientConfig::from_files(
        &format!("https://{}", running.addr),
        &pki.join("ca.pem"),
        Some(&pki.join("crypto.pem")),
        Some(&pki.join("crypto-key.pem")),
    )
    .unwrap();
    let idle = Client::connect(&cfg).unwrap();
    assert!(!idle.status().unwrap().sealed);
    let state = running.state.clone();
    let t = std::time::Instant::now();
    rt.block_on(running.shutdown()).unwrap();
    assert!(t.elapsed() < bulwarkd::server::SHUTDOWN_GRACE + std::time::Duration::from_secs(3));
    // Keys are wiped on the way out.
    assert!(state.is_sealed());
    drop(idle);
}

#[test]
fn auditor_exports_a_verifiable_log_over_the_api() {
    let (_d, s) = dev();
    let so = login(&s, "so.env");
    so.create_user("aud", "auditor", "auditor-password", false).unwrap();
    let crypto = login(&s, "officer.env");
    crypto.generate_key("ec-p256", "audited", false).unwrap();
    crypto.sign("audited", "", b"hello", true).unwrap();
    // Key users do not read the log.
    assert_eq!(code(crypto.audit_export(0)).0, Code::PermissionDenied);
    assert_eq!(code(crypto.audit_public_key()).0, Code::PermissionDenied);
    let mut aud = client_as(&s, "so");
    aud.login("aud", "auditor-password").unwrap();
    // An auditor does not use keys.
    assert_eq!(code(aud.sign("audited", "", b"x", true)).0, Code::PermissionDenied);
    let lines = aud.audit_export(0).unwrap();
    let pk = aud.audit_public_key().unwrap();
    assert_eq!(pk, so.audit_public_key().unwrap());
    let rep = bulwark_core::audit::verify_export(&lines, &pk);
    assert!(rep.bad.is_none(), "{:?}", rep.bad);
    assert!(rep.records > 0);
    let cp = rep.last_checkpoint.expect("the export ends with a checkpoint");
    assert_eq!(cp.size, rep.since + rep.records, "the checkpoint covers every exported record");
    for needle in ["\"generate", "\"sign", "permission-denied", "audit-export"] {
        assert!(lines.iter().any(|l| l.contains(needle)), "no {needle} record");
    }
    // Tampering with an exported record is caught at its sequence number.
    let i = lines.iter().position(|l| l.contains("\"result\":\"permission-denied\"")).unwrap();
    let mut edited = lines.clone();
    edited[i] = edited[i].replace("\"result\":\"permission-denied\"", "\"result\":\"ok\"");
    let seq: u64 =
        serde_json::from_str::<serde_json::Value>(&lines[i]).unwrap()["seq"].as_u64().unwrap();
    assert_eq!(bulwark_core::audit::verify_export(&edited, &pk).bad.map(|b| b.0), Some(seq));
    // From a later sequence number.
    let tail = aud.audit_export(3).unwrap();
    assert!(bulwark_core::audit::verify_export(&tail, &pk).bad.is_none());
    // The password of the auditor never appears.
    assert!(!lines.iter().any(|l| l.contains("auditor-password")));
}

/// A set of approvals works once, across daemon restarts too; an edited record of used
/// approvals refuses every approval rather than allow a replay.
#[test]
fn used_approvals_survive_a_restart() {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use bulwark_client::v1::{Approval, SetUserRoleRequest};
    let d = tempfile::tempdir().unwrap();
    state_dir_once();
    let setup = bulwarkd::dev::prepare(&d.path().join("dev"), ([127, 0, 0, 1], 0).into()).unwrap();
    let keys: Vec<Ed25519KeyPair> = (0..2).map(|_| Ed25519KeyPair::generate().unwrap()).collect();
    let mut cfg = setup.config.clone();
    cfg.approvals = Some(bulwarkd::config::ApprovalsConfig {
        threshold: 2,
        approvers: ["ann", "ben"]
            .iter()
            .zip(&keys)
            .map(|(n, k)| bulwarkd::config::Approver {
                name: (*n).into(),
                public_key: hex::encode(k.public_key().as_ref()),
            })
            .collect(),
    });
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let not_after =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let mut request = None;
    for round in 0..3 {
        let state = bulwarkd::server::open_state(&cfg, true).unwrap();
        if round == 2 {
            // Deleting the record of the used approval (to replay it) breaks the store's set
            // commitment: the HSM does not unseal.
            let err = setup.unseal(&state).unwrap_err();
            assert!(err.to_string().contains("integrity"), "{err}");
            break;
        }
        setup.unseal(&state).unwrap();
        let running = rt.block_on(bulwarkd::server::start(&cfg, state)).unwrap();
        setup.write_env(running.addr).unwrap();
        let pki = setup.dir.join("pki");
        let ccfg = ClientConfig::from_files(
            &format!("https://{}", running.addr),
            &pki.join("ca.pem"),
            Some(&pki.join("so.pem")),
            Some(&pki.join("so-key.pem")),
        )
        .unwrap();
        let mut so = Client::connect(&ccfg).unwrap();
        so.login("so", &env_value(&setup.dir, "so.env", "BULWARK_PASSWORD")).unwrap();
        let req = request.get_or_insert_with(|| {
            let store_id = so.status().unwrap().store_id;
            let fields = ["crypto", "crypto-officer"];
            let digest =
                bulwark_proto::approval_digest(&store_id, "set-user-role", &fields, not_after)
                    .unwrap();
            SetUserRoleRequest {
                name: "crypto".into(),
                role: "crypto-officer".into(),
                approvals: keys
                    .iter()
                    .zip(["ann", "ben"])
                    .map(|(k, n)| Approval {
                        approver: n.into(),
                        signature: k.sign(&digest).as_ref().to_vec(),
                    })
                    .collect(),
                approval_not_after: not_after,
            }
        });
        match round {
            0 => so.set_user_role(req.clone()).unwrap(),
            1 => {
                let (c, m) = code(so.set_user_role(req.clone()));
                assert_eq!(c, Code::FailedPrecondition, "replayed after a restart: {m}");
                assert!(m.contains("already used"), "{m}");
            }
            _ => unreachable!(),
        }
        drop(so);
        let done = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), running.shutdown()).await
        });
        assert!(matches!(done, Ok(Ok(()))), "{done:?}");
        if round == 1 {
            let db = rusqlite::Connection::open(&cfg.store).unwrap();
            assert_eq!(db.execute("DELETE FROM records WHERE kind = 'approval'", []).unwrap(), 1);
        }
    }
}

/// A lockout is not undone by restarting the daemon; the security officer's unlock is.
#[test]
fn lockouts_survive_a_restart() {
    let d = tempfile::tempdir().unwrap();
    state_dir_once();
    let dir = d.path().join("dev");
    let pw = {
        let s = DevServer::start(&dir).unwrap();
        let pw = env_value(&s.dir, "officer.env", "BULWARK_PASSWORD");
        let mut c = client_as(&s, "crypto");
        for _ in 0..5 {
            let _ = c.login("crypto", "wrong password");
        }
        assert_eq!(code(c.login("crypto", &pw)).0, Code::PermissionDenied);
        pw
    };
    let s = DevServer::start(&dir).unwrap();
    let mut c = client_as(&s, "crypto");
    assert_eq!(code(c.login("crypto", &pw)).0, Code::PermissionDenied, "still locked");
    login(&s, "so.env").unlock_user("crypto").unwrap();
    c.login("crypto", &pw).unwrap();
    drop(s);
    // The unlock persists as well.
    let s = DevServer::start(&dir).unwrap();
    client_as(&s, "crypto").login("crypto", &pw).unwrap();
    drop(s);
    // The limit is configurable (`max_login_failures`).
    let s = DevServer::start_with(&dir, |c| c.max_login_failures = 2).unwrap();
    let mut c = client_as(&s, "crypto");
    let _ = c.login("crypto", "wrong password");
    c.login("crypto", &pw).unwrap();
    for _ in 0..2 {
        let _ = c.login("crypto", "wrong password");
    }
    assert_eq!(code(c.login("crypto", &pw)).0, Code::PermissionDenied, "locked after 2");
}

/// A TOTP code accepted before a restart is still a replay after it.
#[test]
fn totp_replay_is_refused_across_a_restart() {
    let d = tempfile::tempdir().unwrap();
    state_dir_once();
    let dir = d.path().join("dev");
    let good = {
        let s = DevServer::start(&dir).unwrap();
        let so = login(&s, "so.env");
        let enrolled = so.create_user("tess", "crypto-user", "tess-password", true).unwrap();
        let good = otp_now(&enrolled.totp_secret_base32);
        client_as(&s, "crypto").login_with_otp("tess", "tess-password", &good).unwrap();
        good
    };
    let s = DevServer::start(&dir).unwrap();
    let mut c = client_as(&s, "crypto");
    // Within the ±1-step window the code is still valid, so only the persisted step refuses it.
    assert_eq!(code(c.login_with_otp("tess", "tess-password", &good)).0, Code::Unauthenticated);
}
