//! Backup and restore over the API (docs/backup.md): the token writes the backup file beside
//! its store (0600), the daemon streams it back and removes it; an uploaded backup is written
//! beside the store, restored from there and removed. Both are the security officer's and are
//! quorum-gated like zeroize when the HSM requires approvals.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use bulwark_core::kernel::Role;
use bulwark_core::secret::SecretBytes;
use bulwark_core::token::BACKUP_KDF;
use bulwark_proto::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use super::{core, HsmService};

/// The stream of a backup file.
pub(crate) type BackupStream =
    tokio_stream::wrappers::ReceiverStream<Result<pb::BackupChunk, Status>>;

/// Bytes per streamed message.
const CHUNK: usize = 1 << 20;
/// Largest backup accepted for a restore (about 1.5 million keys at 618 bytes each, ten times
/// over).
const MAX_UPLOAD: u64 = 16 << 30;

/// A file beside the store, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(store: &Path, what: &str) -> Result<Self, Status> {
        let mut r = [0u8; 8];
        bulwark_core::crypto::Provider::get()
            .and_then(|p| p.random(&mut r))
            .map_err(|e| core(&e))?;
        let name = format!(".{what}-{}.bwb", hex::encode(r));
        Ok(Self(store.with_file_name(name)))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn io(e: &std::io::Error) -> Status {
    tracing::error!(error = %e, "backup file i/o");
    Status::internal("backup file i/o failed")
}

pub(super) async fn backup(
    svc: &HsmService,
    req: Request<pb::BackupRequest>,
) -> Result<Response<BackupStream>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "backup").await?;
    let r = req.into_inner();
    let pass = SecretBytes::new(r.passphrase);
    let (approvals, not_after, keys) = (r.approvals, r.approval_not_after, r.keys);
    tracing::info!(user = %so.user, selected = keys.len(), "backup requested");
    let (file, objects) = svc
        .state
        .run("backup", actor, move |st| {
            st.check_approvals("backup", &[], &approvals, not_after)?;
            let scratch = Scratch::new(st.local_path(), "backup")?;
            let s = if keys.is_empty() {
                st.token.backup(&scratch.0, &pass, BACKUP_KDF, &mut |_, _| {})
            } else {
                st.token.backup_selected(&scratch.0, &keys, &pass, BACKUP_KDF, &mut |_, _| {})
            }
            .map_err(|e| core(&e))?;
            // Opened, then unlinked when `scratch` drops: only this stream can read it.
            let f = std::fs::File::open(&scratch.0).map_err(|e| io(&e))?;
            Ok((f, s.objects))
        })
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut f = std::io::BufReader::new(file);
        let mut first = true;
        loop {
            let mut data = vec![0u8; CHUNK];
            let n = match read_full(&mut f, &mut data) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(io(&e)));
                    return;
                }
            };
            data.truncate(n);
            if n == 0 && !first {
                return;
            }
            let chunk = pb::BackupChunk { data, objects: if first { objects } else { 0 } };
            first = false;
            if tx.blocking_send(Ok(chunk)).is_err() || n < CHUNK {
                return; // the client went away, or that was the end
            }
        }
    });
    Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

fn read_full(f: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

pub(super) async fn restore(
    svc: &HsmService,
    req: Request<Streaming<pb::RestoreChunk>>,
) -> Result<Response<pb::RestoreResponse>, Status> {
    let (so, actor) = svc.auth(&req, &[Role::SecurityOfficer], "restore").await?;
    let mut stream = req.into_inner();
    let first =
        stream.message().await?.ok_or_else(|| Status::invalid_argument("empty restore stream"))?;
    let pass = SecretBytes::new(first.passphrase);
    let (approvals, not_after, rebase) = (first.approvals, first.approval_not_after, first.rebase);
    let scratch = Scratch::new(svc.state.local_path(), "restore")?;
    let f = bulwark_core::fsutil::create_private(&scratch.0).map_err(|e| io(&e))?;
    let mut w = std::io::BufWriter::new(f);
    let mut total = first.data.len() as u64;
    w.write_all(&first.data).map_err(|e| io(&e))?;
    while let Some(m) = stream.message().await? {
        if !m.passphrase.is_empty() || !m.approvals.is_empty() || m.rebase {
            return Err(Status::invalid_argument(
                "only the first restore message carries the passphrase and approvals",
            ));
        }
        total += m.data.len() as u64;
        if total > MAX_UPLOAD {
            return Err(Status::invalid_argument("backup file too large"));
        }
        w.write_all(&m.data).map_err(|e| io(&e))?;
    }
    let f = w.into_inner().map_err(|e| io(e.error()))?;
    f.sync_all().map_err(|e| io(&e))?;
    drop(f);
    tracing::warn!(user = %so.user, bytes = total, "restore requested");
    let resp = svc
        .state
        .run("restore", actor, move |st| {
            let opts = bulwark_core::token::RestoreOptions { rebase };
            if rebase {
                // Taking the HSM back to a backup resets its anti-rollback baseline: only a
                // quorum may decide that.
                let by = st.check_approvals("restore-rebase", &[], &approvals, not_after)?;
                if by.is_empty() {
                    return Err(Status::failed_precondition(
                        "a restore that replaces this HSM's contents (rebase) needs quorum \
                         approvals: configure [approvals] in bulwarkd.toml",
                    ));
                }
            } else {
                st.check_approvals("restore", &[], &approvals, not_after)?;
            }
            let unlock = bulwark_core::token::Unlock::Passphrase(&pass);
            let s = st
                .token
                .restore_with_options(&scratch.0, unlock, opts, &mut |_, _| {})
                .map_err(|e| core(&e))?;
            st.labels.clear();
            drop(scratch);
            Ok(pb::RestoreResponse {
                objects: s.objects,
                users: s.users,
                grants: s.grants,
                source_store: hex::encode(s.source_store),
                domain: hex::encode(s.domain),
                keys: s.keys,
                rebased_generation: s.rebased.unwrap_or(0),
            })
        })
        .await?;
    tracing::warn!(user = %so.user, objects = resp.objects, "restored from a backup");
    Ok(Response::new(resp))
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_full_fills_across_short_reads() {
        let data: Vec<u8> = (0..=255).collect();
        let mut r = std::io::Read::chain(&data[..100], &data[100..]);
        let mut buf = [0u8; 200];
        assert_eq!(super::read_full(&mut r, &mut buf).unwrap(), 200);
        assert_eq!(&buf[..], &data[..200]);
    }
}
