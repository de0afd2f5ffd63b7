//! Module configuration: which slots exist and which store each one opens.
//!
//! Read once at `C_Initialize`. The first of these that applies is used, whole (files are not
//! merged):
//!
//! 1. the file named by `BULWARK_PKCS11_CONF` (it must exist);
//! 2. the user's file, `$XDG_CONFIG_HOME/bulwark/pkcs11.toml`, else `~/.config/bulwark/pkcs11.toml`;
//! 3. the system file, `/etc/bulwark/pkcs11.toml` (the installer lays down a commented one; the
//!    directory can be changed at build time with `BULWARK_SYSCONFDIR`);
//! 4. the built-in default: one slot labelled `bulwark` whose store is
//!    `$XDG_DATA_HOME/bulwark/token.db`.
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
//! Each slot names exactly one of `store` (embedded) or `endpoint` (remote). A path may start
//! with `~/` (the user's home) or `$XDG_DATA_HOME/` (that variable, else `~/.local/share`, as the
//! XDG base-directory specification defines it), so one system-wide file gives every user a
//! token of their own; other relative paths are relative to the configuration file. A slot
//! whose path needs a home directory the process does not have (no `HOME`: a system service)
//! is left out, with a warning in the log, rather than pointed at the working directory.
//! Without any file, `pkcs11-tool --init-token` therefore works out of the box, like
//! the default token directory of `SoftHSMv2`. This module never reads a PIN or a key.

use std::ffi::OsString;
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

    /// Loads the configuration from the first source that applies (see the module docs).
    ///
    /// # Errors
    /// [`Error::General`] when the chosen file cannot be read or parsed.
    pub fn load() -> Result<Config> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let source = Source::find(&env, &|p| p.exists());
        tracing::debug!(?source, "bulwark PKCS#11 configuration");
        let (mut config, dir) = match &source {
            Source::Env(p) | Source::User(p) | Source::System(p) => {
                (Self::read_file(p)?, p.parent().map(Path::to_path_buf))
            }
            Source::BuiltIn => (Self::parse(BUILT_IN)?, None),
        };
        config.resolve_paths(&env, dir.as_deref());
        Ok(config)
    }

    fn read_file(p: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(p).map_err(|e| {
            tracing::error!(path = %p.display(), error = %e, "cannot read the configuration");
            Error::General("cannot read configuration file")
        })?;
        Self::parse(&text)
    }

    /// Expands `~/` and `$XDG_DATA_HOME/`, makes other relative paths relative to `dir` (the
    /// configuration file's folder), and leaves out the slots whose paths cannot be expanded.
    fn resolve_paths(&mut self, env: &dyn Fn(&str) -> Option<OsString>, dir: Option<&Path>) {
        self.slot.retain_mut(|s| {
            let fix = |p: &mut PathBuf| -> bool {
                match expand(p, env) {
                    Some(e) => {
                        *p = match dir {
                            Some(d) if e.is_relative() => d.join(e),
                            _ => e,
                        };
                        true
                    }
                    None => false,
                }
            };
            let ok = match &mut s.backend {
                Backend::Store(p) => fix(p),
                Backend::Remote(r) => {
                    fix(&mut r.ca_cert) && fix(&mut r.client_cert) && fix(&mut r.client_key)
                }
            };
            if !ok {
                tracing::warn!(
                    slot = %s.label,
                    "slot left out: its path needs a home directory and HOME is not set"
                );
            }
            ok
        });
    }
}

/// The built-in configuration (used when no file exists). `packaging/pkcs11.toml`, the
/// commented system file the installer lays down, has the same effect.
pub const BUILT_IN: &str =
    "[[slot]]\nlabel = \"bulwark\"\nstore = \"$XDG_DATA_HOME/bulwark/token.db\"\n";

/// Which configuration applies, in lookup order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The file named by `BULWARK_PKCS11_CONF`.
    Env(PathBuf),
    /// The user's own file.
    User(PathBuf),
    /// The system-wide file.
    System(PathBuf),
    /// No file: [`BUILT_IN`].
    BuiltIn,
}

impl Source {
    /// Picks the source from an environment lookup and a file-existence check (parameters,
    /// so tests need not change the process environment).
    pub fn find(env: &dyn Fn(&str) -> Option<OsString>, exists: &dyn Fn(&Path) -> bool) -> Source {
        if let Some(p) = env(CONF_ENV) {
            return Source::Env(PathBuf::from(p));
        }
        if let Some(p) = user_path(env).filter(|p| exists(p)) {
            return Source::User(p);
        }
        let system = system_path();
        if exists(&system) {
            return Source::System(system);
        }
        Source::BuiltIn
    }
}

/// The system-wide configuration file: `/etc/bulwark/pkcs11.toml`, or
/// `$BULWARK_SYSCONFDIR/bulwark/pkcs11.toml` when that variable was set at build time.
pub fn system_path() -> PathBuf {
    Path::new(option_env!("BULWARK_SYSCONFDIR").unwrap_or("/etc"))
        .join("bulwark")
        .join("pkcs11.toml")
}

/// The user's configuration file: `$XDG_CONFIG_HOME/bulwark/pkcs11.toml`, else
/// `~/.config/bulwark/pkcs11.toml`.
fn user_path(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("bulwark").join("pkcs11.toml"))
}

