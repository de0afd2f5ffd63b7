//! Audit across cluster nodes (issue 12, docs/audit.md "Cluster audit").
//!
//! Every node of a cluster keeps its own local log (chained records, signed checkpoints) and
//! ships its records, exactly as exported ([`ExportLine::Record`] JSON lines), to the shared
//! database keyed `(node id, sequence number)`. A **global checkpoint chain** records every
//! node's head: entry `n` names, for each node, how many of its records it covers and the chain
//! value after the last of them, links to entry `n - 1` by hash, and is signed with the domain's
//! audit key (the key that signs local checkpoints; every unsealed node of the domain holds it).
//!
//! This module holds what needs no database: the entry and its signature ([`GlobalEntry`],
//! [`AuditSigner::sign_global`]), one step of a node chain ([`step_node_chain`]), reading a
//! local log's records for shipping ([`AuditLog::record_lines`]), the export format
//! ([`ClusterLine`]) and the offline verifier of a whole cluster export ([`ClusterVerifier`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, KeyPair as _};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::export::{for_each_in_batch, i, u};
use super::{chain_next, genesis, AuditLog, AuditSigner, ExportLine, Hash};
use crate::error::{Error, Result};

/// One node's head in a global entry: its records `0..size`, and the chain value after record
/// `size - 1` (the node chain's genesis value when `size` is 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHead {
    /// The node's cluster id.
    pub node_id: String,
    /// Hex id of the node's local log (its chain starts at [`genesis`] of it).
    pub log_id: String,
    /// Number of the node's records covered.
    pub size: u64,
    /// Hex chain value after the last covered record.
    pub chain: String,
}

/// One entry of the global checkpoint chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalEntry {
    /// Position in the global chain, from 0, without gaps.
    pub n: u64,
    /// Milliseconds since the Unix epoch (the appending node's clock).
    pub time_ms: u64,
    /// Hex hash of entry `n - 1` ([`GlobalEntry::hash`]), or [`global_genesis`] for entry 0.
    pub prev: String,
    /// Every node's head, sorted by node id, each node once.
    pub heads: Vec<NodeHead>,
    /// Hex Ed25519 signature over [`GlobalEntry::signed_bytes`].
    pub signature: String,
}

fn h32(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

fn put(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u64).to_be_bytes());
    b.extend_from_slice(s);
}

/// The `prev` of global entry 0 in the domain `log_id`.
pub fn global_genesis(log_id: &[u8; 16]) -> Hash {
    let mut c = digest::Context::new(&digest::SHA256);
    c.update(b"bulwark cluster audit genesis v1");
    c.update(log_id);
    let mut h = [0u8; 32];
    h.copy_from_slice(c.finish().as_ref());
    h
}

impl GlobalEntry {
    /// What the audit key signs: a domain tag, the domain's log id, `n`, the time, the previous
    /// entry's hash and every head (length-prefixed node id, size, chain). `None` when a field
    /// is malformed or the heads are not sorted by node id without duplicates.
    pub fn signed_bytes(&self, log_id: &[u8; 16]) -> Option<Vec<u8>> {
        let mut b = b"bulwark cluster audit checkpoint v1".to_vec();
        b.extend_from_slice(log_id);
        b.extend_from_slice(&self.n.to_be_bytes());
        b.extend_from_slice(&self.time_ms.to_be_bytes());
        b.extend_from_slice(&h32(&self.prev)?);
        b.extend_from_slice(&(self.heads.len() as u64).to_be_bytes());
        let mut last: Option<&str> = None;
        for hd in &self.heads {
            if last.is_some_and(|l| l >= hd.node_id.as_str()) {
                return None;
            }
            last = Some(&hd.node_id);
            put(&mut b, hd.node_id.as_bytes());
            b.extend_from_slice(&<[u8; 16]>::try_from(hex::decode(&hd.log_id).ok()?).ok()?);
            b.extend_from_slice(&hd.size.to_be_bytes());
            b.extend_from_slice(&h32(&hd.chain)?);
        }
        Some(b)
    }

    /// The hash the next entry links to: SHA-256 over a tag, the signed bytes and the
    /// signature. `None` when malformed.
    pub fn hash(&self, log_id: &[u8; 16]) -> Option<Hash> {
        let msg = self.signed_bytes(log_id)?;
        let mut c = digest::Context::new(&digest::SHA256);
        c.update(b"bulwark cluster audit entry v1");
        c.update(&msg);
        c.update(&hex::decode(&self.signature).ok()?);
        let mut h = [0u8; 32];
        h.copy_from_slice(c.finish().as_ref());
        Some(h)
    }

