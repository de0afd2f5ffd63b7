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

use std::collections::BTreeSet;

use super::merkle::{self, Frontier};
use super::{chain_next, genesis, AuditRecord, Checkpoint, ExportLine, Hash};
use crate::audit::log::Proof;

/// One `unclean-shutdown` record: an opener of the log ended without closing it (killed,
/// crashed, power lost), so records it had sequenced after `last_durable_seq` may be lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UncleanShutdown {
    /// Sequence number of the `unclean-shutdown` record.
    pub seq: u64,
    /// The dead opener's registration id.
    pub opener: String,
    /// Its process id and host.
    pub pid: u64,
    /// Its host.
    pub host: String,
    /// The last record it stored (records it sequenced later were lost).
    pub last_durable_seq: Option<u64>,
}

/// What [`verify_export`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read and checked (before the first problem, if any).
    pub records: u64,
    /// First sequence number of the export.
    pub since: u64,
    /// The last checkpoint whose signature and content checked out.
    pub last_checkpoint: Option<Checkpoint>,
    /// The first bad sequence number and why, or `None` when the whole export verifies.
    pub bad: Option<(u64, String)>,
    /// Every unclean end of an opener the log records (verified records only). Not a
    /// verification failure by itself; a tamper policy may alarm on it.
    pub unclean_shutdowns: Vec<UncleanShutdown>,
    /// Key uses recorded: one per key-use record plus the counts of the `use-count` records
    /// of key uses (counted `*-init` calls and lookups are not uses).
    pub key_uses: u64,
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

fn keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "header" => &["type", "version", "log_id", "since", "prev_chain", "frontier"],
        "record" => &[
            "type",
            "seq",
            "time_ms",
            "actor",
            "role",
            "client",
            "session",
            "op",
            "mechanism",
            "object",
            "label",
            "result",
            "detail",
            "chain",
        ],
        "checkpoint" => &["type", "log_id", "size", "chain", "root", "time_ms", "signature"],
        _ => &[],
    }
}

/// Parses one export line strictly: an object with a known `type` and exactly that type's
/// fields (an unknown field is an error: a verifier must never pass over content it does not
/// check). The error names the problem, for a message that names the line.
///
/// # Errors
/// A description of what is wrong with the line.
pub fn parse_line(line: &str) -> Result<ExportLine, String> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|_| "not valid JSON (truncated or edited)".to_owned())?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let kind = obj.get("type").and_then(|t| t.as_str()).ok_or("no \"type\" field")?.to_owned();
    let allowed = keys(&kind);
    if allowed.is_empty() {
        return Err(format!("unknown line type {kind:?}"));
    }
    let unknown: BTreeSet<&str> =
        obj.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
    if let Some(k) = unknown.first() {
        return Err(format!("unknown field {k:?} in a {kind} line"));
    }
    serde_json::from_value(v).map_err(|e| format!("malformed {kind} line ({e})"))
}

/// A key use that is recorded one record per use.
fn is_key_use(op: &str) -> bool {
    matches!(op, "sign" | "verify" | "encrypt" | "decrypt" | "encapsulate" | "decapsulate")
}

fn unclean(r: &AuditRecord) -> Option<UncleanShutdown> {
    if r.op != "unclean-shutdown" {
        return None;
    }
    let field =
        |name: &str| r.detail.split(' ').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
    Some(UncleanShutdown {
        seq: r.seq,
        opener: field("opener").unwrap_or_default().to_owned(),
        pid: field("pid").and_then(|p| p.parse().ok()).unwrap_or(0),
        host: field("host").unwrap_or_default().to_owned(),
        last_durable_seq: field("last_durable_seq").and_then(|p| p.parse().ok()),
    })
}

enum State {
    Start,
    Body { id: [u8; 16], log_id: String, chain: Hash, tree: Frontier, expected: u64, covered: u64 },
    Failed,
}

/// An incremental verifier: feed it the export's lines in order ([`Verifier::push_line`] or
/// [`Verifier::push`]), then [`Verifier::finish`]. Needs constant memory, whatever the size
/// of the export.
pub struct Verifier<'k> {
    public_key: &'k [u8],
    rep: VerifyReport,
    state: State,
    line_no: u64,
}

impl std::fmt::Debug for Verifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("report", &self.rep).finish_non_exhaustive()
    }
}

