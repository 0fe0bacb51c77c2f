//! Response bodies: small ones with `Content-Length`, larger ones chunked (Go's net/http
//! switches at its 2048-byte buffer), big lists rendered lazily in ~64 KiB chunks, and watch
//! streams fed by a bounded channel (one HTTP chunk per frame).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::model::EventObj;
use crate::render::{self, LIST_TAIL, View};

/// Bodies up to this size get `Content-Length`; larger ones are chunked, like Go's server.
pub(crate) const GO_BUFFER: usize = 2048;

/// Items rendered per list chunk before yielding.
const LIST_CHUNK_BYTES: usize = 64 * 1024;

/// The lazily rendered part of a LIST answer.
pub(crate) struct ListStream {
    pub head: Option<Vec<u8>>,
    pub items: Vec<Arc<EventObj>>,
    pub next: usize,
    pub view: View,
    pub done: bool,
}

impl ListStream {
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut buf = self.head.take().unwrap_or_default();
        buf.reserve(LIST_CHUNK_BYTES + 2048);
        while self.next < self.items.len() && buf.len() < LIST_CHUNK_BYTES {
            if self.next > 0 {
                buf.push(b',');
            }
            render::write_event(&mut buf, &self.items[self.next], self.view, false);
            self.next += 1;
        }
        if self.next >= self.items.len() {
            buf.extend_from_slice(LIST_TAIL);
            self.done = true;
        }
        Some(Bytes::from(buf))
    }
}

/// How long an aborting watch waits so hyper can flush what was already written.
const ABORT_FLUSH_GRACE: Duration = Duration::from_millis(20);

/// The receiving end of a watch stream.
pub(crate) struct WatchStream {
    pub rx: mpsc::Receiver<Bytes>,
    /// Set by the producer before it hangs up to make the end abrupt (no terminating chunk).
    pub aborted: Arc<AtomicBool>,
    pub done: bool,
    /// Running while an abort waits for the written frames to be flushed: hyper drops its
    /// write buffer when a body fails, so the failure is reported only after a pause.
    pub abort_grace: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Every body this server sends.
pub(crate) enum ApiBody {
    /// Sent with `Content-Length`.
    Sized(Option<Bytes>),
    /// Sent chunked (unknown length), in one chunk.
    Chunked(Option<Bytes>),
    List(Box<ListStream>),
    Watch(WatchStream),
}

impl ApiBody {
    /// Picks `Content-Length` or chunked by size, as Go's server does.
    pub fn from_vec(v: Vec<u8>) -> ApiBody {
        if v.len() <= GO_BUFFER {
            ApiBody::Sized(Some(Bytes::from(v)))
        } else {
            ApiBody::Chunked(Some(Bytes::from(v)))
        }
    }
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ApiBody::Sized(b) | ApiBody::Chunked(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ApiBody::List(l) => Poll::Ready(l.next_chunk().map(|b| Ok(Frame::data(b)))),
            ApiBody::Watch(w) => {
                if let Some(grace) = w.abort_grace.as_mut() {
                    if grace.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    w.abort_grace = None;
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "watch stream cut",
                    ))));
                }
                if w.done {
                    return Poll::Ready(None);
                }
                match w.rx.poll_recv(cx) {
                    Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
                    Poll::Ready(None) => {
                        w.done = true;
                        if w.aborted.load(Ordering::Acquire) {
                            let mut grace = Box::pin(tokio::time::sleep(ABORT_FLUSH_GRACE));
                            // Registers the waker; the sleep has only just started.
                            let _ = grace.as_mut().poll(cx);
                            w.abort_grace = Some(grace);
                            Poll::Pending
                        } else {
                            Poll::Ready(None)
                        }
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ApiBody::Sized(b) => b.is_none(),
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ApiBody::Sized(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ApiBody::Sized(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
