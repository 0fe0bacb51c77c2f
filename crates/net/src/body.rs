//! A streaming response body: yields chunks as they arrive (watch streams, paged lists must not
//! be buffered whole), and hands its keep-alive connection back to the pool once fully read.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::NetError;
use crate::client::Recycle;

/// The body of a response from [`crate::HttpClient::send`].
///
/// Read it with [`ResponseBody::next_chunk`] (streaming) or [`ResponseBody::read_to_end`]
/// (bounded). Dropping it before the end closes the connection; reading it to the end returns
/// the connection to the pool for reuse.
pub struct ResponseBody {
    inner: Option<Incoming>,
    url: Arc<str>,
    recycle: Option<Recycle>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("url", &self.url)
            .field("finished", &self.inner.is_none())
            .finish()
    }
}

impl ResponseBody {
    pub(crate) fn new(inner: Incoming, url: Arc<str>, recycle: Option<Recycle>) -> Self {
        let mut body = ResponseBody {
            inner: Some(inner),
            url,
            recycle,
        };
        if body.inner.as_ref().is_some_and(|b| b.is_end_stream()) {
            body.finish();
        }
        body
    }

    /// The URL this body comes from (scheme, authority and path), for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Polls for the next non-empty data chunk; `None` at the end of the body. Trailers are
    /// skipped. After an error the body is finished.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, NetError>>> {
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(source))) => {
                    // A broken body leaves the connection in an unknown state: never reuse it.
                    self.inner = None;
                    self.recycle = None;
                    return Poll::Ready(Some(Err(NetError::Body {
                        url: self.url.to_string(),
                        source,
                    })));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
        }
    }

    /// The next data chunk as it arrives from the network; `None` at the end of the body.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, NetError>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Reads the whole body, failing with [`NetError::BodyTooLarge`] beyond `limit` bytes.
    pub async fn read_to_end(mut self, limit: usize) -> Result<Bytes, NetError> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.next_chunk().await {
            let chunk = chunk?;
            if buf.len() + chunk.len() > limit {
                return Err(NetError::BodyTooLarge {
                    url: self.url.to_string(),
                    limit,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads at most `limit` bytes and drops the rest (for error bodies: enough to show).
    pub async fn read_prefix(mut self, limit: usize) -> Result<Bytes, NetError> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.next_chunk().await {
            let chunk = chunk?;
            let room = limit.saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if buf.len() >= limit {
                break;
            }
        }
        Ok(buf.freeze())
    }

    fn finish(&mut self) {
        self.inner = None;
        if let Some(recycle) = self.recycle.take() {
            recycle.give_back();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = NetError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, NetError>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}
