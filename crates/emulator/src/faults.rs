//! Fault knobs ([`Faults`]) and the malformed bytes they inject.

use std::time::Duration;

/// Faults to inject; [`Emulator::set_faults`](crate::Emulator::set_faults) replaces the whole set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Close each watch abruptly after this many frames, in the middle of the next frame
    /// (half a JSON line, no terminating chunk).
    pub cut_watch_after_frames: Option<usize>,
    /// Every watch answers 200 with an empty body and closes at once (kubernetes#104171).
    pub stale_watch_empty_200: bool,
    /// Interleave malformed frames in watch streams: broken JSON, non-JSON lines, and
    /// well-formed frames of unexpected shape (a ConfigMap, an unknown type, no object).
    pub garbage_frames: bool,
    /// LISTs answer 200 with an HTML (non-JSON) body.
    pub non_json_list_body: bool,
    /// Wait this long before every response.
    pub delay: Option<Duration>,
    /// Answer every request with this status and a Status body (429 adds `Retry-After: 1`).
    pub fail_status: Option<u16>,
    /// Answer only `coordination.k8s.io` Lease requests with this status and a Status body
    /// (the Events API keeps working), e.g. 503 while the Lease's etcd is unavailable.
    pub lease_fail_status: Option<u16>,
}

/// The garbage frames, cycled through in order.
const GARBAGE: &[&str] = &[
    "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Event\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"broken\n",
    "this is not json at all\n",
    "{\"type\":\"ADDED\",\"object\":{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"intruder\",\"namespace\":\"default\",\"uid\":\"00000000-0000-4000-8000-000000000000\",\"resourceVersion\":\"1\",\"creationTimestamp\":null},\"data\":{\"k\":\"v\"}}}\n",
    "{\"type\":\"SURPRISE\",\"object\":{}}\n",
    "{\"type\":\"ADDED\"}\n",
    "[1,2,3]\n",
    "\"just a string\"\n",
    "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Event\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":12}}}\n",
];

/// The `n`-th garbage frame (cycling).
pub(crate) fn garbage_frame(n: usize) -> &'static [u8] {
    GARBAGE[n % GARBAGE.len()].as_bytes()
}

/// How many distinct garbage frames exist.
#[cfg(test)]
pub(crate) fn garbage_kinds() -> usize {
    GARBAGE.len()
}

/// The body of a `non_json_list_body` LIST.
pub(crate) const HTML_BODY: &[u8] = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// The first half of a frame: what a cut in the middle of it leaves on the wire.
pub(crate) fn half(frame: &[u8]) -> &[u8] {
    &frame[..frame.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_frames_are_lines_and_mostly_not_events() {
        for i in 0..garbage_kinds() {
            let f = garbage_frame(i);
            assert!(f.ends_with(b"\n"));
            assert_eq!(f.iter().filter(|&&b| b == b'\n').count(), 1);
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(f);
            if let Ok(v) = parsed {
                let is_good_event = v["object"]["kind"] == "Event"
                    && v["object"]["metadata"]["name"].is_string()
                    && matches!(v["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED"));
                assert!(!is_good_event, "garbage {i} is a valid event frame");
            }
        }
    }

    #[test]
    fn half_frame_is_not_json() {
        let f = b"{\"type\":\"ADDED\",\"object\":{}}\n";
        assert!(serde_json::from_slice::<serde_json::Value>(half(f)).is_err());
    }
}