impl<'k> Verifier<'k> {
    /// A verifier for exports signed by `public_key` (raw Ed25519).
    pub fn new(public_key: &'k [u8]) -> Self {
        Self { public_key, rep: VerifyReport::default(), state: State::Start, line_no: 0 }
    }

    fn fail(&mut self, seq: u64, why: String) -> bool {
        self.rep.bad = Some((seq, why));
        self.state = State::Failed;
        false
    }

    fn at(&self) -> u64 {
        match &self.state {
            State::Body { expected, .. } => *expected,
            _ => self.rep.since,
        }
    }

    /// Feeds the next line of the export text (blank lines are skipped). Returns false once
    /// the export has failed (later lines change nothing).
    pub fn push_line(&mut self, line: &str) -> bool {
        self.push_line_with(line, |_| {})
    }

    /// [`Verifier::push_line`], showing the parsed line to `inspect` first (to pick out a
    /// record while streaming, without parsing twice).
    pub fn push_line_with(&mut self, line: &str, inspect: impl FnOnce(&ExportLine)) -> bool {
        if matches!(self.state, State::Failed) {
            return false;
        }
        self.line_no += 1;
        if line.trim().is_empty() {
            return true;
        }
        match parse_line(line) {
            Ok(l) => {
                inspect(&l);
                self.push(l)
            }
            Err(why) => {
                let at = self.at();
                let what = if matches!(self.state, State::Start) { "header " } else { "" };
                self.fail(at, format!("line {}: {what}{why}", self.line_no))
            }
        }
    }

    /// Feeds the next parsed line. Returns false once the export has failed.
    pub fn push(&mut self, line: ExportLine) -> bool {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Failed => false,
            State::Start => self.header(line),
            State::Body { id, log_id, chain, tree, expected, covered } => {
                self.body(line, id, log_id, chain, tree, expected, covered)
            }
        }
    }

    fn header(&mut self, line: ExportLine) -> bool {
        let ExportLine::Header { version: 1, log_id, since, prev_chain, frontier } = line else {
            return self.fail(0, "missing or malformed header line".into());
        };
        self.rep.since = since;
        let id: Option<[u8; 16]> = hex::decode(&log_id).ok().and_then(|v| v.try_into().ok());
        let nodes: Option<Vec<Hash>> = frontier.iter().map(|s| h(s)).collect();
        let (Some(id), Some(chain), Some(nodes)) = (id, h(&prev_chain), nodes) else {
            return self.fail(since, "malformed header".into());
        };
        let Some(tree) = Frontier::from_parts(since, nodes) else {
            return self.fail(since, "header frontier does not fit its size".into());
        };
        if since == 0 && chain != genesis(&id) {
            return self.fail(0, "header chain is not this log's genesis".into());
        }
        self.state = State::Body { id, log_id, chain, tree, expected: since, covered: since };
        true
    }

    #[allow(clippy::too_many_arguments)] // the body state, moved in and out whole
    fn body(
        &mut self,
        line: ExportLine,
        id: [u8; 16],
        log_id: String,
        mut chain: Hash,
        mut tree: Frontier,
        mut expected: u64,
        mut covered: u64,
    ) -> bool {
        match line {
            ExportLine::Header { .. } => return self.fail(expected, "second header".into()),
            ExportLine::Record { record, chain: stored } => {
                if record.seq != expected {
                    let at = record.seq.min(expected);
                    let why = if record.seq > expected {
                        format!("record {expected} is missing or out of order")
                    } else {
                        format!("record {} appears again or out of order", record.seq)
                    };
                    return self.fail(at, why);
                }
                let canonical = record.canonical();
                let next = chain_next(&chain, &canonical);
                if h(&stored) != Some(next) {
                    return self.fail(record.seq, "record does not match its chain value".into());
                }
                chain = next;
                tree.push(merkle::leaf_hash(&canonical));
                expected += 1;
                self.rep.records += 1;
                if let Some(u) = unclean(&record) {
                    self.rep.unclean_shutdowns.push(u);
                }
                if let Some(c) = record.use_count() {
                    // Counted `*-init` and lookups are not uses of a key's data path.
                    if is_key_use(&c.op) {
                        self.rep.key_uses += c.count;
                    }
                } else if is_key_use(&record.op) && record.result == "ok" {
                    self.rep.key_uses += 1;
                }
            }
            ExportLine::Checkpoint(cp) => {
                if cp.log_id != log_id || !cp.verify_signature(self.public_key) {
                    return self.fail(covered, "checkpoint signature does not verify".into());
                }
                if cp.size != expected {
                    return self.fail(
                        cp.size.min(expected),
                        format!("checkpoint covers {} records but {expected} precede it", cp.size),
                    );
                }
                if h(&cp.chain) != Some(chain) || h(&cp.root) != Some(tree.root()) {
                    let why = format!(
                        "records {covered}..{} do not match the signed checkpoint",
                        cp.size
                    );
                    return self.fail(covered, why);
                }
                covered = cp.size;
                self.rep.last_checkpoint = Some(cp);
            }
        }
        self.state = State::Body { id, log_id, chain, tree, expected, covered };
        true
    }

    /// The report: the first problem, if any, including records after the last checkpoint
    /// (a truncated export).
    pub fn finish(mut self) -> VerifyReport {
        match self.state {
            State::Failed => {}
            State::Start => {
                self.rep.bad = Some((0, "missing or malformed header line".into()));
            }
            State::Body { expected, covered, .. } => {
                if self.rep.last_checkpoint.is_none() || covered < expected {
                    self.rep.bad = Some((
                        covered,
                        "records not covered by a signed checkpoint (truncated?)".into(),
                    ));
                }
            }
        }
        self.rep
    }
}

