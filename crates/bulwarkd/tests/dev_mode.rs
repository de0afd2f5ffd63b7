//! Dev mode's start-up (unsealing with the dev shares, the daemon's internal keys) is recorded
//! under the system's identity, not as the crypto user whose login the unsealed token holds.

use bulwarkd::dev::DevServer;

#[test]
fn start_up_actions_are_not_recorded_as_the_crypto_user() {
    let d = tempfile::tempdir().unwrap();
    std::env::set_var("BULWARK_STATE_DIR", d.path().join("state"));
    let s = DevServer::start(&d.path().join("dev")).unwrap();
    let records: Vec<serde_json::Value> =
        s.state.audit_records().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actors: Vec<String> = records
        .iter()
        .filter(|r| r["type"] == "record")
        .map(|r| format!("{} {}", r["actor"], r["role"]))
        .collect();
    assert!(!actors.is_empty(), "start-up is recorded: {records:#?}");
    assert!(
        actors.iter().all(|a| !a.contains("crypto-user") && !a.contains("\"user\"")),
        "{actors:#?}"
    );
    assert!(
        actors.iter().any(|a| a.contains("\"bulwarkd\"") && a.contains("system")),
        "{actors:#?}"
    );
}