    /// Checks the signature with a raw Ed25519 public key.
    pub fn verify_signature(&self, log_id: &[u8; 16], public_key: &[u8]) -> bool {
        let (Some(msg), Ok(sig)) = (self.signed_bytes(log_id), hex::decode(&self.signature)) else {
            return false;
        };
        signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(&msg, &sig)
            .is_ok()
    }

    /// The heads as JSON text (how a database keeps them).
    pub fn heads_json(&self) -> String {
        serde_json::to_string(&self.heads).unwrap_or_default()
    }

    /// Heads from [`GlobalEntry::heads_json`]'s text.
    ///
    /// # Errors
    /// `Integrity` when the text does not parse.
    pub fn parse_heads(text: &str) -> Result<Vec<NodeHead>> {
        serde_json::from_str(text).map_err(|_| Error::Integrity("global audit heads do not parse"))
    }

    /// The head of `node_id`, if this entry names it.
    pub fn head(&self, node_id: &str) -> Option<&NodeHead> {
        self.heads.iter().find(|h| h.node_id == node_id)
    }
}

impl AuditSigner {
    /// Signs global entry `n` over `heads` (sorted here by node id).
    ///
    /// # Errors
    /// `ArgumentsBad` when a node id appears twice or a chain value is malformed.
    pub fn sign_global(
        &self,
        log_id: &[u8; 16],
        n: u64,
        time_ms: u64,
        prev: &Hash,
        mut heads: Vec<NodeHead>,
    ) -> Result<GlobalEntry> {
        heads.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let mut e =
            GlobalEntry { n, time_ms, prev: hex::encode(prev), heads, signature: String::new() };
        let msg = e
            .signed_bytes(log_id)
            .ok_or(Error::ArgumentsBad("global audit heads: duplicate node or bad chain"))?;
        e.signature = hex::encode(self.kp.sign(&msg).as_ref());
        debug_assert!(e.verify_signature(log_id, self.kp.public_key().as_ref()));
        Ok(e)
    }
}

/// One step of a node chain: checks that the shipped record line `line` is record `seq` and
/// that its content hashes, after `prev`, to the chain value stored with it. Returns that
/// chain value.
///
/// # Errors
/// What is wrong, as a sentence without the node's name.
pub fn step_node_chain(prev: &Hash, seq: u64, line: &str) -> std::result::Result<Hash, String> {
    let ExportLine::Record { record, chain } = super::parse_line(line)? else {
        return Err(format!("record {seq} is not a record line"));
    };
    if record.seq != seq {
        return Err(format!("record {seq} carries sequence number {}", record.seq));
    }
    let next = chain_next(prev, &record.canonical());
    if h32(&chain) != Some(next) {
        return Err(format!("record {seq} does not match its chain value (edited)"));
    }
    Ok(next)
}

impl AuditLog {
    /// The log's stored records `from..` (at most about `max`, whole stored batches), each as
    /// its export line JSON (what a cluster node ships). Reads what is on disk: records still
    /// in the durability window come in a later call.
    ///
    /// # Errors
    /// Store errors; integrity errors when a batch does not decode.
    pub fn record_lines(&self, from: u64, max: usize) -> Result<Vec<String>> {
        let c =
            Connection::open_with_flags(self.path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        c.busy_timeout(Duration::from_secs(30))?;
        let mut st = c.prepare_cached(
            "SELECT first_seq, count, records, chains FROM audit_batches
             WHERE first_seq >= coalesce((SELECT max(first_seq) FROM audit_batches
                                          WHERE first_seq <= ?1), 0)
             ORDER BY first_seq",
        )?;
        let mut rows = st.query([i(from)])?;
        let mut out = Vec::new();
        let mut next = from;
        while let Some(row) = rows.next()? {
            if out.len() >= max {
                break;
            }
            let (first, count): (i64, i64) = (row.get(0)?, row.get(1)?);
            let bad = || Error::Integrity("audit chain broken: a batch does not decode");
            let records = row.get_ref(2)?.as_blob().map_err(|_| bad())?;
            let chains = row.get_ref(3)?.as_blob().map_err(|_| bad())?;
            for_each_in_batch(u(first), count, records, chains, |record, _, chain| {
                if record.seq >= from {
                    if record.seq != next {
                        return Err(Error::Integrity("audit chain broken: records missing"));
                    }
                    next += 1;
                    out.push(super::line_json(&ExportLine::Record {
                        record,
                        chain: hex::encode(chain),
                    })?);
                }
                Ok(())
            })?;
        }
        Ok(out)
    }
}

/// One line of a cluster export (JSON lines): the header, every global entry in order, then
/// each node's section: a `node` line followed by that node's record lines
/// ([`ExportLine::Record`], exactly as shipped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClusterLine {
    /// First line.
    Cluster {
        /// Format version (1).
        version: u32,
        /// Hex id of the domain (the store id every node's log is bound to).
        log_id: String,
        /// The node sections that follow, in order.
        nodes: Vec<String>,
    },
    /// A global entry.
    Global(GlobalEntry),
    /// Start of a node's records.
    Node {
        /// The node's id.
        node_id: String,
    },
}