/// Verifies an exported log (the lines of `bulwark audit export`) against the audit public
/// key (raw 32 bytes).
pub fn verify_export<S: AsRef<str>>(lines: &[S], public_key: &[u8]) -> VerifyReport {
    let mut v = Verifier::new(public_key);
    for l in lines {
        if !v.push_line(l.as_ref()) {
            break;
        }
    }
    v.finish()
}

/// Checks an inclusion proof from `bulwark audit prove` against the audit public key; when the
/// exported log is given too, also checks that its record `proof.seq` is the proven leaf.
pub fn verify_proof<S: AsRef<str>>(
    proof: &Proof,
    public_key: &[u8],
    log: Option<&[S]>,
) -> Result<(), String> {
    match log {
        None => verify_proof_record(proof, public_key, None),
        Some(lines) => {
            let rec = lines.iter().find_map(|l| match parse_line(l.as_ref()) {
                Ok(ExportLine::Record { record, .. }) if record.seq == proof.seq => Some(record),
                _ => None,
            });
            let rec = rec.ok_or_else(|| format!("record {} is not in the log", proof.seq))?;
            verify_proof_record(proof, public_key, Some(&rec))
        }
    }
}

/// [`verify_proof`] with the exported record itself (found by the caller, e.g. while
/// streaming a large export) instead of the whole log.
///
/// # Errors
/// What does not check out.
pub fn verify_proof_record(
    proof: &Proof,
    public_key: &[u8],
    record: Option<&AuditRecord>,
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
    if let Some(rec) = record {
        if rec.seq != proof.seq || merkle::leaf_hash(&rec.canonical()) != leaf {
            return Err(format!("record {} in the log differs from the proven one", proof.seq));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowed_fields_are_exactly_what_export_writes() {
        let rec = AuditRecord::from_event(0, 1, &super::super::AuditEvent::default());
        let cp = Checkpoint {
            log_id: String::new(),
            size: 0,
            chain: String::new(),
            root: String::new(),
            time_ms: 0,
            signature: String::new(),
        };
        let lines = [
            ExportLine::Header {
                version: 1,
                log_id: String::new(),
                since: 0,
                prev_chain: String::new(),
                frontier: vec![],
            },
            ExportLine::Record { record: rec, chain: String::new() },
            ExportLine::Checkpoint(cp),
        ];
        for l in &lines {
            let v = serde_json::to_value(l).unwrap();
            let got: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            let want: BTreeSet<&str> = keys(v["type"].as_str().unwrap()).iter().copied().collect();
            assert_eq!(got, want);
            let text = serde_json::to_string(l).unwrap();
            assert_eq!(&parse_line(&text).unwrap(), l);
            let extra = text.replacen('{', "{\"note\":\"x\",", 1);
            assert!(parse_line(&extra).unwrap_err().contains("unknown field \"note\""));
        }
    }
}
