//! Reading the log back: decoding the stored batches, and the streaming export
//! ([`ExportIter`]): a header, then every record from `since` with each signed checkpoint right
//! after the record that completes it, read from one snapshot in bounded chunks so that an
//! export of any size needs constant memory.
//!
//! Nothing here writes to the log.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use super::merkle::{self, Frontier};
use super::{genesis, AuditRecord, Checkpoint, ExportLine, Hash};
use crate::error::{Error, Result};

pub(super) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn hash_of(v: &[u8]) -> Result<Hash> {
    v.try_into().map_err(|_| Error::Integrity("audit log: malformed hash"))
}

fn bad() -> Error {
    Error::Integrity("audit chain broken: a batch does not decode")
}

/// Calls `f(record, canonical encoding, stored chain value)` for every record of one stored
/// batch, checking that the batch is well formed and numbered from `first`.
pub(super) fn for_each_in_batch(
    first: u64,
    count: i64,
    records: &[u8],
    chains: &[u8],
    mut f: impl FnMut(AuditRecord, &[u8], Hash) -> Result<()>,
) -> Result<()> {
    let count = usize::try_from(count).map_err(|_| bad())?;
    if chains.len() != count * 32 {
        return Err(bad());
    }
    let mut rest = records;
    for n in 0..count {
        let (len, t) = rest.split_at_checked(4).ok_or_else(bad)?;
        let len = u32::from_be_bytes(len.try_into().map_err(|_| bad())?) as usize;
        let (canonical, t) = t.split_at_checked(len).ok_or_else(bad)?;
        rest = t;
        let rec = AuditRecord::from_canonical(canonical).ok_or_else(bad)?;
        if rec.seq != first + n as u64 {
            return Err(bad());
        }
        f(rec, canonical, hash_of(&chains[n * 32..n * 32 + 32])?)?;
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(())
}

/// Calls `f(record, canonical, stored chain value)` for every record with `seq >= since`, in
/// order (row by row: constant memory).
pub(super) fn scan(
    c: &Connection,
    since: u64,
    mut f: impl FnMut(AuditRecord, &[u8], Hash) -> Result<()>,
) -> Result<()> {
    let mut st = c.prepare_cached(
        "SELECT first_seq, count, records, chains FROM audit_batches
         WHERE first_seq >= coalesce((SELECT max(first_seq) FROM audit_batches
                                      WHERE first_seq <= ?1), 0)
         ORDER BY first_seq",
    )?;
    let mut rows = st.query([i(since)])?;
    while let Some(row) = rows.next()? {
        let (first, count): (i64, i64) = (row.get(0)?, row.get(1)?);
        let records = row.get_ref(2)?.as_blob().map_err(|_| bad())?;
        let chains = row.get_ref(3)?.as_blob().map_err(|_| bad())?;
        for_each_in_batch(u(first), count, records, chains, |r, canonical, chain| {
            if r.seq >= since {
                f(r, canonical, chain)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The number of records stored (from the last batch row).
pub(super) fn stored_size(c: &Connection) -> Result<u64> {
    let last: Option<(i64, i64)> = c
        .prepare_cached(
            "SELECT first_seq, count FROM audit_batches ORDER BY first_seq DESC LIMIT 1",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(last.map_or(0, |(f, n)| u(f) + u(n)))
}

const RECORD_CHUNK: i64 = 64;
const CHECKPOINT_CHUNK: i64 = 256;

/// A streaming export of one log: yields [`ExportLine`]s (header first) read from one
/// snapshot, a few batches at a time. Owns its own read connection, so it may outlive the
/// borrow of the log and move to another thread (a daemon streaming an RPC response).
pub struct ExportIter {
    conn: Connection,
    log_id: [u8; 16],
    since: u64,
    /// Records in the snapshot.
    end: u64,
    /// First sequence number of the next batch to read (`None` before the header).
    next_first: Option<u64>,
    buf: VecDeque<ExportLine>,
    cps: VecDeque<Checkpoint>,
    cp_cursor: i64,
    cps_done: bool,
    done: bool,
}

impl std::fmt::Debug for ExportIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportIter")
            .field("since", &self.since)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl ExportIter {
    /// Opens a read snapshot of the log file `path` and checks `since` against it.
    pub(super) fn open(path: &Path, log_id: [u8; 16], since: u64) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute_batch("BEGIN")?; // one read snapshot for the whole export
        let end = stored_size(&conn)?;
        if since > end {
            return Err(Error::ArgumentsBad("--since is past the end of the log"));
        }
        Ok(Self {
            conn,
            log_id,
            since,
            end,
            next_first: None,
            buf: VecDeque::new(),
            cps: VecDeque::new(),
            cp_cursor: 0,
            cps_done: false,
            done: false,
        })
    }

    /// Number of records this export holds.
    pub fn records(&self) -> u64 {
        self.end - self.since
    }

    fn header(&mut self) -> Result<ExportLine> {
        let (prev_chain, frontier) = if self.since == 0 {
            (genesis(&self.log_id), Frontier::default())
        } else {
            let mut f = Frontier::default();
            let mut prev = None;
            let since = self.since;
            scan(&self.conn, 0, |r, canonical, chain| {
                if r.seq < since {
                    f.push(merkle::leaf_hash(canonical));
                    prev = Some(chain);
                }
                Ok(())
            })?;
            if f.size() != since {
                return Err(Error::Integrity("audit chain broken: records missing"));
            }
            (prev.ok_or(Error::Integrity("audit chain broken: records missing"))?, f)
        };
        let first: Option<i64> = self.conn.query_row(
            "SELECT max(first_seq) FROM audit_batches WHERE first_seq <= ?1",
            [i(self.since)],
            |r| r.get(0),
        )?;
        self.next_first = Some(first.map_or(0, u));
        Ok(ExportLine::Header {
            version: 1,
            log_id: hex::encode(self.log_id),
            since: self.since,
            prev_chain: hex::encode(prev_chain),
            frontier: frontier.nodes().iter().map(hex::encode).collect(),
        })
    }

    fn next_checkpoint_size(&mut self) -> Result<Option<u64>> {
        if self.cps.is_empty() && !self.cps_done {
            let mut st = self.conn.prepare_cached(
                "SELECT id, size, chain, root, time_ms, sig FROM checkpoints
                 WHERE size > ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = st.query_map((i(self.since), self.cp_cursor, CHECKPOINT_CHUNK), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    u(r.get(1)?),
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    u(r.get(4)?),
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })?;
            for row in rows {
                let (id, size, chain, root, time_ms, sig) = row?;
                self.cp_cursor = id;
                self.cps.push_back(Checkpoint {
                    log_id: hex::encode(self.log_id),
                    size,
                    chain: hex::encode(chain),
                    root: hex::encode(root),
                    time_ms,
                    signature: hex::encode(sig),
                });
            }
            self.cps_done = self.cps.is_empty();
        }
        Ok(self.cps.front().map(|c| c.size))
    }

    fn fill(&mut self) -> Result<()> {
        let Some(from) = self.next_first else {
            let h = self.header()?;
            self.buf.push_back(h);
            return Ok(());
        };
        let mut batch: Vec<(AuditRecord, Hash)> = Vec::new();
        let mut next = from;
        {
            let mut st = self.conn.prepare_cached(
                "SELECT first_seq, count, records, chains FROM audit_batches
                 WHERE first_seq >= ?1 ORDER BY first_seq LIMIT ?2",
            )?;
            let mut rows = st.query((i(from), RECORD_CHUNK))?;
            while let Some(row) = rows.next()? {
                let (first, count): (i64, i64) = (row.get(0)?, row.get(1)?);
                if u(first) != next {
                    return Err(Error::Integrity("audit chain broken: records missing"));
                }
                let records = row.get_ref(2)?.as_blob().map_err(|_| bad())?;
                let chains = row.get_ref(3)?.as_blob().map_err(|_| bad())?;
                let since = self.since;
                for_each_in_batch(u(first), count, records, chains, |r, _, chain| {
                    if r.seq >= since {
                        batch.push((r, chain));
                    }
                    Ok(())
                })?;
                next = u(first) + u(count);
            }
        }
        if next == from {
            self.done = true;
            if next < self.end {
                return Err(Error::Integrity("audit chain broken: records missing"));
            }
            return Ok(());
        }
        self.next_first = Some(next);
        for (record, chain) in batch {
            let seq = record.seq;
            self.buf.push_back(ExportLine::Record { record, chain: hex::encode(chain) });
            while self.next_checkpoint_size()?.is_some_and(|s| s <= seq + 1) {
                self.buf.extend(self.cps.pop_front().map(ExportLine::Checkpoint));
            }
        }
        Ok(())
    }
}

impl Iterator for ExportIter {
    type Item = Result<ExportLine>;

    fn next(&mut self) -> Option<Result<ExportLine>> {
        while self.buf.is_empty() && !self.done {
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

/// Serializes export lines to JSON strings.
///
/// # Errors
/// Never in practice (every field serializes); an internal error otherwise.
pub fn lines_json(lines: &[ExportLine]) -> Result<Vec<String>> {
    lines.iter().map(line_json).collect()
}

/// Serializes one export line to its JSON text (no newline).
///
/// # Errors
/// As [`lines_json`].
pub fn line_json(line: &ExportLine) -> Result<String> {
    serde_json::to_string(line).map_err(|_| Error::Internal("audit json"))
}
