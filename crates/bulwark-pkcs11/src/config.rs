//! Module configuration: which slots exist and which store each one opens.
//!
//! Read once at `C_Initialize` from the TOML file named by `BULWARK_PKCS11_CONF`, else
//! `$XDG_CONFIG_HOME/bulwark/pkcs11.toml`, else `~/.config/bulwark/pkcs11.toml`:
//!
//! ```toml
//! [[slot]]
//! label = "signing"
//! store = "/var/lib/bulwark/signing.db"
//!
//! [[slot]]                                   # a remote slot: the bulwarkd HSM over mTLS gRPC
//! label = "hsm"
//! endpoint = "https://hsm.example.org:7443"
//! ca_cert = "/etc/bulwark/ca.pem"
//! client_cert = "/etc/bulwark/alice.pem"
//! client_key = "/etc/bulwark/alice-key.pem"
//! ```
//!
//! Each slot names exactly one of `store` (embedded) or `endpoint` (remote).
//!
//! Without any configuration file the module offers one slot, labelled `bulwark`, whose store
//! is `$XDG_DATA_HOME/bulwark/token.db` (else `~/.local/share/bulwark/token.db`), so that
//! `pkcs11-tool --init-token` works out of the box like the default token directory.
//! This module never reads a PIN or a key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Environment variable naming the configuration file.
pub const CONF_ENV: &str = "BULWARK_PKCS11_CONF";

/// One configured slot.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawSlot")]
pub struct SlotConfig {
    /// Token label shown before the token is initialized (`C_InitToken` sets the real one).
    pub label: String,
    /// Where the token is.
    pub backend: Backend,
}

/// Where a slot's token lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Path of the embedded store (an `SQLite` file). Created by `C_InitToken` if missing.
    Store(PathBuf),
    /// A `bulwarkd` HSM reached over mutually authenticated TLS.
    Remote(RemoteSlot),
}

/// A remote slot: the daemon's endpoint and the TLS client identity (file paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSlot {
    /// `https://host:port`.
    pub endpoint: String,
    /// PEM of the CA that issued the daemon's certificate.
    pub ca_cert: PathBuf,
    /// PEM client certificate.
    pub client_cert: PathBuf,
    /// PEM client private key.
    pub client_key: PathBuf,
}

/// A `[[slot]]` table as written, before the store/endpoint choice is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlot {
    #[serde(default = "default_label")]
    label: String,
    store: Option<PathBuf>,
    endpoint: Option<String>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

impl TryFrom<RawSlot> for SlotConfig {
    type Error = String;

    fn try_from(r: RawSlot) -> std::result::Result<Self, String> {
        let tls = r.ca_cert.is_some() || r.client_cert.is_some() || r.client_key.is_some();
        let backend = match (r.store, r.endpoint) {
            (Some(store), None) if !tls => Backend::Store(store),
            (Some(_), None) => {
                return Err(format!(
                    "slot {:?}: ca_cert, client_cert and client_key belong to an endpoint slot",
                    r.label
                ))
            }
            (None, Some(endpoint)) => {
                let need = |v: Option<PathBuf>, k: &str| {
                    v.ok_or_else(|| format!("slot {:?}: an endpoint slot needs {k}", r.label))
                };
                Backend::Remote(RemoteSlot {
                    endpoint,
                    ca_cert: need(r.ca_cert, "ca_cert")?,
                    client_cert: need(r.client_cert, "client_cert")?,
                    client_key: need(r.client_key, "client_key")?,
                })
            }
            _ => {
                return Err(format!(
                    "slot {:?}: give exactly one of `store` (embedded) or `endpoint` (remote)",
                    r.label
                ))
            }
        };
        Ok(SlotConfig { label: r.label, backend })
    }
}

fn default_label() -> String {
    "bulwark".to_owned()
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The slots, in slot-ID order (slot IDs are 0, 1, 2, ...).
    #[serde(default)]
    pub slot: Vec<SlotConfig>,
}

