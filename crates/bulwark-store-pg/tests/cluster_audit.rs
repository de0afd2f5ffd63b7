//! Audit across cluster nodes on a real PostgreSQL server: three nodes' local logs shipped to
//! the database, global entries appended by several nodes, the cluster export verified
//! offline; then forks, deletions, edits and a cut-back global chain, each refused or reported.

#![allow(missing_docs, clippy::too_many_lines)]

mod support;

use std::path::Path;

use bulwark_core::audit::{
    verify_cluster_export, AuditEvent, AuditLog, AuditSigner, CheckpointPolicy, Durability,
};
use bulwark_store_pg::audit::{AuditError, GlobalWatch, Shipper};
use bulwark_store_pg::{PgOptions, PgStore};

const DOMAIN: [u8; 16] = [0x42; 16];

/// A node's local log, with an id of its own (the nodes of one host would otherwise share
/// the log's anti-rollback mark; real nodes each have their own state directory).
fn log_at(dir: &Path, name: &str) -> AuditLog {
    let mut id = [0u8; 16];
    bulwark_core::crypto::Provider::get().unwrap().random(&mut id).unwrap();
    AuditLog::open(&dir.join(name), id, true, CheckpointPolicy::default()).unwrap()
}

fn append(log: &AuditLog, n: usize, what: &str) {
    for k in 0..n {
        let ev = AuditEvent { op: "sign", detail: format!("{what} {k}"), ..AuditEvent::default() };
        log.append_with(&ev, Durability::Durable).unwrap();
    }
}

fn export(pg: &PgStore) -> Vec<String> {
    let mut lines = Vec::new();
    pg.audit_export_cluster(&DOMAIN, |l| {
        lines.push(l);
        Ok(())
    })
    .unwrap();
    lines
}

fn integrity(r: Result<impl std::fmt::Debug, AuditError>) -> String {
    match r {
        Err(AuditError::Integrity(m)) => m,
        other => panic!("expected an integrity error, got {other:?}"),
    }
}

#[test]
fn nodes_ship_and_sign_and_the_whole_verifies_offline() {
    let Some(server) = support::server() else { return };
    let db = support::Db::new(server);
    let pg = PgStore::create(&db.url, DOMAIN, "test", &PgOptions::default()).unwrap();
    pg.audit_ensure_tables().unwrap();
    pg.audit_ensure_tables().unwrap(); // idempotent
    let dir = tempfile::tempdir().unwrap();
    let (signer, _) = AuditSigner::generate().unwrap();
    let pk = signer.public_key();
    let logs: Vec<AuditLog> = ["n1", "n2", "n3"].iter().map(|n| log_at(dir.path(), n)).collect();
    let mut shippers = vec![Shipper::default(); 3];
    let mut watches = vec![GlobalWatch::default(); 3];
    for round in 0..4 {
        for (k, log) in logs.iter().enumerate() {
            append(log, 3 + k, &format!("round {round}"));
            let id = format!("n{}", k + 1);
            pg.audit_ship_from(&id, log, &mut shippers[k], 2).unwrap();
            // Any node appends; the others find nothing new or lose the race.
            pg.audit_append_global(&DOMAIN, &signer, &mut watches[(k + round) % 3]).unwrap();
        }
    }
    // Catch up completely, then one final entry.
    for (k, log) in logs.iter().enumerate() {
        while pg.audit_ship_from(&format!("n{}", k + 1), log, &mut shippers[k], 64).unwrap() > 0 {}
    }
    let last = pg.audit_append_global(&DOMAIN, &signer, &mut watches[0]).unwrap().unwrap();
    assert!(pg.audit_append_global(&DOMAIN, &signer, &mut watches[1]).unwrap().is_none());
    for (k, log) in logs.iter().enumerate() {
        assert_eq!(last.head(&format!("n{}", k + 1)).unwrap().size, log.size().unwrap());
    }
    let lines = export(&pg);
    let rep = verify_cluster_export(&lines, &pk);
    assert!(rep.ok(), "{:?}", rep.problems);
    assert_eq!(rep.global_entries, last.n + 1);
    assert_eq!(rep.nodes.len(), 3);
    // Another domain key does not verify it.
    let (other, _) = AuditSigner::generate().unwrap();
    let rep = verify_cluster_export(&lines, &other.public_key());
    assert!(rep.problems[0].contains("global checkpoint 0: signature does not verify"));

    // Concurrent appenders of the same position: exactly one wins.
    append(&logs[0], 2, "race");
    pg.audit_ship_from("n1", &logs[0], &mut shippers[0], 64).unwrap();
    let wins: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut w = GlobalWatch::default();
                    usize::from(pg.audit_append_global(&DOMAIN, &signer, &mut w).unwrap().is_some())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 1);
    let rep = verify_cluster_export(&export(&pg), &pk);
    assert!(rep.ok(), "{:?}", rep.problems);

    // --- attacks on the database --------------------------------------------------------------
    let mut sql = db.client();
    // A record edited in place: the next global append refuses to sign it.
    append(&logs[1], 1, "later");
    pg.audit_ship_from("n2", &logs[1], &mut shippers[1], 64).unwrap();
    let n2 = logs[1].size().unwrap();
    sql.execute(
        "UPDATE audit_records SET record = replace(convert_from(record, 'UTF8'), 'later 0', \
         'LATER 0')::bytea WHERE node_id = 'n2' AND seq = $1",
        &[&i64::try_from(n2 - 1).unwrap()],
    )
    .unwrap();
    let m = integrity(pg.audit_append_global(&DOMAIN, &signer, &mut watches[2]));
    assert!(
        m.contains(&format!("node n2: record {} does not match its chain value", n2 - 1)),
        "{m}"
    );
    // An edited record already covered: the export no longer verifies.
    let edited = sql
        .execute(
            "UPDATE audit_records SET record = replace(convert_from(record, 'UTF8'), \
             'round 0 0', 'round 9 0')::bytea WHERE node_id = 'n3' AND \
             convert_from(record, 'UTF8') LIKE '%round 0 0%'",
            &[],
        )
        .unwrap();
    assert_eq!(edited, 1);
    let p = verify_cluster_export(&export(&pg), &pk).problems.join("\n");
    assert!(p.contains("node n3: line"), "{p}");
    assert!(p.contains("does not match its chain value (edited)"), "{p}");
    // A covered record deleted: the shipper of that node notices, and so does the verifier.
    sql.execute("DELETE FROM audit_records WHERE node_id = 'n1' AND seq = 3", &[]).unwrap();
    let p = verify_cluster_export(&export(&pg), &pk).problems.join("\n");
    assert!(p.contains("node n1: record 3 is missing (gap)"), "{p}");
    sql.execute(
        "DELETE FROM audit_records WHERE node_id = 'n1' AND seq >= (SELECT max(seq) - 1 FROM \
         audit_records WHERE node_id = 'n1')",
        &[],
    )
    .unwrap();
    let m = integrity(pg.audit_ship_from("n1", &logs[0], &mut shippers[0], 64));
    assert!(m.contains("records deleted from the database"), "{m}");
    // The last global entry deleted: a node that saw it raises the alarm; the export shows
    // the records it covered as not covered.
    let mut w = GlobalWatch::default();
    let _ = pg.audit_append_global(&DOMAIN, &signer, &mut w); // sees the whole chain
    sql.execute("DELETE FROM audit_global WHERE n = (SELECT max(n) FROM audit_global)", &[])
        .unwrap();
    let m = integrity(pg.audit_append_global(&DOMAIN, &signer, &mut w));
    assert!(m.contains("the global audit chain was cut back"), "{m}");
    // A forged entry (signed by another key) at the head: refused before anything is signed.
    sql.execute(
        "INSERT INTO audit_global SELECT n + 1, time_ms, prev_hash, heads, signature FROM \
         audit_global WHERE n = (SELECT max(n) FROM audit_global)",
        &[],
    )
    .unwrap();
    let m = integrity(pg.audit_append_global(&DOMAIN, &signer, &mut GlobalWatch::default()));
    assert!(m.contains("signature does not verify"), "{m}");
}