/// Serializes a cluster export line (no newline).
///
/// # Errors
/// Never in practice.
pub fn cluster_line_json(l: &ClusterLine) -> Result<String> {
    serde_json::to_string(l).map_err(|_| Error::Internal("audit json"))
}

/// Whether an export's first line is a cluster export header.
pub fn is_cluster_export(first_line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(first_line)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(|t| t == "cluster"))
        .unwrap_or(false)
}

/// One node as [`ClusterVerifier`] saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSummary {
    /// Records read and checked.
    pub records: u64,
    /// Records covered by the last global entry that names the node.
    pub covered: u64,
}

/// What [`ClusterVerifier`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterReport {
    /// Global entries that verified.
    pub global_entries: u64,
    /// Every node seen (in a head or a section).
    pub nodes: BTreeMap<String, NodeSummary>,
    /// Every problem found, one sentence each (empty: the export verifies).
    pub problems: Vec<String>,
}

impl ClusterReport {
    /// True when nothing was wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Section {
    node: String,
    expected: u64,
    chain: Hash,
    failed: bool,
}

/// Offline verifier of a cluster export: every node chain from its genesis, every global
/// entry's signature and link, every head of every global entry against the node chains, and
/// coverage (nothing missing, nothing uncovered). Needs only the export and the audit public
/// key; memory grows with the number of global entries times nodes, not with records.
pub struct ClusterVerifier<'k> {
    public_key: &'k [u8],
    log_id: Option<[u8; 16]>,
    line_no: u64,
    next_n: u64,
    prev: Hash,
    global_failed: bool,
    /// (node, size) → (chain, first entry naming it).
    expect: HashMap<(String, u64), (Hash, u64)>,
    /// node → (largest size, entry, node log id).
    last_head: BTreeMap<String, (u64, u64, [u8; 16])>,
    listed: Vec<String>,
    sections: BTreeSet<String>,
    section: Option<Section>,
    rep: ClusterReport,
    fatal: bool,
}

impl std::fmt::Debug for ClusterVerifier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterVerifier").field("report", &self.rep).finish_non_exhaustive()
    }
}

impl<'k> ClusterVerifier<'k> {
    /// A verifier for exports signed by `public_key` (raw Ed25519).
    pub fn new(public_key: &'k [u8]) -> Self {
        Self {
            public_key,
            log_id: None,
            line_no: 0,
            next_n: 0,
            prev: [0; 32],
            global_failed: false,
            expect: HashMap::new(),
            last_head: BTreeMap::new(),
            listed: Vec::new(),
            sections: BTreeSet::new(),
            section: None,
            rep: ClusterReport::default(),
            fatal: false,
        }
    }

    fn problem(&mut self, p: String) {
        self.rep.problems.push(p);
    }

