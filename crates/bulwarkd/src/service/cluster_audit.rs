//! `AuditExportCluster` (`bulwark audit export --cluster`): every node's shipped audit records
//! and the signed global checkpoint chain, streamed as JSON lines. Auditor or security officer,
//! as the local export. The answering node first ships its own records and appends a global
//! entry over everything shipped, so the export covers it up to the request; each node's
//! records are exported up to the last global entry's head (later ones are not yet signed).

use bulwark_core::audit::current_actor;
use bulwark_proto::v1 as pb;
use bulwark_store_pg::audit::AuditError;
use tonic::{Request, Response, Status};

use super::{HsmService, AUDIT};

fn status_of(e: &AuditError) -> Status {
    match e {
        AuditError::Integrity(m) => Status::data_loss(format!("cluster audit integrity: {m}")),
        AuditError::Store(e) => super::core(e),
    }
}

pub(super) async fn export(
    svc: &HsmService,
    req: Request<pb::AuditExportClusterRequest>,
) -> Result<Response<super::AuditStream>, Status> {
    const CHUNK_BYTES: usize = 1 << 20;
    let (_, actor) = svc.auth(&req, AUDIT, "audit-export-cluster").await?;
    let (pg, domain) = svc
        .state
        .run("audit-export-cluster", actor, |st| {
            let Some(node) = st.cluster() else {
                return Err(Status::failed_precondition(
                    "not a cluster node: use bulwark audit export without --cluster",
                ));
            };
            st.audit(&current_actor().unwrap_or_default(), "audit-export", "ok", "cluster".into());
            let domain =
                crate::cluster_audit::sync_for_export(node, st).map_err(|e| status_of(&e))?;
            Ok((node.pg().clone(), domain))
        })
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let r = pg.audit_export_cluster(&domain, |line| {
            bytes += line.len();
            chunk.push(line);
            if bytes >= CHUNK_BYTES {
                bytes = 0;
                let lines = std::mem::take(&mut chunk);
                if tx.blocking_send(Ok(pb::AuditExportChunk { lines })).is_err() {
                    return Err(bulwark_core::Error::Store("the client went away".into()));
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                if !chunk.is_empty() {
                    let _ = tx.blocking_send(Ok(pb::AuditExportChunk { lines: chunk }));
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(super::core(&e)));
            }
        }
    });
    Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
