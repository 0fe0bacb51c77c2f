//! Live updates: a page of the newest records keeps a server-sent event stream open
//! (`/timeline/live?FILTERS&after=POSITION`), and every second the stream asks the store
//! for what was stored after its position, with the page's filters (the query layer's
//! `after`), and sends the new rows as HTML, newest first, with the new position as the
//! event id, so a reconnecting browser (`Last-Event-ID`) goes on from where it was.
//!
//! Bounded: at most `ui.max_live` streams (the next gets 503), a few pages of rows per
//! second each, and a slow browser slows its own stream only (a channel of a few events). A
//! stream ends when the browser goes away or the page shuts down.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use kubetrail_query::{Store, TimelineQuery};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::pages::timeline::rows;
use crate::routes::Body;
use crate::server::stopped;

/// How often a stream looks for new records.
const INTERVAL: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// After a failed query, waits grow to this (with jitter).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Pages of new records sent in one round at most (the rest follow next round).
const PAGES_PER_ROUND: usize = 5;
/// Records per page of new records.
const PAGE: u32 = 200;
/// Events waiting for a slow browser.
const CHANNEL: usize = 4;
/// How long a browser waits before reconnecting.
const RETRY_MS: u64 = 3000;

/// The live streams.
pub(crate) struct Live {
    slots: Arc<Semaphore>,
}

impl Live {
    pub fn new(max: usize) -> Live {
        Live {
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    /// A stream of what matches `q` after `q.after`, or `None` when too many are open.
    pub fn stream(
        &self,
        store: Store,
        q: TimelineQuery,
        stop: watch::Receiver<bool>,
    ) -> Option<Body> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        tokio::spawn(produce(store, q, tx, stop));
        Some(
            EventBody {
                rx,
                _permit: permit,
            }
            .boxed(),
        )
    }
}

/// One server-sent event: every line of `data` becomes a `data:` line.
pub(crate) fn event(name: &str, id: Option<i64>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 64);
    if let Some(id) = id {
        s.push_str(&format!("id: {id}\n"));
    }
    s.push_str(&format!("event: {name}\n"));
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line.trim_end_matches('\r'));
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

async fn produce(
    store: Store,
    mut q: TimelineQuery,
    tx: mpsc::Sender<Bytes>,
    mut stop: watch::Receiver<bool>,
) {
    q.cursor = None;
    q.limit = Some(PAGE);
    if tx
        .send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
        .await
        .is_err()
    {
        return;
    }
    let mut wait = INTERVAL;
    let mut quiet = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tx.closed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        quiet += wait;
        match round(&store, &mut q, &tx).await {
            Ok(Sent::Closed) => return,
            Ok(Sent::Rows) => {
                wait = INTERVAL;
                quiet = Duration::ZERO;
            }
            Ok(Sent::Nothing) => wait = INTERVAL,
            Err(message) => {
                tracing::debug!(error = %message, "activity page: a live query failed");
                if tx.send(event("failure", None, &message)).await.is_err() {
                    return;
                }
                let next = (wait * 2).min(MAX_BACKOFF);
                wait = next + next.mul_f64(fastrand::f64() * 0.25);
            }
        }
        if quiet >= KEEPALIVE {
            quiet = Duration::ZERO;
            if tx
                .send(Bytes::from_static(b": keepalive\n\n"))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

enum Sent {
    Rows,
    Nothing,
    Closed,
}

/// Sends what was stored since the stream's position, a few pages at most.
async fn round(
    store: &Store,
    q: &mut TimelineQuery,
    tx: &mpsc::Sender<Bytes>,
) -> Result<Sent, String> {
    let mut sent = Sent::Nothing;
    for _ in 0..PAGES_PER_ROUND {
        let page = store.timeline(q).await.map_err(|e| e.to_string())?;
        // After a full page the position is its last row's; else the store's newest.
        q.after = Some(page.position);
        let n = page.entries.len();
        if n > 0 {
            // Oldest first from the store; the page shows the newest at the top.
            let newest_first: Vec<_> = page.entries.into_iter().rev().collect();
            let html = rows(&newest_first).into_string();
            if tx
                .send(event("rows", Some(page.position.0), &html))
                .await
                .is_err()
            {
                return Ok(Sent::Closed);
            }
            sent = Sent::Rows;
        }
        if n < PAGE as usize {
            break;
        }
    }
    Ok(sent)
}

/// The response body of a stream: the events the producer sends, as they come.
struct EventBody {
    rx: mpsc::Receiver<Bytes>,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_their_data_into_lines() {
        let e = event("rows", Some(42), "<tr>a</tr>\n<tr>b</tr>");
        assert_eq!(
            e,
            Bytes::from_static(b"id: 42\nevent: rows\ndata: <tr>a</tr>\ndata: <tr>b</tr>\n\n")
        );
        assert_eq!(
            event("failure", None, "x\r\ny"),
            Bytes::from_static(b"event: failure\ndata: x\ndata: y\n\n")
        );
    }
}
