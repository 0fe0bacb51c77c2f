//! Publishing a batch to JetStream, and reading back what a stream got since a sequence.
//!
//! Each record is one message with `Nats-Msg-Id` (and `Nats-Expected-Stream`); at most
//! `window` wait for their acknowledgement at a time. The outcome says which messages the
//! stream refused, how many it already had, and the highest sequence it acknowledged.

use std::borrow::Cow;
use std::collections::HashSet;

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::NatsError;

/// One message to publish.
pub struct Outgoing<'a> {
    pub subject: String,
    pub id: Cow<'a, str>,
    pub payload: Bytes,
}

/// What became of a published batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Messages the stream refused (index in the batch, reason): published again later.
    pub failed: Vec<(usize, String)>,
    /// Messages over the server's `max_payload`, never sent.
    pub too_big: Vec<usize>,
    /// Messages the stream already had (deduplicated by `Nats-Msg-Id`).
    pub duplicates: usize,
    /// The highest stream sequence acknowledged.
    pub last_seq: u64,
}

/// A header value made safe and stable: CR and LF become spaces, surrounding spaces go
/// (what the stream hands back when the id is read again), and an empty value is `_`.
pub fn header_value(v: &str) -> Cow<'_, str> {
    let v = if v.contains(['\r', '\n']) || v.trim() != v {
        Cow::Owned(v.replace(['\r', '\n'], " ").trim().to_string())
    } else {
        Cow::Borrowed(v)
    };
    if v.is_empty() { Cow::Borrowed("_") } else { v }
}

/// Why one acknowledgement did not come: the connection's fault (the whole batch is in
/// doubt) or the stream's answer about this message.
enum AckFailure {
    Connection(NatsError),
    Refused(String),
}

fn ack_failure(e: &jetstream::context::PublishError) -> AckFailure {
    match e.kind() {
        PublishErrorKind::TimedOut => AckFailure::Connection(NatsError::Timeout {
            what: "waiting for a JetStream acknowledgement",
        }),
        PublishErrorKind::BrokenPipe => AckFailure::Connection(NatsError::ConnectionLost),
        PublishErrorKind::StreamNotFound => {
            AckFailure::Refused("no JetStream stream takes this subject (no responders)".into())
        }
        _ => AckFailure::Refused(format!("JetStream refused the message: {e}")),
    }
}

/// Counts one acknowledgement into the outcome; an error means the connection failed.
fn settle(
    outcome: &mut BatchOutcome,
    (i, r): (
        usize,
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ),
) -> Result<(), NatsError> {
    match r {
        Ok(ack) => {
            outcome.last_seq = outcome.last_seq.max(ack.sequence);
            outcome.duplicates += usize::from(ack.duplicate);
            Ok(())
        }
        Err(e) => match ack_failure(&e) {
            AckFailure::Connection(e) => Err(e),
            AckFailure::Refused(reason) => {
                outcome.failed.push((i, reason));
                Ok(())
            }
        },
    }
}

/// Publishes `msgs` with at most `window` acknowledgements outstanding, and waits for all of
/// them. An error means the connection failed: which messages were stored is unknown.
pub async fn publish_batch(
    js: &jetstream::Context,
    msgs: &[Outgoing<'_>],
    stream: Option<&str>,
    window: usize,
) -> Result<BatchOutcome, NatsError> {
    let mut outcome = BatchOutcome::default();
    let mut acks = FuturesUnordered::new();
    for (i, m) in msgs.iter().enumerate() {
        while acks.len() >= window.max(1) {
            if let Some(done) = acks.next().await {
                settle(&mut outcome, done)?;
            }
        }
        let mut publish = PublishMessage::build()
            .payload(m.payload.clone())
            .message_id(m.id.as_ref());
        if let Some(s) = stream {
            publish = publish.expected_stream(s);
        }
        match js.send_publish(m.subject.clone(), publish).await {
            Ok(ack) => acks.push(async move { (i, ack.await) }),
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => outcome.too_big.push(i),
            Err(e) => match ack_failure(&e) {
                AckFailure::Connection(e) => return Err(e),
                AckFailure::Refused(reason) => return Err(NatsError::Publish(reason)),
            },
        }
    }
    while let Some(done) = acks.next().await {
        settle(&mut outcome, done)?;
    }
    Ok(outcome)
}

/// How many reads of stored messages are in flight at once.
const READ_AHEAD: usize = 64;

/// The `Nats-Msg-Id`s of the stream's messages after sequence `from`; empty (with a log
/// line) when there are more than `limit` of them.
pub async fn stored_ids(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
    limit: u64,
) -> Result<HashSet<String>, NatsError> {
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| NatsError::JetStream(format!("stream {stream}: {e}")))?;
    let info = s
        .get_info()
        .await
        .map_err(|e| NatsError::JetStream(format!("stream {stream}: {e}")))?;
    let last = info.state.last_sequence;
    let mut ids = HashSet::new();
    if last <= from {
        return Ok(ids);
    }
    if last - from > limit {
        tracing::warn!(
            stream,
            messages = last - from,
            verify_limit = limit,
            "too many messages since the last acknowledged one to check them; relying on the duplicate window"
        );
        return Ok(ids);
    }
    let s = &s;
    let mut reads = futures_util::stream::iter(from + 1..=last)
        .map(|seq| async move { s.get_raw_message(seq).await })
        .buffer_unordered(READ_AHEAD);
    while let Some(r) = reads.next().await {
        match r {
            Ok(m) => {
                if let Some(id) = m.headers.get(async_nats::header::NATS_MESSAGE_ID) {
                    ids.insert(id.as_str().trim().to_string());
                }
            }
            // A message deleted since (or never there) is answered with an API error:
            // nothing to leave out. Only a failed request leaves the answer unknown.
            Err(e) => match e.kind() {
                RawMessageErrorKind::NoMessageFound | RawMessageErrorKind::JetStream(_) => {}
                _ => {
                    return Err(NatsError::JetStream(format!(
                        "reading stream {stream}: {e}"
                    )));
                }
            },
        }
    }
    tracing::info!(
        stream,
        from,
        to = last,
        found = ids.len(),
        "read what the stream got since the last acknowledged message"
    );
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_safe_and_stable() {
        assert_eq!(header_value("uid:12"), "uid:12");
        assert_eq!(header_value("a\r\nb "), "a  b");
        assert_eq!(header_value(" \n"), "_");
        assert_eq!(header_value(""), "_");
    }
}
