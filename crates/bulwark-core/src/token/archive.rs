//! Archival (docs/lifecycle.md, "Archival"): a deactivated or compromised key leaves the live
//! store for an archive file and comes back by restore.
//!
//! Archiving writes a selected-key backup of the key (every object of its label), reads the
//! whole file back, and only then removes the material from the live records in one
//! authenticated write, marking them `CKA_BULWARK_ARCHIVED` (the date). The records keep every
//! other attribute, so the key is still listed (state archived) and its audit history still
//! names it; the gate refuses every use until the archive is restored, which gives the records
//! their material back (same unique ids: `Token::restore_with` recognizes the archived stubs).
//! Only keys that no longer protect anything may be archived, so an archived key never
//! silently stops a service that still signs or encrypts with it.

use std::path::Path;

use super::backup::check_backup_file;
use super::guard::Call;
use super::objects::is_key;
use super::{Token, Unlock};
use crate::attr::{AttrType, Attributes};
use crate::destruction::Schedule;
use crate::error::{Error, Result};
use crate::hierarchy::KdfParams;
use crate::lifecycle::{KeyState, Lifecycle};
use crate::secret::SecretBytes;
use crate::store::Store;

/// What an archive did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Objects archived (both halves of a pair, every version of the label).
    pub objects: u64,
    /// Size of the archive file in bytes.
    pub bytes: u64,
    /// When (Unix seconds), as stored in `CKA_BULWARK_ARCHIVED`.
    pub archived_at: u64,
}

impl<S: Store> Token<S> {
    /// Archives the key labelled `label` to `out` (a selected-key backup under `passphrase`,
    /// mode 0600, never over an existing file), then removes its material from the live
    /// store. Every object of the label must be a key in state deactivated or compromised.
    /// Security officer only (it is a backup); audited as `backup` and `key-archive`.
    ///
    /// # Errors
    /// `NotFound` for no such key; `ActionProhibited` for a key that still protects (or is
    /// already archived) or a caller who is not the security officer; any backup error. On
    /// every error the live store is unchanged (an archive file already written stays: it is
    /// a valid backup).
    pub fn archive_key(
        &self,
        label: &str,
        out: &Path,
        passphrase: &SecretBytes,
        kdf: KdfParams,
    ) -> Result<ArchiveSummary> {
        let rows = self.archivable(label)?;
        let labels = [label.to_owned()];
        let backup = self.backup_selected(out, &labels, passphrase, kdf, &mut |_, _| {})?;
        let c =
            Call { described: Some((String::new(), label.to_owned())), ..Call::new("key-archive") };
        let r = self.precheck(&c).and_then(|()| {
            // The file must open and read back whole before anything leaves the live store.
            let n = check_backup_file(out, Unlock::Passphrase(passphrase))?;
            if n != rows.len() as u64 || backup.objects != n {
                return Err(Error::Store(
                    "the archive does not hold every object of the key: nothing removed".into(),
                ));
            }
            self.strip_material(&rows)
        });
        let detail = match &r {
            Ok(at) => format!("objects {} archived at {at}", rows.len()),
            Err(_) => String::new(),
        };
        let at = self.finish(&c, r, detail)?;
        Ok(ArchiveSummary { objects: rows.len() as u64, bytes: backup.bytes, archived_at: at })
    }

    /// The (handle, uid) of every object labelled `label`, each a key that may be archived.
    fn archivable(&self, label: &str) -> Result<Vec<(u64, [u8; 16])>> {
        let (_, ik) = self.require_vault()?;
        let now = self.now();
        let mut out = Vec::new();
        for row in self.store.find(None, Some(label.as_bytes()), None)? {
            ik.verify_record(&row)?;
            let attrs = Attributes::decode(&row.attrs)?;
            if Schedule::is_scheduled(&attrs) {
                continue; // destroyed for every caller
            }
            if !is_key(&attrs) {
                return Err(Error::ActionProhibited("only keys are archived"));
            }
            if attrs.contains(AttrType::BulwarkArchived) {
                return Err(Error::ActionProhibited("the key is already archived"));
            }
            match Lifecycle::of(&attrs)?.state_at(now) {
                KeyState::Deactivated | KeyState::Compromised => {}
                s => {
                    return Err(Error::ActionProhibited(if s == KeyState::Active {
                        "only a deactivated or compromised key can be archived (deactivate it \
                         first)"
                    } else {
                        "only a deactivated or compromised key can be archived"
                    }))
                }
            }
            out.push((row.handle, row.uid));
        }
        if out.is_empty() {
            return Err(Error::NotFound(label.to_owned()));
        }
        Ok(out)
    }

    /// Removes the material of `rows` and marks them archived, in one write; the date.
    fn strip_material(&self, rows: &[(u64, [u8; 16])]) -> Result<u64> {
        let (_, ik) = self.require_vault()?;
        let now = self.now();
        self.write(&ik, |a| {
            for (h, uid) in rows {
                let row = a.object(*h)?.ok_or(Error::ObjectHandleInvalid)?;
                if &row.uid != uid {
                    return Err(Error::ObjectHandleInvalid);
                }
                let mut attrs = Attributes::decode(&row.attrs)?;
                attrs.set_ulong(AttrType::BulwarkArchived, now);
                let mut new_row = row.clone();
                new_row.attrs = attrs.encode();
                new_row.secret = None;
                a.update_object(&new_row)?;
            }
            Ok(())
        })?;
        let handles: Vec<u64> = rows.iter().map(|(h, _)| *h).collect();
        self.forget(&handles);
        Ok(now)
    }
}
