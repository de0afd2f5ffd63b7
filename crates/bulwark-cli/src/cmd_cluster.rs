//! `bulwark cluster status`: the nodes of a cluster, their leases, the commit sequence number
//! each has applied and how far behind the database it is (docs/cluster.md).

use std::process::ExitCode;

use bulwark_client::Client;

use crate::CliResult;

/// `bulwark cluster ...`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum ClusterCommand {
    /// Nodes, leases, applied sequence numbers and lag, as the answering node sees them.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(c: &Client, cmd: &ClusterCommand) -> CliResult<ExitCode> {
    let ClusterCommand::Status { json } = cmd;
    let s = c.cluster_status()?;
    if *json {
        let nodes: Vec<serde_json::Value> = s
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node_id": n.node_id,
                    "endpoint": n.endpoint,
                    "live": n.live,
                    "acked_seq": n.acked_seq,
                    "lag": s.commit_seq.saturating_sub(n.acked_seq),
                    "generation": n.generation,
                    "lease_left_ms": n.lease_until_ms - s.now_ms,
                    "renewed_ms_ago": s.now_ms - n.renewed_at_ms,
                    "started_at_ms": n.started_at_ms,
                })
            })
            .collect();
        let v = serde_json::json!({
            "cluster": s.cluster,
            "answered_by": s.node_id,
            "serving": s.serving,
            "applied_seq": s.applied_seq,
            "lease_lapses": s.lease_lapses,
            "commit_seq": s.commit_seq,
            "generation": s.generation,
            "nodes": nodes,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    if !s.cluster {
        println!("not a cluster: this HSM serves a single-node store");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "answered by {} ({}), database commit sequence {}, store generation {}",
        s.node_id,
        if s.serving { "serving" } else { "NOT serving" },
        s.commit_seq,
        s.generation
    );
    println!(
        "{:<16} {:<28} {:<6} {:>10} {:>6} {:>11} {:>10}",
        "node", "endpoint", "lease", "applied", "lag", "lease left", "renewed"
    );
    for n in &s.nodes {
        let shown = |v: &str| bulwark_core::display::escape(v);
        println!(
            "{:<16} {:<28} {:<6} {:>10} {:>6} {:>9}ms {:>6}ms ago",
            shown(&n.node_id),
            shown(&n.endpoint),
            if n.live { "live" } else { "LAPSED" },
            n.acked_seq,
            s.commit_seq.saturating_sub(n.acked_seq),
            (n.lease_until_ms - s.now_ms).max(0),
            s.now_ms - n.renewed_at_ms,
        );
    }
    Ok(ExitCode::SUCCESS)
}
