//! `ClusterStatus` (`bulwark cluster status`): the nodes of the cluster, their leases, the commit
//! sequence number each acknowledged, and this node's own state. Any logged-in role; nothing
//! secret is shown (node ids, endpoints, times, sequence numbers).

use bulwark_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{HsmService, ANY};

pub(super) async fn status(
    svc: &HsmService,
    req: Request<pb::ClusterStatusRequest>,
) -> Result<Response<pb::ClusterStatusResponse>, Status> {
    let (_, actor) = svc.auth(&req, ANY, "cluster-status").await?;
    let r = svc
        .state
        .run("cluster-status", actor, |st| {
            let Some(node) = st.cluster() else {
                return Ok(pb::ClusterStatusResponse::default());
            };
            let s = node.status().map_err(|e| super::core(&e))?;
            Ok(pb::ClusterStatusResponse {
                cluster: true,
                node_id: s.node_id,
                serving: s.serving,
                applied_seq: s.applied,
                lease_lapses: s.lapses,
                now_ms: s.view.now_ms,
                commit_seq: s.view.commit_seq,
                generation: s.view.generation,
                nodes: s
                    .view
                    .nodes
                    .into_iter()
                    .map(|n| pb::ClusterNode {
                        node_id: n.node_id,
                        endpoint: n.endpoint,
                        started_at_ms: n.started_at_ms,
                        renewed_at_ms: n.renewed_at_ms,
                        lease_until_ms: n.lease_until_ms,
                        acked_seq: n.acked_seq,
                        generation: n.generation,
                        live: n.live,
                    })
                    .collect(),
            })
        })
        .await?;
    Ok(Response::new(r))
}
