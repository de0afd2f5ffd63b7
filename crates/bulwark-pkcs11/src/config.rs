//! Module configuration: which slots exist and which store each one opens.
//!
//! Read once at `C_Initialize` from the TOML file named by `BULWARK_PKCS11_CONF`, else
//! `$XDG_CONFIG_HOME/bulwark/pkcs11.toml`, else `~/.config/bulwark/pkcs11.toml`:
//!
//! ```toml
//! [[slot]]
//! label = "signing"
//! store = "/var/lib/bulwark/signing.db"
//! ```
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
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    /// Token label shown before the token is initialized (`C_InitToken` sets the real one).
    #[serde(default = "default_label")]
    pub label: String,
    /// Path of the embedded store (an `SQLite` file). Created by `C_InitToken` if missing.
    pub store: PathBuf,
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
        Ok(Config { slot: vec![SlotConfig { label: default_label(), store }] })
    }

    fn load_file(p: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(p).map_err(|e| {
            tracing::error!(path = %p.display(), error = %e, "cannot read the configuration");
            Error::General("cannot read configuration file")
        })?;
        let mut c = Self::parse(&text)?;
        // Relative store paths are relative to the configuration file's folder.
        if let Some(dir) = p.parent() {
            for s in &mut c.slot {
                if s.store.is_relative() {
                    s.store = dir.join(&s.store);
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
        assert_eq!(c.slot[1].store, PathBuf::from("/tmp/b.db"));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_toml() {
        assert!(Config::parse("[[slot]]\nstore = \"/x\"\npin = \"1234\"\n").is_err());
        assert!(Config::parse("[[slot]\n").is_err());
        assert!(Config::parse("[[slot]]\nlabel = \"no store\"\n").is_err());
    }
}