    /// Feeds the next line (blank lines are skipped).
    pub fn push_line(&mut self, line: &str) {
        self.line_no += 1;
        if self.fatal || line.trim().is_empty() {
            return;
        }
        let Some(log_id) = self.log_id else {
            match serde_json::from_str::<ClusterLine>(line) {
                Ok(ClusterLine::Cluster { version: 1, log_id, nodes }) => {
                    match hex::decode(&log_id).ok().and_then(|v| <[u8; 16]>::try_from(v).ok()) {
                        Some(id) => {
                            self.log_id = Some(id);
                            self.prev = global_genesis(&id);
                            self.listed = nodes;
                        }
                        None => self.fatal_problem("line 1: malformed cluster header".into()),
                    }
                }
                _ => self.fatal_problem("line 1: not a cluster export header".into()),
            }
            return;
        };
        let is_record = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .is_some_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("record"));
        if is_record {
            self.record(line);
            return;
        }
        match serde_json::from_str::<ClusterLine>(line) {
            Ok(ClusterLine::Global(e)) => self.global(&log_id, &e),
            Ok(ClusterLine::Node { node_id }) => {
                self.end_section();
                if !self.sections.insert(node_id.clone()) {
                    self.problem(format!(
                        "node {node_id}: a second section for the same node (two histories: a \
                         fork)"
                    ));
                }
                let node_log = self.last_head.get(&node_id).map_or(log_id, |(_, _, id)| *id);
                self.section = Some(Section {
                    chain: genesis(&node_log),
                    node: node_id,
                    expected: 0,
                    failed: false,
                });
            }
            Ok(ClusterLine::Cluster { .. }) => {
                let n = self.line_no;
                self.problem(format!("line {n}: a second cluster header"));
            }
            Err(e) => {
                let n = self.line_no;
                self.problem(format!("line {n}: malformed line ({e})"));
            }
        }
    }

    fn fatal_problem(&mut self, p: String) {
        self.problem(p);
        self.fatal = true;
    }

    fn global(&mut self, log_id: &[u8; 16], e: &GlobalEntry) {
        if self.section.is_some() {
            let n = self.line_no;
            self.problem(format!("line {n}: global checkpoint {} after the node sections", e.n));
        }
        if self.global_failed {
            return;
        }
        let fail = |s: &mut Self, p: String| {
            s.problem(p);
            s.global_failed = true;
        };
        if e.n != self.next_n {
            let p = if e.n > self.next_n {
                if e.n == self.next_n + 1 {
                    format!(
                        "global checkpoint {} is missing (gap in the global chain)",
                        self.next_n
                    )
                } else {
                    format!(
                        "global checkpoints {}..{} are missing (gap in the global chain)",
                        self.next_n,
                        e.n - 1
                    )
                }
            } else {
                format!("global checkpoint {} appears again or out of order", e.n)
            };
            return fail(self, p);
        }
        if !e.verify_signature(log_id, self.public_key) {
            return fail(self, format!("global checkpoint {}: signature does not verify", e.n));
        }
        if h32(&e.prev) != Some(self.prev) {
            return fail(
                self,
                format!(
                    "global checkpoint {} does not link to the one before it (prev hash differs)",
                    e.n
                ),
            );
        }
        for (node, (size, at, id)) in &self.last_head {
            match e.head(node) {
                None => {
                    let p = format!(
                        "global checkpoint {}: node {node} (in checkpoint {at}) is missing",
                        e.n
                    );
                    return fail(self, p);
                }
                Some(h) if h.log_id != hex::encode(id) => {
                    let p = format!(
                        "global checkpoint {}: node {node} names another log than checkpoint {at} \
                         (a fork)",
                        e.n
                    );
                    return fail(self, p);
                }
                Some(h) if h.size < *size => {
                    let p = format!(
                        "global checkpoint {}: node {node}'s head went back from {size} to {} \
                         records",
                        e.n, h.size
                    );
                    return fail(self, p);
                }
                Some(_) => {}
            }
        }
        for hd in &e.heads {
            let id = hex::decode(&hd.log_id).ok().and_then(|v| <[u8; 16]>::try_from(v).ok());
            let (Some(chain), Some(id)) = (h32(&hd.chain), id) else {
                return fail(self, format!("global checkpoint {}: malformed head", e.n));
            };
            match self.expect.get(&(hd.node_id.clone(), hd.size)) {
                Some((c, at)) if *c != chain => {
                    let p = format!(
                        "node {}: global checkpoints {at} and {} sign different heads at {} \
                         records (a fork)",
                        hd.node_id, e.n, hd.size
                    );
                    return fail(self, p);
                }
                Some(_) => {}
                None => {
                    self.expect.insert((hd.node_id.clone(), hd.size), (chain, e.n));
                }
            }
            self.last_head.insert(hd.node_id.clone(), (hd.size, e.n, id));
            self.rep.nodes.entry(hd.node_id.clone()).or_default().covered = hd.size;
        }
        self.prev = e.hash(log_id).unwrap_or_default();
        self.next_n += 1;
        self.rep.global_entries += 1;
    }

    fn record(&mut self, line: &str) {
        let line_no = self.line_no;
        let Some(mut s) = self.section.take() else {
            self.problem(format!("line {line_no}: a record outside any node section"));
            return;
        };
        if !s.failed {
            let seq = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
            match seq {
                Some(q) if q < s.expected => {
                    self.problem(format!(
                        "node {}: a second record {q} (two records for one sequence number: a \
                         fork)",
                        s.node
                    ));
                    s.failed = true;
                }
                Some(q) if q > s.expected => {
                    let missing = if q == s.expected + 1 {
                        format!("record {} is missing", s.expected)
                    } else {
                        format!("records {}..{} are missing", s.expected, q - 1)
                    };
                    self.problem(format!("node {}: {missing} (gap)", s.node));
                    s.failed = true;
                }
                _ => match step_node_chain(&s.chain, s.expected, line) {
                    Ok(c) => {
                        s.chain = c;
                        s.expected += 1;
                        if let Some((want, n)) = self.expect.get(&(s.node.clone(), s.expected)) {
                            if *want != c {
                                self.problem(format!(
                                    "node {}: records 0..{} differ from those signed in global \
                                     checkpoint {n} (edited or forked history)",
                                    s.node, s.expected
                                ));
                                s.failed = true;
                            }
                        }
                    }
                    Err(e) => {
                        self.problem(format!("node {}: line {line_no}: {e}", s.node));
                        s.failed = true;
                    }
                },
            }
        }
        self.section = Some(s);
    }

    fn end_section(&mut self) {
        let Some(s) = self.section.take() else { return };
        self.rep.nodes.entry(s.node.clone()).or_default().records = s.expected;
        if s.failed {
            return;
        }
        match self.last_head.get(&s.node) {
            Some((size, n, _)) if s.expected < *size => self.problem(format!(
                "node {}: truncated: global checkpoint {n} covers {size} records, the export \
                 holds {}",
                s.node, s.expected
            )),
            Some((size, _, _)) if s.expected > *size => self.problem(format!(
                "node {}: records {size}..{} are not covered by a signed global checkpoint",
                s.node, s.expected
            )),
            None if s.expected > 0 => self.problem(format!(
                "node {}: records 0..{} are not covered by a signed global checkpoint",
                s.node, s.expected
            )),
            _ => {}
        }
    }

    /// The report.
    pub fn finish(mut self) -> ClusterReport {
        if self.fatal {
            return self.rep;
        }
        if self.log_id.is_none() {
            self.problem("empty export: no cluster header".into());
            return self.rep;
        }
        self.end_section();
        for (node, (size, n, _)) in &self.last_head.clone() {
            if !self.sections.contains(node) && *size > 0 {
                self.problem(format!(
                    "node {node}: missing from the export (global checkpoint {n} covers {size} \
                     records)"
                ));
            }
        }
        for node in &self.listed.clone() {
            if !self.sections.contains(node) {
                self.problem(format!("node {node}: listed in the header but has no section"));
            }
        }
        if self.rep.global_entries == 0 && !self.global_failed {
            self.problem("no global checkpoint: nothing in the export is signed".into());
        }
        self.rep
    }
}

