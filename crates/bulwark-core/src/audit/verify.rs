//! Offline verification of an exported audit log and of inclusion proofs. Needs only the
//! export and the audit public key: no HSM, no store, no secret.
//!
//! What "first bad sequence number" means: a record whose `seq` is not the next expected one
//! (deleted, inserted, reordered records) or whose content does not hash to the chain value
//! stored with it (edited record) is reported at that position. Someone who edits a record and
//! recomputes every later chain value is caught by the next signed checkpoint; the report then
//! names the first record not covered by an earlier good checkpoint. Records after the last
//! checkpoint (a truncated export, or records appended to it) are reported from the first
//! uncovered one.

use super::merkle::{self, Frontier};
use super::{chain_next, genesis, Checkpoint, ExportLine, Hash};
use crate::audit::log::Proof;

/// What [`verify_export`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read and checked (before the first problem, if any).
    pub records: u64,
    /// First sequence number of the export.
    pub since: u64,
    /// The last checkpoint whose signature and content checked out.
    pub last_checkpoint: Option<Checkpoint>,
    /// The first bad sequence number and why, or `None` when the whole export verifies.
    pub bad: Option<(u64, String)>,
}

impl VerifyReport {
    /// True when every record verified and is covered by a signed checkpoint.
    pub fn ok(&self) -> bool {
        self.bad.is_none()
    }
}

fn h(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

/// Verifies an exported log (the lines of `bulwark audit export`) against the audit public
/// key (raw 32 bytes).
pub fn verify_export<S: AsRef<str>>(lines: &[S], public_key: &[u8]) -> VerifyReport {
    let mut rep = VerifyReport { records: 0, since: 0, last_checkpoint: None, bad: None };
    let mut it = lines.iter().map(AsRef::as_ref).filter(|l| !l.trim().is_empty());
    let header = it.next().and_then(|l| serde_json::from_str::<ExportLine>(l).ok());
    let Some(ExportLine::Header { version: 1, log_id, since, prev_chain, frontier }) = header
    else {
        rep.bad = Some((0, "missing or malformed header line".into()));
        return rep;
    };
    rep.since = since;
    let id: Option<[u8; 16]> = hex::decode(&log_id).ok().and_then(|v| v.try_into().ok());
    let nodes: Option<Vec<Hash>> = frontier.iter().map(|s| h(s)).collect();
    let (Some(id), Some(mut chain), Some(nodes)) = (id, h(&prev_chain), nodes) else {
        rep.bad = Some((since, "malformed header".into()));
        return rep;
    };
    let Some(mut tree) = Frontier::from_parts(since, nodes) else {
        rep.bad = Some((since, "header frontier does not fit its size".into()));
        return rep;
    };
    if since == 0 && chain != genesis(&id) {
        rep.bad = Some((0, "header chain is not this log's genesis".into()));
        return rep;
    }
    let mut expected = since;
    let mut covered = since;
    for line in it {
        let Ok(parsed) = serde_json::from_str::<ExportLine>(line) else {
            rep.bad = Some((expected, "malformed line (truncated or edited)".into()));
            return rep;
        };
        match parsed {
            ExportLine::Header { .. } => {
                rep.bad = Some((expected, "second header".into()));
                return rep;
            }
            ExportLine::Record { record, chain: stored } => {
                if record.seq != expected {
                    let at = record.seq.min(expected);
                    let why = if record.seq > expected {
                        format!("record {expected} is missing or out of order")
                    } else {
                        format!("record {} appears again or out of order", record.seq)
                    };
                    rep.bad = Some((at, why));
                    return rep;
                }
                let canonical = record.canonical();
                let next = chain_next(&chain, &canonical);
                if h(&stored) != Some(next) {
                    rep.bad = Some((record.seq, "record does not match its chain value".into()));
                    return rep;
                }
                chain = next;
                tree.push(merkle::leaf_hash(&canonical));
                expected += 1;
                rep.records += 1;
            }
            ExportLine::Checkpoint(cp) => {
                if cp.log_id != log_id || !cp.verify_signature(public_key) {
                    rep.bad = Some((covered, "checkpoint signature does not verify".into()));
                    return rep;
                }
                if cp.size != expected {
                    rep.bad = Some((
                        cp.size.min(expected),
                        format!("checkpoint covers {} records but {expected} precede it", cp.size),
                    ));
                    return rep;
                }
                if h(&cp.chain) != Some(chain) || h(&cp.root) != Some(tree.root()) {
                    rep.bad = Some((
                        covered,
                        format!(
                            "records {covered}..{} do not match the signed checkpoint",
                            cp.size
                        ),
                    ));
                    return rep;
                }
                covered = cp.size;
                rep.last_checkpoint = Some(cp);
            }
        }
    }
    if rep.last_checkpoint.is_none() || covered < expected {
        rep.bad = Some((covered, "records not covered by a signed checkpoint (truncated?)".into()));
    }
    rep
}

/// Checks an inclusion proof from `bulwark audit prove` against the audit public key; when the
/// exported log is given too, also checks that its record `proof.seq` is the proven leaf.
pub fn verify_proof<S: AsRef<str>>(
    proof: &Proof,
    public_key: &[u8],
    log: Option<&[S]>,
) -> Result<(), String> {
    let cp = &proof.checkpoint;
    if !cp.verify_signature(public_key) {
        return Err("checkpoint signature does not verify".into());
    }
    let leaf = h(&proof.leaf).ok_or("malformed leaf hash")?;
    let root = h(&cp.root).ok_or("malformed root")?;
    let path: Option<Vec<Hash>> = proof.path.iter().map(|s| h(s)).collect();
    let path = path.ok_or("malformed path")?;
    if !merkle::verify_inclusion(proof.seq, cp.size, &leaf, &path, &root) {
        return Err(format!("record {} is not included in the checkpoint", proof.seq));
    }
    if let Some(lines) = log {
        let rec = lines.iter().find_map(|l| match serde_json::from_str(l.as_ref()) {
            Ok(ExportLine::Record { record, .. }) if record.seq == proof.seq => Some(record),
            _ => None,
        });
        let rec = rec.ok_or_else(|| format!("record {} is not in the log", proof.seq))?;
        if merkle::leaf_hash(&rec.canonical()) != leaf {
            return Err(format!("record {} in the log differs from the proven one", proof.seq));
        }
    }
    Ok(())
}
