//! `bulwarkd pki init`: a private CA, the daemon's server certificate and client
//! certificates, made with rcgen (ECDSA P-256), so a new user needs no OpenSSL incantations.
//!
//! Layout of the PKI directory: `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`, and
//! `<name>.pem` / `<name>-key.pem` per client. Private keys are written 0600. The CA key stays in
//! this directory: whoever holds it can mint client certificates, so production deployments
//! should move it offline after issuing.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Subject common name of the CA.
const CA_CN: &str = "Bulwark HSM CA";

fn write_file(path: &Path, data: &str, private: bool) -> Result<(), String> {
    if private {
        // Keys: 0600 even over an existing file, never through a symlink.
        return bulwark_core::fsutil::write_private(path, data.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()));
    }
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn ca_params() -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, CA_CN);
    p.distinguished_name.push(DnType::OrganizationName, "Bulwark");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

fn ca_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, String> {
    let key_pem = std::fs::read_to_string(dir.join("ca-key.pem"))
        .map_err(|e| format!("cannot read {}/ca-key.pem: {}", dir.display(), e.kind()))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| e.to_string())?;
    Ok(Issuer::new(ca_params()?, key))
}

fn issue(
    dir: &Path,
    file: &str,
    cn: &str,
    sans: Vec<String>,
    eku: ExtendedKeyUsagePurpose,
) -> Result<(PathBuf, PathBuf), String> {
    let issuer = ca_issuer(dir)?;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut p = CertificateParams::new(sans).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![eku];
    let cert = p.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    let (c, k) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}-key.pem")));
    write_file(&c, &cert.pem(), false)?;
    write_file(&k, &key.serialize_pem(), true)?;
    Ok((c, k))
}

/// Creates a CA and a server certificate for `hosts` (DNS names or IP addresses) in `dir`.
/// Refuses to overwrite an existing CA.
pub fn init(dir: &Path, hosts: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if dir.join("ca-key.pem").exists() {
        return Err(format!("{} already holds a CA", dir.display()));
    }
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = ca_params()?.self_signed(&key).map_err(|e| e.to_string())?;
    write_file(&dir.join("ca-key.pem"), &key.serialize_pem(), true)?;
    write_file(&dir.join("ca.pem"), &cert.pem(), false)?;
    issue(dir, "server", "bulwarkd", hosts.to_vec(), ExtendedKeyUsagePurpose::ServerAuth)?;
    Ok(())
}

/// Issues a client certificate for `name` (CN = name); returns (cert, key) paths.
pub fn issue_client(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || name == "server"
        || name == "ca"
    {
        return Err("client names are [A-Za-z0-9_-]+ and not 'server' or 'ca'".into());
    }
    issue(dir, name, name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
}