/// Verifies a whole cluster export's lines.
pub fn verify_cluster_export<S: AsRef<str>>(lines: &[S], public_key: &[u8]) -> ClusterReport {
    let mut v = ClusterVerifier::new(public_key);
    for l in lines {
        v.push_line(l.as_ref());
    }
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, AuditRecord};

    const ID: [u8; 16] = [7; 16];

    fn node_lines(tag: &str, n: u64) -> Vec<String> {
        let mut chain = genesis(&ID);
        (0..n)
            .map(|seq| {
                let ev =
                    AuditEvent { op: "sign", detail: format!("{tag}{seq}"), ..Default::default() };
                let record = AuditRecord::from_event(seq, 1000 + seq, &ev);
                chain = chain_next(&chain, &record.canonical());
                super::super::line_json(&ExportLine::Record { record, chain: hex::encode(chain) })
                    .unwrap()
            })
            .collect()
    }

    fn head_of(lines: &[String], node: &str, size: u64) -> NodeHead {
        let mut c = genesis(&ID);
        for (s, l) in lines.iter().take(usize::try_from(size).unwrap()).enumerate() {
            c = step_node_chain(&c, s as u64, l).unwrap();
        }
        NodeHead { node_id: node.into(), log_id: hex::encode(ID), size, chain: hex::encode(c) }
    }

    /// Two nodes, three global entries; returns (export lines, public key).
    fn export() -> (Vec<String>, Vec<u8>) {
        let (signer, _) = AuditSigner::generate().unwrap();
        let a = node_lines("a", 5);
        let b = node_lines("b", 3);
        let mut prev = global_genesis(&ID);
        let mut out = vec![cluster_line_json(&ClusterLine::Cluster {
            version: 1,
            log_id: hex::encode(ID),
            nodes: vec!["a".into(), "b".into()],
        })
        .unwrap()];
        for (n, (sa, sb)) in [(2, 0), (4, 3), (5, 3)].into_iter().enumerate() {
            let heads = vec![head_of(&b, "b", sb), head_of(&a, "a", sa)];
            let e = signer.sign_global(&ID, n as u64, 5, &prev, heads).unwrap();
            prev = e.hash(&ID).unwrap();
            out.push(cluster_line_json(&ClusterLine::Global(e)).unwrap());
        }
        out.push(cluster_line_json(&ClusterLine::Node { node_id: "a".into() }).unwrap());
        out.extend(a);
        out.push(cluster_line_json(&ClusterLine::Node { node_id: "b".into() }).unwrap());
        out.extend(b);
        (out, signer.public_key())
    }

    fn problems(lines: &[String], pk: &[u8]) -> String {
        verify_cluster_export(lines, pk).problems.join("\n")
    }

    #[test]
    fn a_whole_export_verifies() {
        let (lines, pk) = export();
        let r = verify_cluster_export(&lines, &pk);
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.global_entries, 3);
        assert_eq!(r.nodes["a"], NodeSummary { records: 5, covered: 5 });
        assert_eq!(r.nodes["b"], NodeSummary { records: 3, covered: 3 });
        assert!(!problems(&lines, &[0; 32]).is_empty());
    }

    #[test]
    fn tampering_is_named() {
        let (lines, pk) = export();
        // Lines: 0 header, 1..=3 globals, 4 node a, 5..=9 a's records, 10 node b, 11..=13.
        let mut edited = lines.clone();
        edited[6] = edited[6].replace("\"a1\"", "\"a9\"");
        assert!(problems(&edited, &pk)
            .contains("node a: line 7: record 1 does not match its chain value"));

        let mut deleted = lines.clone();
        deleted.remove(7);
        assert!(problems(&deleted, &pk).contains("node a: record 2 is missing (gap)"));

        // A record inserted at an existing sequence number (another history).
        let mut forked = lines.clone();
        let other = node_lines("x", 5);
        forked.insert(8, other[2].clone());
        assert!(
            problems(&forked, &pk).contains("node a: a second record 2"),
            "{}",
            problems(&forked, &pk)
        );

        // A consistent but different history: chain values recomputed by the forger.
        let mut rewritten = lines.clone();
        let other = node_lines("x", 5);
        rewritten.splice(5..10, other);
        assert!(problems(&rewritten, &pk)
            .contains("node a: records 0..2 differ from those signed in global checkpoint 0"));

        let mut dropped = lines.clone();
        dropped.remove(2);
        assert!(problems(&dropped, &pk).contains("global checkpoint 1 is missing (gap"));

        let mut last_dropped = lines.clone();
        last_dropped.remove(3);
        assert!(problems(&last_dropped, &pk)
            .contains("node a: records 4..5 are not covered by a signed global checkpoint"));

        let mut truncated = lines.clone();
        truncated.truncate(13);
        assert!(problems(&truncated, &pk).contains(
            "node b: truncated: global checkpoint 2 covers 3 records, the export holds 2"
        ));

        let mut resigned = lines.clone();
        resigned[2] = resigned[2].replace("\"size\":4", "\"size\":3");
        assert!(problems(&resigned, &pk).contains("global checkpoint 1: signature does not verify"));

        let mut no_node = lines.clone();
        no_node.truncate(10);
        let p = problems(&no_node, &pk);
        assert!(p.contains("node b: missing from the export (global checkpoint 2 covers 3"), "{p}");
    }
}
