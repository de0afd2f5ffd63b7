//! Audit across cluster nodes (docs/audit.md "Cluster audit"): a background thread per node
//! ships its local audit log's records to the database (`audit_records`, keyed (node id,
//! sequence number)) every [`SHIP_EVERY`], and appends a signed entry to the global checkpoint
//! chain (`audit_global`) when some node's head moved, at most every [`GLOBAL_EVERY`].
//!
//! A fork (the database holds other records for this node's positions, or this node id under
//! another log), records deleted or edited in the database, or a global chain cut back or not
//! signed by the domain's audit key is an **integrity alarm**: the node stops shipping and
//! raises the configured tamper response. A database it cannot reach only delays shipping (the
//! local log keeps every record; the lag is reported in the log).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bulwark_core::store::Store as _;
use bulwark_store_pg::audit::{AuditError, GlobalWatch, Shipper};

use crate::cluster::Node;
use crate::state::HsmState;

/// How often a node ships its new records (the bound on the lag, plus the local log's
/// durability window for key-use records).
pub const SHIP_EVERY: Duration = Duration::from_millis(250);
/// How often a node tries to append a global entry.
pub const GLOBAL_EVERY: Duration = Duration::from_secs(1);
const BATCH: usize = 4096;

/// Starts the node's audit shipping thread; it ends when the state is dropped or after an
/// integrity alarm.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn(node: Arc<Node>, state: Weak<HsmState>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("bulwarkd-audit-{}", node.id()))
        .spawn(move || run(&node, &state))
        .map(|_| ())
}

fn run(node: &Node, state: &Weak<HsmState>) {
    let mut ship = Shipper::default();
    let mut watch = GlobalWatch::default();
    let mut tables = false;
    let mut last_global: Option<Instant> = None;
    let mut last_error: Option<Instant> = None;
    loop {
        std::thread::sleep(SHIP_EVERY);
        let Some(st) = state.upgrade() else { return };
        if st.is_sealed() {
            continue;
        }
        let due = last_global.is_none_or(|t| t.elapsed() >= GLOBAL_EVERY);
        match round(node, &st, &mut ship, &mut watch, &mut tables, due) {
            Ok(appended) => {
                if due {
                    last_global = Some(Instant::now());
                }
                if appended {
                    tracing::debug!(node = %node.id(), shipped = ship.shipped(), "global audit entry appended");
                }
            }
            Err(AuditError::Store(e)) => {
                if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(error = %e, node = %node.id(), shipped = ship.shipped(),
                        "audit records not shipped to the cluster database yet");
                    last_error = Some(Instant::now());
                }
            }
            Err(AuditError::Integrity(m)) => {
                tracing::error!(node = %node.id(), problem = %m, "cluster audit integrity alarm");
                st.token.tamper_signal(&format!("cluster audit: {m}"));
                return;
            }
        }
    }
}

/// One round: ship, then (when `global_due`) append a global entry. Returns whether an entry
/// was appended.
fn round(
    node: &Node,
    st: &HsmState,
    ship: &mut Shipper,
    watch: &mut GlobalWatch,
    tables: &mut bool,
    global_due: bool,
) -> Result<bool, AuditError> {
    let Some(log) = st.token.audit_log() else { return Ok(false) };
    let pg = node.pg();
    if !*tables {
        pg.audit_ensure_tables()?;
        *tables = true;
    }
    while pg.audit_ship_from(node.id(), log, ship, BATCH)? > 0 {}
    if !global_due {
        return Ok(false);
    }
    let Some(signer) = log.signer() else { return Ok(false) };
    let domain = pg.header()?.store_uid;
    Ok(pg.audit_append_global(&domain, &signer, watch)?.is_some())
}

/// For an export: ships this node's records now and appends a global entry over everything
/// shipped, so the export covers this node up to the moment of the request. Returns the
/// domain id.
///
/// # Errors
/// As the background rounds; `Store` when the node is sealed (no audit key).
pub fn sync_for_export(node: &Node, st: &HsmState) -> Result<[u8; 16], AuditError> {
    let log = st.token.audit_log().ok_or_else(|| {
        AuditError::Store(bulwark_core::Error::NotInitialized("this node has no audit log".into()))
    })?;
    log.flush()?;
    let pg = node.pg();
    pg.audit_ensure_tables()?;
    let mut ship = Shipper::default();
    while pg.audit_ship_from(node.id(), log, &mut ship, BATCH)? > 0 {}
    let signer = log.signer().ok_or(AuditError::Store(bulwark_core::Error::UserNotLoggedIn))?;
    let domain = pg.header()?.store_uid;
    // Another node may take the position first: then try once more over its entry.
    for _ in 0..5 {
        let mut watch = GlobalWatch::default();
        match pg.audit_append_global(&domain, &signer, &mut watch)? {
            Some(_) => break,
            None => {
                if pg.audit_global_covers(node.id(), ship.shipped())? {
                    break;
                }
            }
        }
    }
    Ok(domain)
}