#[test]
fn a_fork_is_refused_by_the_key_and_nothing_is_overwritten() {
    let Some(server) = support::server() else { return };
    let db = support::Db::new(server);
    let pg = PgStore::create(&db.url, DOMAIN, "test", &PgOptions::default()).unwrap();
    pg.audit_ensure_tables().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("a");
    let a = log_at(dir.path(), "a");
    let id = a.log_id();
    append(&a, 3, "original");
    // An older copy of the node's log, taken now (a backup, a disk image).
    let old = dir.path().join("old-copy");
    rusqlite::Connection::open(a.path())
        .unwrap()
        .execute("VACUUM INTO ?1", [old.to_str().unwrap()])
        .unwrap();
    append(&a, 4, "original");
    let mut ship = Shipper::default();
    pg.audit_ship_from("n1", &a, &mut ship, 64).unwrap();
    let size = a.size().unwrap();
    assert_eq!(ship.shipped(), size);
    let before = pg.audit_record("n1", size - 1).unwrap().unwrap();

    // Shipping the same records again (a restart, a lost reply) is harmless.
    let again = a.record_lines(0, 100).unwrap();
    pg.audit_ship("n1", 0, &again).unwrap();

    // The node's log replaced by the older copy, which then goes on with other records. The
    // host's anti-rollback mark would catch it at open; with the host's state lost too (a
    // machine restored from an image), only the database can: the restarted shipper refuses.
    let path = a.path().to_owned();
    drop(a);
    for ext in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(ext);
        let _ = std::fs::remove_file(p);
    }
    std::fs::copy(&old, &path).unwrap();
    let state = std::env::var_os("BULWARK_STATE_DIR").unwrap();
    std::fs::remove_file(Path::new(&state).join(format!("{}.audit", hex::encode(id)))).unwrap();
    let a2 = AuditLog::open(&base, id, false, CheckpointPolicy::default()).unwrap();
    append(&a2, 10, "forked history");
    assert!(a2.size().unwrap() > size);
    let m = integrity(pg.audit_ship_from("n1", &a2, &mut Shipper::default(), 64));
    assert!(m.contains(&format!("record {} in the database differs", size - 1)), "{m}");
    // A shipper that believes it is behind (it shipped up to the copy's size) writes over
    // nothing: the key refuses, no row of the call is written, the original stays.
    let forked = a2.record_lines(2, 100).unwrap();
    let m = integrity(pg.audit_ship("n1", 2, &forked));
    // Records the copy shares with the original pass; the first that differs is refused.
    assert!(m.contains("is already in the database: a fork"), "{m}");
    assert_eq!(pg.audit_record("n1", size - 1).unwrap().unwrap(), before);
    assert!(pg.audit_record("n1", size).unwrap().is_none(), "nothing of the refused call kept");

    // Another log under the same node id (a node id reused): refused.
    let b = log_at(dir.path(), "b");
    let m = integrity(pg.audit_ship_from("n1", &b, &mut Shipper::default(), 64));
    assert!(m.contains("another local log"), "{m}");

    // The constraint itself, as a direct INSERT by anyone: a unique violation.
    let err = db
        .client()
        .execute("INSERT INTO audit_records (node_id, seq, record) VALUES ('n1', 2, 'x')", &[])
        .unwrap_err();
    assert_eq!(err.code(), Some(&postgres::error::SqlState::UNIQUE_VIOLATION));
}