/// `~/...` and `$XDG_DATA_HOME/...` expanded; `None` when the home directory is needed and
/// unknown. Other paths are returned unchanged.
fn expand(p: &Path, env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let home = || env("HOME").map(PathBuf::from);
    if let Ok(rest) = p.strip_prefix("~") {
        return home().map(|h| h.join(rest));
    }
    if let Ok(rest) = p.strip_prefix("$XDG_DATA_HOME") {
        let base = env("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| home().map(|h| h.join(".local").join("share")))?;
        return Some(base.join(rest));
    }
    Some(p.to_path_buf())
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

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, OsString)> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), OsString::from(v))).collect();
        move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn lookup_order_env_then_user_then_system_then_built_in() {
        let env = env_of(&[("HOME", "/home/u"), (CONF_ENV, "/x/named.toml")]);
        assert_eq!(Source::find(&env, &|_| true), Source::Env(PathBuf::from("/x/named.toml")));
        // The named file wins even when it does not exist (reading it then fails loudly).
        assert_eq!(Source::find(&env, &|_| false), Source::Env(PathBuf::from("/x/named.toml")));

        let env = env_of(&[("HOME", "/home/u")]);
        let user = PathBuf::from("/home/u/.config/bulwark/pkcs11.toml");
        assert_eq!(Source::find(&env, &|_| true), Source::User(user.clone()));
        assert_eq!(Source::find(&env, &|p| p != user), Source::System(system_path()));
        assert_eq!(Source::find(&env, &|_| false), Source::BuiltIn);

        let env = env_of(&[("HOME", "/home/u"), ("XDG_CONFIG_HOME", "/cfg")]);
        let user = PathBuf::from("/cfg/bulwark/pkcs11.toml");
        assert_eq!(Source::find(&env, &|p| p == user), Source::User(user.clone()));
        // No HOME and no XDG_CONFIG_HOME: no user file to look for.
        assert_eq!(Source::find(&env_of(&[]), &|p| p == user), Source::BuiltIn);
        assert_eq!(system_path(), PathBuf::from("/etc/bulwark/pkcs11.toml"));
    }

    fn stores(c: &Config) -> Vec<PathBuf> {
        c.slot
            .iter()
            .map(|s| match &s.backend {
                Backend::Store(p) => p.clone(),
                Backend::Remote(r) => r.client_key.clone(),
            })
            .collect()
    }

    #[test]
    fn built_in_store_follows_xdg_data_home() {
        let mut c = Config::parse(BUILT_IN).unwrap();
        c.resolve_paths(&env_of(&[("HOME", "/home/u")]), None);
        assert_eq!(stores(&c), [PathBuf::from("/home/u/.local/share/bulwark/token.db")]);
        assert_eq!(c.slot[0].label, "bulwark");

        let mut c = Config::parse(BUILT_IN).unwrap();
        c.resolve_paths(&env_of(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "/d")]), None);
        assert_eq!(stores(&c), [PathBuf::from("/d/bulwark/token.db")]);

        // No home: the slot is left out instead of landing in the working directory.
        let mut c = Config::parse(BUILT_IN).unwrap();
        c.resolve_paths(&env_of(&[]), None);
        assert!(c.slot.is_empty());
    }

    #[test]
    fn paths_expand_and_resolve_against_the_file() {
        let mut c = Config::parse(
            "[[slot]]\nstore = \"~/t.db\"\n[[slot]]\nstore = \"rel/t.db\"\n\
             [[slot]]\nstore = \"/abs/t.db\"\n[[slot]]\nstore = \"~user/t.db\"\n\
             [[slot]]\nendpoint = \"https://h:1\"\nca_cert = \"/ca.pem\"\n\
             client_cert = \"c.pem\"\nclient_key = \"~/k.pem\"\n",
        )
        .unwrap();
        c.resolve_paths(&env_of(&[("HOME", "/home/u")]), Some(Path::new("/etc/bulwark")));
        assert_eq!(
            stores(&c),
            [
                PathBuf::from("/home/u/t.db"),
                PathBuf::from("/etc/bulwark/rel/t.db"),
                PathBuf::from("/abs/t.db"),
                // Only `~/` is the home directory; `~user` is an ordinary relative name.
                PathBuf::from("/etc/bulwark/~user/t.db"),
                PathBuf::from("/home/u/k.pem"),
            ]
        );
        let Backend::Remote(r) = &c.slot[4].backend else { panic!("{c:?}") };
        assert_eq!(r.client_cert, PathBuf::from("/etc/bulwark/c.pem"));
        assert_eq!(r.ca_cert, PathBuf::from("/ca.pem"));

        // Without HOME, only the slots that need it go.
        let mut c =
            Config::parse("[[slot]]\nstore = \"~/t.db\"\n[[slot]]\nstore = \"/a.db\"\n").unwrap();
        c.resolve_paths(&env_of(&[]), None);
        assert_eq!(stores(&c), [PathBuf::from("/a.db")]);
    }

    #[test]
    fn the_installed_system_file_is_the_built_in_default() {
        let shipped = include_str!("../../../packaging/pkcs11.toml");
        assert_eq!(Config::parse(shipped).unwrap(), Config::parse(BUILT_IN).unwrap());
    }
}
