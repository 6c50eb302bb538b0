//! Switches the switch gate (`window::gate`) holds back: for each mount offered a generation it
//! may not switch to yet, the prefetch of that generation sent to the mount in the background
//! (once per offered generation, a thread each, so the agent's loop never blocks on it) and
//! what was last reported, so that a waiting mount says why once per change (`waiting` with
//! `prefetching`, `window` or `deferred` and until when, `prefetched` with the bytes) and the
//! loop wakes when the gate may open.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;

use api::control::{Prefetched, Request};
use api::fleet::{DesiredMount, EventKind};

use super::window::{self, Deferral, Gate};

/// A failed prefetch is sent again after this many seconds (while the switch still waits).
pub const PREFETCH_AGAIN: i64 = 60;

/// The held switches of every mount.
pub struct Holds {
    by_path: BTreeMap<String, Hold>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
}

/// One mount's held switch.
#[derive(Debug)]
struct Hold {
    generation: String,
    /// When the generation was first offered (the deferral deadline counts from it).
    offered: i64,
    prefetch: Prefetch,
    /// The `why` and `until` last reported.
    reported: Option<(String, i64)>,
    /// When to ask the gate again.
    until: i64,
    /// Asked this turn.
    seen: bool,
}

impl Hold {
    /// A switch to `generation` first offered at `offered`: its prefetch is due at once.
    fn new(generation: &str, offered: i64) -> Hold {
        Hold {
            generation: generation.to_string(),
            offered,
            prefetch: Prefetch::SendAt(offered),
            reported: None,
            until: offered,
            seen: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefetch {
    /// To be sent at this time (at once when offered; later again after a failure).
    SendAt(i64),
    Running,
    Done,
}

/// A prefetch that ended.
struct Done {
    path: String,
    generation: String,
    /// Bytes fetched, or why it failed.
    result: Result<u64, String>,
}

impl Default for Holds {
    fn default() -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        Holds { by_path: BTreeMap::new(), done_tx, done_rx }
    }
}

impl Holds {
    /// Whether the mount `mount` (mounted at `local`) may switch to `generation` at `now`.
    /// If not, its prefetch is started (unless it ran already) and what changed in why it
    /// waits is added to `events`.
    pub fn consider(
        &mut self,
        now: i64,
        mount: &DesiredMount,
        generation: &str,
        local: &Path,
        deferral: Option<Deferral>,
        events: &mut Vec<EventKind>,
    ) -> bool {
        let path = mount.mount.path.as_str();
        if self.by_path.get(path).is_some_and(|h| h.generation != generation) {
            self.by_path.remove(path);
        }
        let hold = self.by_path.entry(path.to_string()).or_insert_with(|| {
            if let Some(Err(e)) = mount.window.as_ref().map(window::Schedule::parse) {
                tracing::warn!(path, error = %e, "the group's maintenance window cannot be used: it does not hold switches back");
            }
            Hold::new(generation, now)
        });
        hold.seen = true;
        let (why, until) = match window::gate(now, mount.window.as_ref(), mount.ignore_windows, deferral, hold.offered) {
            Gate::Now => {
                self.by_path.remove(path);
                return true;
            }
            Gate::Wait { why, until } => (why, until),
        };
        if matches!(hold.prefetch, Prefetch::SendAt(at) if at <= now) {
            hold.prefetch = Prefetch::Running;
            spawn_prefetch(local, path, generation, self.done_tx.clone());
        }
        hold.until = until;
        let why = match hold.prefetch {
            Prefetch::Running => "prefetching",
            Prefetch::Done | Prefetch::SendAt(_) => why.as_str(),
        };
        if hold.reported.as_ref() != Some(&(why.to_string(), until)) {
            hold.reported = Some((why.to_string(), until));
            events.push(EventKind::Waiting {
                path: path.to_string(),
                generation: generation.to_string(),
                why: why.to_string(),
                until: Some(until),
            });
        }
        false
    }

    /// Restores what a restart forgot: `generation` was first offered to the mount at `path`
    /// at `offered` (the agent keeps it in its memos), so a deferral's deadline still counts
    /// from then. Nothing changes if the mount's held switch is known already.
    pub fn restore(&mut self, path: &str, generation: &str, offered: i64) {
        self.by_path.entry(path.to_string()).or_insert_with(|| Hold::new(generation, offered));
    }

    /// The generation held back from the mount at `path` and when it was first offered.
    pub fn offered(&self, path: &str) -> Option<(String, i64)> {
        self.by_path.get(path).map(|h| (h.generation.clone(), h.offered))
    }

    /// Takes in the prefetches that ended: a `prefetched` event for each that succeeded; the
    /// next `consider` reports why the mount still waits.
    pub fn finished(&mut self, now: i64, events: &mut Vec<EventKind>) {
        while let Ok(done) = self.done_rx.try_recv() {
            let hold = self.by_path.get_mut(&done.path).filter(|h| h.generation == done.generation);
            match done.result {
                Ok(bytes) => {
                    events.push(EventKind::Prefetched { path: done.path.clone(), generation: done.generation.clone(), bytes });
                    if let Some(h) = hold {
                        h.prefetch = Prefetch::Done;
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        path = done.path,
                        generation = done.generation,
                        error,
                        "prefetch before the switch failed; tried again later"
                    );
                    if let Some(h) = hold {
                        h.prefetch = Prefetch::SendAt(now + PREFETCH_AGAIN);
                    }
                }
            }
        }
    }

    /// Forgets the holds not asked about since the last call (the mount switched, was offered
    /// something else, or went away).
    pub fn end_turn(&mut self) {
        self.by_path.retain(|_, h| std::mem::replace(&mut h.seen, false));
    }

    /// When the gate should be asked again: the earliest `until` of a held switch.
    pub fn wake(&self) -> Option<i64> {
        self.by_path.values().map(|h| h.until).min()
    }

    /// Whether a prefetch is still running (tests).
    pub fn prefetching(&self, path: &str) -> bool {
        self.by_path.get(path).is_some_and(|h| h.prefetch == Prefetch::Running)
    }
}

/// Asks the mount at `local` to prefetch `generation`, in a thread; the outcome goes to `done`.
fn spawn_prefetch(local: &Path, path: &str, generation: &str, done: mpsc::Sender<Done>) {
    let (local, path, generation) = (local.to_path_buf(), path.to_string(), generation.to_string());
    std::thread::spawn(move || {
        let request = Request::Prefetch { generation: generation.clone(), max_rate: None };
        let result = match crate::control::request::<Prefetched>(&local, &request, &mut |_| {}) {
            Ok(Ok(p)) => Ok(p.fetched.bytes_done),
            Ok(Err(failed)) => Err(failed.error),
            Err(e) => Err(e.to_string()),
        };
        let _ = done.send(Done { path, generation, result });
    });
}
