//! The report queue on the endpoint's disk (`STATE/reports/`): every event gets the next
//! sequence number, is appended and synced before it counts as queued, is sent in batches and
//! is dropped only once the server's `acked` covers it. Bounded: beyond its limit the oldest
//! `cache` and `facts` events go first, then the oldest others (the server allows gaps).
//!
//! Two files: `events.jsonl`, one `api::fleet::Event` per line, appended with an fsync each,
//! and `seq`, the highest sequence number ever given, rewritten (atomically) before any
//! rewrite of the events file drops events, so numbers never go back, even after `kill -9`.
//! A torn last line (a crash in the middle of an append) is ignored when the file is read.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use api::fleet::{Event, EventKind, MAX_EVENTS};

/// Why the queue could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Reading or creating the queue's files.
    #[error("opening the report queue {}", path.display())]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Appending an event (it is not queued).
    #[error("appending to the report queue {}", path.display())]
    Append {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Rewriting the queue after an acknowledgement or a drop.
    #[error("rewriting the report queue {}", path.display())]
    Rewrite {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The endpoint's queue of events not yet acknowledged.
pub struct Queue {
    dir: PathBuf,
    events: VecDeque<Event>,
    /// The highest sequence number given so far.
    last_seq: u64,
    /// Most events kept.
    max: usize,
    /// Lines in `events.jsonl` (events dropped from memory stay there until the next rewrite).
    lines: usize,
    log: File,
}

/// The events file of a queue directory.
fn events_path(dir: &Path) -> PathBuf {
    dir.join("events.jsonl")
}

fn seq_path(dir: &Path) -> PathBuf {
    dir.join("seq")
}

/// Reads an events file: every whole line that parses, in order, stopping at the first one
/// that does not (a torn append). Whether the file needs a rewrite (it had such a line).
pub fn parse_events(bytes: &[u8]) -> (Vec<Event>, bool) {
    let mut out: Vec<Event> = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else { return (out, true) };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        match serde_json::from_slice::<Event>(line) {
            // Sequence numbers only grow; anything else is damage.
            Ok(e) if out.last().map_or(true, |l| l.seq < e.seq) => out.push(e),
            _ => return (out, true),
        }
    }
    (out, false)
}

/// Applies the bound: while more than `max` events are held, drops the oldest `cache` or
/// `facts` event, then (none left) the oldest event. How many were dropped.
pub fn bound(events: &mut VecDeque<Event>, max: usize) -> usize {
    let mut dropped = 0;
    while events.len() > max {
        let cheap = events.iter().position(|e| matches!(e.kind, EventKind::Cache { .. } | EventKind::Facts { .. }));
        events.remove(cheap.unwrap_or(0));
        dropped += 1;
    }
    dropped
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, keeping at most `max` events.
    pub fn open(dir: &Path, max: usize) -> Result<Queue, QueueError> {
        let open_err = |path: PathBuf| move |source| QueueError::Open { path, source };
        std::fs::create_dir_all(dir).map_err(open_err(dir.to_path_buf()))?;
        let path = events_path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(open_err(path)(e)),
        };
        let (events, torn) = parse_events(&bytes);
        let stored_seq = match std::fs::read_to_string(seq_path(dir)) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(open_err(seq_path(dir))(e)),
        };
        let last_seq = stored_seq.max(events.last().map_or(0, |e| e.seq));
        let log = OpenOptions::new().create(true).append(true).open(&path).map_err(open_err(path.clone()))?;
        let mut q = Queue { dir: dir.to_path_buf(), lines: events.len(), events: events.into(), last_seq, max: max.max(1), log };
        let dropped = bound(&mut q.events, q.max);
        if torn || dropped > 0 {
            if torn {
                tracing::warn!(path = %path.display(), kept = q.events.len(), "the report queue ended in a torn line (a crash while appending): ignored");
            }
            q.rewrite()?;
        }
        Ok(q)
    }

    /// Queues an event: gives it the next sequence number and appends it durably. Its number.
    pub fn push(&mut self, time: i64, kind: EventKind) -> Result<u64, QueueError> {
        let event = Event { seq: self.last_seq + 1, time, kind };
        let mut line = serde_json::to_vec(&event).expect("events serialise");
        line.push(b'\n');
        let path = events_path(&self.dir);
        let append = |log: &mut File| log.write_all(&line).and_then(|_| log.sync_data());
        if let Err(source) = append(&mut self.log) {
            // A partial line may be on disk: the next read ignores it, and a rewrite drops it.
            let _ = self.rewrite();
            return Err(QueueError::Append { path, source });
        }
        self.last_seq = event.seq;
        self.events.push_back(event);
        self.lines += 1;
        if bound(&mut self.events, self.max) > 0 && self.lines > self.max + self.max / 8 + 16 {
            self.rewrite()?;
        }
        Ok(self.last_seq)
    }

    /// The next batch to send: the oldest events, at most `MAX_EVENTS`.
    pub fn batch(&self) -> Vec<Event> {
        self.events.iter().take(MAX_EVENTS).cloned().collect()
    }

    /// Drops every event the server holds (sequence numbers up to `acked`).
    pub fn ack(&mut self, acked: u64) -> Result<(), QueueError> {
        let before = self.events.len();
        while self.events.front().is_some_and(|e| e.seq <= acked) {
            self.events.pop_front();
        }
        if self.events.len() != before {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The highest sequence number given so far.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The events waiting, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Writes `seq`, then the events held, each atomically, and reopens the log for appends.
    fn rewrite(&mut self) -> Result<(), QueueError> {
        let path = events_path(&self.dir);
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |e: cache::atomic::WriteError| QueueError::Rewrite { path, source: e.source }
        };
        cache::atomic::write(&seq_path(&self.dir), format!("{}\n", self.last_seq).as_bytes()).map_err(err(&seq_path(&self.dir)))?;
        let mut bytes = Vec::new();
        for e in &self.events {
            serde_json::to_writer(&mut bytes, e).expect("events serialise");
            bytes.push(b'\n');
        }
        cache::atomic::write(&path, &bytes).map_err(err(&path))?;
        self.log = OpenOptions::new().append(true).open(&path).map_err(|source| QueueError::Rewrite { path: path.clone(), source })?;
        self.lines = self.events.len();
        Ok(())
    }
}
