//! Connections to the database: plain only on loopback and Unix sockets, TLS (rustls) with the
//! server verified otherwise, no credentials in errors, reconnection after the server restarts.
//! This binary runs its own server with TLS switched on (`ssl = on`, a test CA's certificate).

#![allow(missing_docs)]

mod support;

use bulwark_core::store::Store;
use bulwark_core::Error;
use bulwark_store_pg::{PgOptions, PgStore, PgTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

fn plain() -> PgOptions {
    PgOptions::default()
}

#[test]
fn plain_connections_only_to_loopback_and_unix_sockets() {
    // Refused before any connection is attempted (these addresses are never contacted).
    for url in [
        "host=192.0.2.10 dbname=x user=y",
        "postgresql://y@db.example.invalid/x",
        "postgresql://y@127.0.0.1,192.0.2.10/x",
        "host=localhost hostaddr=192.0.2.10 dbname=x user=y",
    ] {
        let e = PgStore::open(url, &plain()).unwrap_err();
        assert!(matches!(e, Error::ArgumentsBad(m) if m.contains("needs TLS")), "{url}: {e:?}");
    }
    let e = PgStore::open("postgresql://y@127.0.0.1/x?sslmode=require", &plain()).unwrap_err();
    assert!(matches!(e, Error::ArgumentsBad(m) if m.contains("requires TLS")), "{e:?}");
}

#[test]
fn errors_never_show_credentials() {
    let e = PgStore::open("postgresql://u:s3cret-pw@127.0.0.1:1/x?bogus=%%", &plain()).unwrap_err();
    assert!(!format!("{e:?} {e}").contains("s3cret"), "{e:?}");
    // Nothing listens on port 1: a connection error, without the password.
    let e = PgStore::open("postgresql://u:s3cret-pw@127.0.0.1:1/x", &plain()).unwrap_err();
    assert!(matches!(e, Error::Store(_)), "{e:?}");
    assert!(!format!("{e:?} {e}").contains("s3cret"), "{e:?}");
    let server = pg_or_skip!();
    let url = format!(
        "host={} port={} user=postgres password=s3cret-pw dbname=nope",
        server.sock.display(),
        server.port
    );
    let e = PgStore::open(&url, &plain()).unwrap_err();
    assert!(!format!("{e:?} {e}").contains("s3cret"), "{e:?}");
    assert!(format!("{e}").contains("3D000"), "unknown database: {e}");
}

#[test]
fn tcp_loopback_and_reconnection() {
    let server = pg_or_skip!();
    let db = support::Db::new(server);
    let url = server.tcp_url(&db.name);
    let s = PgStore::create(&url, [3; 16], "quorum", &plain()).unwrap();
    assert_eq!(s.header().unwrap().store_uid, [3; 16]);
    assert!(format!("{s:?}").contains(&db.name));
    // The server drops every connection of the store (a restart, a failover): the next calls
    // fail at most once per pooled connection, then the store reconnects by itself.
    let before = s.change_counter().unwrap();
    db.client()
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.name],
        )
        .unwrap();
    let mut ok = false;
    for _ in 0..=PgOptions::default().pool_size {
        if s.header().is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "reconnected");
    assert_eq!(s.change_counter().unwrap(), before);
}

/// A CA, and a server certificate for `localhost` and 127.0.0.1 signed by it.
fn pki() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "bulwark test database CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let p = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn tls_with_the_server_verified() {
    let server = pg_or_skip!();
    let (ca, cert, key) = pki();
    // The server's certificate and key, readable by the server only.
    let (crt_path, key_path) = (server.dir.join("server.crt"), server.dir.join("server.key"));
    std::fs::write(&crt_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::process::Command::new("chmod").arg("600").arg(&key_path).status().unwrap();
    std::process::Command::new("chown")
        .arg("postgres:")
        .arg(&crt_path)
        .arg(&key_path)
        .status()
        .unwrap();
    let mut admin = server.admin("postgres");
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", crt_path.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key_path.display()),
        "ALTER SYSTEM SET ssl = on".into(),
        "SELECT pg_reload_conf()".into(),
    ] {
        admin.batch_execute(&sql).unwrap();
    }
    let db = support::Db::new(server);
    let tls = PgOptions { tls: PgTls::with_ca_pem(ca.as_bytes()).unwrap(), ..PgOptions::default() };
    let url = format!("postgresql://postgres@localhost:{}/{}", server.port, db.name);
    // The reload is asynchronous: the first connections may still find TLS off.
    let mut store = None;
    for _ in 0..50 {
        match PgStore::create(&url, [4; 16], "quorum", &tls) {
            Ok(s) => {
                store = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    let s = store.expect("a TLS connection");
    assert_eq!(s.header().unwrap().store_uid, [4; 16]);
    // The server sees the store's connection encrypted.
    let n: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND datname = $1",
            &[&db.name],
        )
        .unwrap()
        .get(0);
    assert!(n >= 1, "the store's connection uses TLS");

    // Another CA: the server is not trusted, nothing is sent.
    let (other_ca, _, _) = pki();
    let wrong =
        PgOptions { tls: PgTls::with_ca_pem(other_ca.as_bytes()).unwrap(), ..PgOptions::default() };
    let e = PgStore::open(&url, &wrong).unwrap_err();
    assert!(matches!(&e, Error::Store(m) if m.contains("certificate")), "{e:?}");
    // A name the certificate does not carry.
    let e = PgStore::open(
        &format!(
            "host=wrong-name.test hostaddr=127.0.0.1 port={} user=postgres dbname={}",
            server.port, db.name
        ),
        &tls,
    )
    .unwrap_err();
    assert!(matches!(&e, Error::Store(m) if m.contains("certificate")), "{e:?}");
    // TLS configured but a Unix socket named: refused.
    let e = PgStore::open(&db.url, &tls).unwrap_err();
    assert!(matches!(e, Error::ArgumentsBad(_)), "{e:?}");
    assert!(PgTls::with_ca_pem(b"not a certificate").is_err());
}
