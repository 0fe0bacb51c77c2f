//! Replays Events recorded from a real cluster: the frames of a watch on `/api/v1/events`
//! (`{"type": "ADDED" | "MODIFIED" | "DELETED", "object": <core/v1 Event>}`, one per line),
//! applied in order. Each Event keeps its recorded uid, timestamps, count and message, and its
//! recorded resourceVersion as long as those grow (the store's revision jumps ahead to them, as
//! if other resources had been written in between), so a client watching the emulator sees
//! the watch the recorder saw.

use std::path::Path;

use crate::model::NewEvent;
use crate::{Emulator, EventRef};

/// Why a recorded frame could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The line is not a watch frame.
    #[error("line {line}: not a watch frame: {reason}")]
    Frame { line: usize, reason: String },
    /// The frame's type does not fit the store (MODIFIED or DELETED of an unknown Event,
    /// ADDED of one that exists).
    #[error("line {line}: {kind} of {key}: {reason}")]
    Conflict {
        line: usize,
        kind: String,
        key: String,
        reason: &'static str,
    },
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    object: &'a serde_json::value::RawValue,
}

impl Emulator {
    /// Applies one recorded watch frame (`line` numbers errors).
    pub fn replay_watch_frame(&self, frame: &str, line: usize) -> Result<EventRef, ReplayError> {
        let f: Frame = serde_json::from_str(frame).map_err(|e| ReplayError::Frame {
            line,
            reason: e.to_string(),
        })?;
        let (new, rv) = NewEvent::from_core_json(f.object.get())
            .map_err(|reason| ReplayError::Frame { line, reason })?;
        let key = new.body.key.to_string();
        let conflict = |reason| ReplayError::Conflict {
            line,
            kind: f.kind.clone(),
            key: key.clone(),
            reason,
        };
        let store = &self.shared.store;
        let obj = match f.kind.as_str() {
            "ADDED" => store
                .create_at_least(new, rv.unwrap_or(0))
                .ok_or_else(|| conflict("it exists already"))?,
            "MODIFIED" => store
                .replace_at_least(new, rv.unwrap_or(0))
                .ok_or_else(|| conflict("it does not exist"))?,
            "DELETED" => store
                .delete(&key)
                .ok_or_else(|| conflict("it does not exist"))?,
            other => {
                return Err(ReplayError::Frame {
                    line,
                    reason: format!("unknown frame type '{other}'"),
                });
            }
        };
        Ok(EventRef {
            namespace: obj.body.namespace.to_string(),
            name: obj.body.name.to_string(),
            uid: obj.body.uid.to_string(),
            resource_version: obj.rv.to_string(),
        })
    }

    /// Applies every frame of a recorded watch (JSON lines; blank lines are skipped).
    /// Returns how many frames were applied.
    pub fn replay_watch_file(&self, path: &Path) -> Result<usize, ReplayError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            self.replay_watch_frame(line, i + 1)?;
            n += 1;
        }
        Ok(n)
    }
}