impl Config {
    /// Parses a configuration text.
    ///
    /// # Errors
    /// [`Error::General`] when the text is not valid TOML of the expected shape.
    pub fn parse(text: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| {
            tracing::error!(error = %e, "invalid bulwark PKCS#11 configuration");
            Error::General("invalid configuration file")
        })
    }

    /// Loads the configuration from the environment-selected path (see the module docs).
    ///
    /// # Errors
    /// [`Error::General`] when the named file cannot be read or parsed.
    pub fn load() -> Result<Config> {
        if let Some(p) = std::env::var_os(CONF_ENV).filter(|p| !p.is_empty()) {
            return Self::load_file(Path::new(&p));
        }
        if let Some(p) = default_path().filter(|p| p.exists()) {
            return Self::load_file(&p);
        }
        let store =
            data_dir().map_or_else(|| PathBuf::from("bulwark-token.db"), |d| d.join("token.db"));
        Ok(Config {
            slot: vec![SlotConfig { label: default_label(), backend: Backend::Store(store) }],
        })
    }

    fn load_file(p: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(p).map_err(|e| {
            tracing::error!(path = %p.display(), error = %e, "cannot read the configuration");
            Error::General("cannot read configuration file")
        })?;
        let mut c = Self::parse(&text)?;
        // Relative paths are relative to the configuration file's folder.
        if let Some(dir) = p.parent() {
            let fix = |p: &mut PathBuf| {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            };
            for s in &mut c.slot {
                match &mut s.backend {
                    Backend::Store(p) => fix(p),
                    Backend::Remote(r) => {
                        fix(&mut r.ca_cert);
                        fix(&mut r.client_cert);
                        fix(&mut r.client_key);
                    }
                }
            }
        }
        Ok(c)
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// `$XDG_CONFIG_HOME/bulwark/pkcs11.toml`, else `~/.config/bulwark/pkcs11.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))?;
    Some(base.join("bulwark").join("pkcs11.toml"))
}

fn data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".local").join("share")))?;
    Some(base.join("bulwark"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_slots() {
        let c = Config::parse(
            "[[slot]]\nlabel = \"a\"\nstore = \"/tmp/a.db\"\n[[slot]]\nstore = \"/tmp/b.db\"\n",
        )
        .unwrap();
        assert_eq!(c.slot.len(), 2);
        assert_eq!(c.slot[0].label, "a");
        assert_eq!(c.slot[1].label, "bulwark");
        assert_eq!(c.slot[1].backend, Backend::Store(PathBuf::from("/tmp/b.db")));
    }

    #[test]
    fn parses_remote_slots_and_requires_one_backend() {
        let c = Config::parse(
            "[[slot]]\nlabel = \"hsm\"\nendpoint = \"https://127.0.0.1:7443\"\n\
             ca_cert = \"ca.pem\"\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"\n",
        )
        .unwrap();
        let Backend::Remote(r) = &c.slot[0].backend else { panic!("{c:?}") };
        assert_eq!(r.endpoint, "https://127.0.0.1:7443");
        assert_eq!(r.client_key, PathBuf::from("k.pem"));
        // Both, neither, a missing certificate, certificates on an embedded slot.
        for bad in [
            "[[slot]]\nstore = \"/x\"\nendpoint = \"https://h:1\"\n",
            "[[slot]]\nlabel = \"nothing\"\n",
            "[[slot]]\nendpoint = \"https://h:1\"\nca_cert = \"a\"\nclient_cert = \"b\"\n",
            "[[slot]]\nstore = \"/x\"\nca_cert = \"a\"\n",
        ] {
            let e = toml::from_str::<Config>(bad).unwrap_err().to_string();
            assert!(e.contains("slot"), "{bad}: {e}");
            assert!(Config::parse(bad).is_err());
        }
    }

    #[test]
    fn rejects_unknown_keys_and_bad_toml() {
        assert!(Config::parse("[[slot]]\nstore = \"/x\"\npin = \"1234\"\n").is_err());
        assert!(Config::parse("[[slot]\n").is_err());
        assert!(Config::parse("[[slot]]\nlabel = \"no store\"\n").is_err());
    }
}
