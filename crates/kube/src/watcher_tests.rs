//! Scripted tests of the watcher state machine: each test gives the answers the API returns,
//! runs with paused time, and checks what the watcher yields, which requests it made and when.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kubetrail_core::config::{Section, SectionKind};
use tokio::time::{Instant, Sleep};

use super::*;
use crate::backoff::ExponentialBackoff;
use crate::client::KubeError;
use crate::status::ApiError;

const BASE: Duration = Duration::from_millis(500);
const CAP: Duration = Duration::from_secs(30);

enum Step {
    Data(String),
    Delay(Duration),
    Cut(&'static str),
    Hang,
}

enum Answer {
    List(Result<String, WatchError>),
    Watch(Result<Vec<Step>, WatchError>),
    /// For a probe; a probe with no `Probe` answer next in the script is answered Ok.
    Probe(Result<(), WatchError>),
}

#[derive(Debug, Clone, PartialEq)]
enum Call {
    List {
        continue_token: Option<String>,
        limit: u32,
    },
    Watch {
        rv: String,
    },
}

type Fallback = Box<dyn FnMut(&Call) -> Answer + Send>;

struct Script {
    answers: VecDeque<Answer>,
    fallback: Option<Fallback>,
    calls: Vec<(Duration, Call)>,
    /// The resourceVersions probed (kept apart from `calls`, which lists and watches).
    probes: Vec<String>,
    invalidations: usize,
    start: Instant,
}

#[derive(Clone)]
struct ScriptedApi(Arc<Mutex<Script>>);

impl ScriptedApi {
    fn new(answers: Vec<Answer>) -> Self {
        ScriptedApi(Arc::new(Mutex::new(Script {
            answers: answers.into(),
            fallback: None,
            calls: Vec::new(),
            probes: Vec::new(),
            invalidations: 0,
            start: Instant::now(),
        })))
    }

    fn with_fallback(f: impl FnMut(&Call) -> Answer + Send + 'static) -> Self {
        let api = Self::new(vec![]);
        api.0.lock().unwrap().fallback = Some(Box::new(f));
        api
    }

    fn push(&self, answer: Answer) {
        self.0.lock().unwrap().answers.push_back(answer);
    }

    fn calls(&self) -> Vec<Call> {
        self.0
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    fn call_times(&self) -> Vec<Duration> {
        self.0
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }

    fn probes(&self) -> Vec<String> {
        self.0.lock().unwrap().probes.clone()
    }

    fn invalidations(&self) -> usize {
        self.0.lock().unwrap().invalidations
    }

    fn answer(&self, call: Call) -> Answer {
        let mut s = self.0.lock().unwrap();
        let at = s.start.elapsed();
        s.calls.push((at, call.clone()));
        if let Some(a) = s.answers.pop_front() {
            return a;
        }
        match s.fallback.as_mut() {
            Some(f) => f(&call),
            None => panic!("the script has no answer for {call:?}"),
        }
    }
}

impl Api for ScriptedApi {
    fn list_page(
        &self,
        continue_token: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Bytes, WatchError>> + Send {
        let answer = self.answer(Call::List {
            continue_token: continue_token.map(str::to_string),
            limit,
        });
        async move {
            match answer {
                Answer::List(r) => r.map(Bytes::from),
                _ => panic!("a LIST was answered with another script"),
            }
        }
    }

    fn watch(
        &self,
        resource_version: &str,
        _timeout: Duration,
    ) -> impl Future<Output = Result<WatchStream, WatchError>> + Send {
        let answer = self.answer(Call::Watch {
            rv: resource_version.to_string(),
        });
        async move {
            match answer {
                Answer::Watch(r) => r.map(|steps| {
                    Box::new(ScriptedStream {
                        steps: steps.into(),
                        sleep: None,
                    }) as WatchStream
                }),
                _ => panic!("a WATCH was answered with another script"),
            }
        }
    }

    fn probe(&self, resource_version: &str) -> impl Future<Output = Result<(), WatchError>> + Send {
        let mut s = self.0.lock().unwrap();
        s.probes.push(resource_version.to_string());
        let answer = match s.answers.front() {
            Some(Answer::Probe(_)) => match s.answers.pop_front() {
                Some(Answer::Probe(r)) => r,
                _ => Ok(()),
            },
            _ => Ok(()),
        };
        async move { answer }
    }

    fn invalidate_credentials(&self) {
        self.0.lock().unwrap().invalidations += 1;
    }
}

struct ScriptedStream {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl ChunkSource for ScriptedStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, WatchError>>> {
        loop {
            if let Some(s) = self.sleep.as_mut() {
                if s.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            match self.steps.pop_front() {
                None => return Poll::Ready(None),
                Some(Step::Data(d)) => return Poll::Ready(Some(Ok(Bytes::from(d)))),
                Some(Step::Delay(d)) => self.sleep = Some(Box::pin(tokio::time::sleep(d))),
                Some(Step::Cut(why)) => {
                    return Poll::Ready(Some(Err(WatchError::Stream(why.to_string()))));
                }
                Some(Step::Hang) => {
                    self.steps.push_front(Step::Hang);
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Records the delays a real backoff hands out.
/// The real backoff, the (ceiling, delay) pairs it gave, and how often it was reset.
type Recorded = (ExponentialBackoff, Vec<(Duration, Duration)>, usize);

#[derive(Clone)]
struct RecordingBackoff {
    inner: Arc<Mutex<Recorded>>,
}

impl RecordingBackoff {
    fn new(seed: u64) -> Self {
        RecordingBackoff {
            inner: Arc::new(Mutex::new((
                ExponentialBackoff::with_seed(BASE, CAP, seed),
                Vec::new(),
                0,
            ))),
        }
    }
    /// (ceiling, delay) of every delay handed out.
    fn delays(&self) -> Vec<(Duration, Duration)> {
        self.inner.lock().unwrap().1.clone()
    }
    fn resets(&self) -> usize {
        self.inner.lock().unwrap().2
    }
}

impl Backoff for RecordingBackoff {
    fn next_delay(&mut self) -> Duration {
        let mut g = self.inner.lock().unwrap();
        let ceiling = g.0.ceiling();
        let d = g.0.next_delay();
        g.1.push((ceiling, d));
        d
    }
    fn reset(&mut self) {
        let mut g = self.inner.lock().unwrap();
        g.0.reset();
        g.2 += 1;
    }
}

fn config() -> WatcherConfig {
    WatcherConfig {
        expected_kind: Some("Event".into()),
        page_limit: 2,
        watch_timeout: Duration::from_secs(60),
        ..WatcherConfig::default()
    }
}

fn watcher(
    api: &ScriptedApi,
    resume: Option<&str>,
) -> (Watcher<ScriptedApi, RecordingBackoff>, RecordingBackoff) {
    watcher_with(api, resume, config())
}

fn watcher_with(
    api: &ScriptedApi,
    resume: Option<&str>,
    config: WatcherConfig,
) -> (Watcher<ScriptedApi, RecordingBackoff>, RecordingBackoff) {
    let b = RecordingBackoff::new(42);
    (
        Watcher::new(api.clone(), config, b.clone(), resume.map(str::to_string)),
        b,
    )
}

fn event(uid: &str, rv: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"v1","metadata":{{"name":"{uid}.1","namespace":"fx","uid":"{uid}","resourceVersion":"{rv}"}},"reason":"BackOff","message":"m {uid}"}}"#
    )
}

fn frame(t: &str, uid: &str, rv: &str) -> String {
    format!("{{\"type\":\"{t}\",\"object\":{}}}\n", event(uid, rv))
}

fn bookmark(rv: &str) -> String {
    format!(
        "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Event\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}}}}}}\n"
    )
}

fn error_frame(code: u16, reason: &str) -> String {
    format!(
        "{{\"type\":\"ERROR\",\"object\":{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"status {code}\",\"reason\":\"{reason}\",\"code\":{code}}}}}\n"
    )
}

fn list(rv: &str, cont: Option<&str>, items: &[(&str, &str)]) -> Answer {
    let items: Vec<String> = items
        .iter()
        // List items carry no kind, as the real server sends them.
        .map(|(uid, irv)| event(uid, irv).replace(r#""kind":"Event","apiVersion":"v1","#, ""))
        .collect();
    let cont = cont
        .map(|c| format!(r#","continue":"{c}""#))
        .unwrap_or_default();
    Answer::List(Ok(format!(
        r#"{{"kind":"EventList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"{cont}}},"items":[{}]}}"#,
        items.join(",")
    )))
}

fn watch(steps: Vec<Step>) -> Answer {
    Answer::Watch(Ok(steps))
}

fn data(s: impl Into<String>) -> Step {
    Step::Data(s.into())
}

fn api_error(code: u16, reason: &str, retry_after: Option<u64>) -> WatchError {
    WatchError::Request(KubeError::Api {
        method: http::Method::GET,
        url: "https://kube.test/api/v1/events".into(),
        error: Box::new(ApiError {
            code,
            reason: reason.into(),
            message: format!("status {code}"),
            retry_after: retry_after.map(Duration::from_secs),
            causes: Vec::new(),
        }),
    })
}

fn connection_refused() -> WatchError {
    WatchError::Request(KubeError::Net(kubetrail_net::NetError::Connect {
        url: "https://kube.test".into(),
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    }))
}

fn uids(items: &[(WatchEventType, RawObject)]) -> Vec<(WatchEventType, String)> {
    items.iter().map(|(t, o)| (*t, o.uid.clone())).collect()
}

fn list_uids(items: &[RawObject]) -> Vec<&str> {
    items.iter().map(|o| o.uid.as_str()).collect()
}

fn lcall(cont: Option<&str>) -> Call {
    Call::List {
        continue_token: cont.map(str::to_string),
        limit: 2,
    }
}

fn wcall(rv: &str) -> Call {
    Call::Watch { rv: rv.to_string() }
}

#[tokio::test(start_paused = true)]
async fn lists_page_by_page_then_watches_from_the_list_rv() {
    let api = ScriptedApi::new(vec![
        list("10", Some("c1"), &[("a", "3"), ("b", "7")]),
        list("10", None, &[("c", "9")]),
        watch(vec![
            data(frame("ADDED", "d", "11") + &frame("MODIFIED", "a", "12")),
            Step::Hang,
        ]),
    ]);
    let (mut w, _) = watcher(&api, None);
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListStarted { after_gap: None }
    ));
    let WatcherEvent::ListPage { items, last, .. } = w.next().await.unwrap() else {
        panic!()
    };
    assert_eq!((list_uids(&items), last), (vec!["a", "b"], None));
    assert_eq!(
        api.calls(),
        vec![lcall(None)],
        "pages are yielded as they arrive"
    );
    let WatcherEvent::ListPage { items, last, .. } = w.next().await.unwrap() else {
        panic!()
    };
    assert_eq!(
        (list_uids(&items), last.as_deref()),
        (vec!["c"], Some("10"))
    );
    assert_eq!(w.resource_version(), Some("10"));
    let WatcherEvent::Frames {
        items,
        resource_version,
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        uids(&items),
        vec![
            (WatchEventType::Added, "d".into()),
            (WatchEventType::Modified, "a".into())
        ]
    );
    assert_eq!(resource_version, "12");
    assert_eq!(
        items[0].1.raw.get(),
        event("d", "11"),
        "the object's bytes are kept exactly"
    );
    assert_eq!(
        api.calls(),
        vec![lcall(None), lcall(Some("c1")), wcall("10")]
    );
    let c = w.stats().counters();
    assert_eq!((c.list_requests, c.watch_requests, c.frames), (2, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn resumes_from_a_resource_version_without_listing() {
    let api = ScriptedApi::new(vec![watch(vec![data(frame("ADDED", "x", "78"))])]);
    let (mut w, _) = watcher(&api, Some("77"));
    let WatcherEvent::Frames {
        resource_version, ..
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(resource_version, "78");
    assert_eq!(api.calls(), vec![wcall("77")]);

    // An empty committed resourceVersion is no resume point: it lists.
    let api = ScriptedApi::new(vec![list("3", None, &[])]);
    let (mut w, _) = watcher(&api, Some(""));
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListStarted { after_gap: None }
    ));
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListPage { .. }
    ));
    assert_eq!(api.calls(), vec![lcall(None)]);
}

#[tokio::test(start_paused = true)]
async fn a_410_error_frame_reports_a_gap_and_relists() {
    let api = ScriptedApi::new(vec![
        watch(vec![data(error_frame(410, "Expired"))]),
        list("20", None, &[("n", "19")]),
        watch(vec![Step::Hang]),
    ]);
    let (mut w, _) = watcher(&api, Some("5"));
    let WatcherEvent::ListStarted {
        after_gap: Some(gap),
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(gap.from_resource_version.as_deref(), Some("5"));
    assert_eq!(gap.reason, GapReason::WatchExpired);
    assert_eq!(gap.message, "status 410");
    let WatcherEvent::ListPage { last, .. } = w.next().await.unwrap() else {
        panic!()
    };
    assert_eq!(last.as_deref(), Some("20"));
    // Open the next watch (it hangs); stop waiting after a while.
    let _ = tokio::time::timeout(Duration::from_secs(5), w.next()).await;
    assert_eq!(api.calls(), vec![wcall("5"), lcall(None), wcall("20")]);
    assert_eq!(w.stats().counters().relists, 1);
    // The relist waited for the backoff: never an immediate loop.
    let t = api.call_times();
    assert!(t[1] - t[0] >= BASE, "{t:?}");

    // A 410 status on the WATCH request itself is the same gap.
    let api = ScriptedApi::new(vec![
        Answer::Watch(Err(api_error(410, "Gone", None))),
        list("30", None, &[]),
    ]);
    let (mut w, _) = watcher(&api, Some("6"));
    let WatcherEvent::ListStarted {
        after_gap: Some(gap),
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (gap.from_resource_version.as_deref(), gap.reason),
        (Some("6"), GapReason::WatchExpired)
    );
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListPage { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_410_on_a_continued_list_restarts_the_list() {
    let api = ScriptedApi::new(vec![
        watch(vec![data(error_frame(410, "Expired"))]),
        list("40", Some("c1"), &[("a", "1"), ("b", "2")]),
        Answer::List(Err(api_error(410, "Expired", None))),
        list("44", None, &[("a", "1")]),
    ]);
    let (mut w, _) = watcher(&api, Some("5"));
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListStarted { after_gap: Some(_) }
    ));
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListPage { last: None, .. }
    ));
    let WatcherEvent::ListStarted {
        after_gap: Some(gap),
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(gap.reason, GapReason::ListContinueExpired);
    assert_eq!(
        gap.from_resource_version.as_deref(),
        Some("5"),
        "the gap still starts where continuity was lost"
    );
    let WatcherEvent::ListPage { last, .. } = w.next().await.unwrap() else {
        panic!()
    };
    assert_eq!(last.as_deref(), Some("44"));
    assert_eq!(
        api.calls(),
        vec![wcall("5"), lcall(None), lcall(Some("c1")), lcall(None)]
    );
    assert_eq!(w.stats().counters().list_restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn empty_200_watches_for_ten_minutes_do_not_busy_loop() {
    let api = ScriptedApi::with_fallback(|call| match call {
        // The stale-watch quirk: 200, no frames, closed at once.
        Call::Watch { .. } => watch(vec![]),
        Call::List { .. } => list("5", None, &[]),
    });
    let (mut w, backoff) = watcher(&api, Some("5"));
    let start = Instant::now();
    let mut gaps = 0;
    for i in 0.. {
        assert!(i < 100_000, "the watcher loops without letting time pass");
        if start.elapsed() >= Duration::from_secs(600) {
            break;
        }
        if let Ok(WatcherEvent::ListStarted { after_gap: Some(g) }) = w.next().await {
            assert_eq!(g.reason, GapReason::EmptyWatch);
            gaps += 1;
        }
    }
    let calls = api.calls().len();
    let delays = backoff.delays();
    // Every watch+list cycle waits for one backoff delay, and the delays fill the 10 minutes.
    let waited: Duration = delays.iter().map(|(_, d)| *d).sum();
    assert!(waited >= Duration::from_secs(600) - CAP, "{waited:?}");
    assert!(
        calls <= 2 * delays.len() + 2,
        "{calls} requests for {} delays",
        delays.len()
    );
    // Exponential growth to a 30 s cap: a few dozen cycles in 10 minutes, not thousands.
    assert!(calls < 150, "{calls} requests in 10 simulated minutes");
    assert!(delays.iter().all(|(_, d)| *d >= BASE));
    assert_eq!(
        backoff.resets(),
        0,
        "an empty watch is never a healthy period"
    );
    let c = w.stats().counters();
    assert_eq!(c.empty_watches, gaps);
    assert_eq!(c.relists, gaps);
}

#[tokio::test(start_paused = true)]
async fn connection_errors_back_off_with_growing_delays_up_to_the_cap() {
    let api = ScriptedApi::with_fallback(|_| Answer::Watch(Err(connection_refused())));
    let (mut w, backoff) = watcher(&api, Some("5"));
    for _ in 0..25 {
        let err = w.next().await.unwrap_err();
        assert!(err.to_string().contains("https://kube.test"), "{err}");
    }
    let times = api.call_times();
    let delays = backoff.delays();
    assert_eq!(times.len(), 25);
    for (i, pair) in times.windows(2).enumerate() {
        // Timers have millisecond resolution: the wait is the delay rounded up.
        let waited = pair[1] - pair[0];
        assert!(
            waited >= delays[i].1 && waited - delays[i].1 <= Duration::from_millis(1),
            "request {i} waited {waited:?}, the backoff said {:?}",
            delays[i].1
        );
    }
    let ceilings: Vec<Duration> = delays.iter().map(|(c, _)| *c).collect();
    assert_eq!(ceilings[0], BASE);
    for pair in ceilings.windows(2) {
        assert!(pair[1] == (pair[0] * 2).min(CAP), "{ceilings:?}");
    }
    assert_eq!(*ceilings.last().unwrap(), CAP);
    assert!(delays.iter().all(|(c, d)| *d >= BASE && d <= c));
    assert!(
        delays[15..]
            .iter()
            .any(|(_, d)| *d > Duration::from_secs(10)),
        "late delays are long: {delays:?}"
    );
    assert_eq!(w.stats().counters().request_errors, 25);
    assert!(
        api.calls().iter().all(|c| *c == wcall("5")),
        "always resumes from the same RV"
    );
}

#[tokio::test(start_paused = true)]
async fn malformed_frames_are_counted_and_skipped() {
    let wrong_kind = format!(
        "{{\"type\":\"ADDED\",\"object\":{}}}\n",
        event("p", "13").replace("\"Event\"", "\"Pod\"")
    );
    let body = [
        frame("ADDED", "a", "11"),
        "this is not json\n".to_string(),
        wrong_kind,
        "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Event\",\"metadata\":{\"resourceVersion\":\"14\"}}}\n".to_string(),
        "{\"type\":\"WHATEVER\",\"object\":{}}\n".to_string(),
        frame("ADDED", "b", "12"),
    ]
    .concat();
    let api = ScriptedApi::new(vec![watch(vec![data(body), Step::Hang])]);
    let (mut w, _) = watcher(&api, Some("10"));
    let WatcherEvent::Frames {
        items,
        resource_version,
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        uids(&items),
        vec![
            (WatchEventType::Added, "a".into()),
            (WatchEventType::Added, "b".into())
        ]
    );
    assert_eq!(resource_version, "12");
    let c = w.stats().counters();
    assert_eq!((c.malformed_frames, c.unexpected_kind), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn a_frame_split_across_chunks_arrives_whole() {
    let a = frame("ADDED", "a", "11");
    let b = frame("DELETED", "b", "12");
    let (a1, a2) = a.split_at(17);
    let (b1, b2) = b.split_at(40);
    let api = ScriptedApi::new(vec![watch(vec![
        data(a1),
        Step::Delay(Duration::from_secs(1)),
        data(format!("{a2}{b1}")),
        Step::Delay(Duration::from_secs(1)),
        data(b2),
        Step::Hang,
    ])]);
    let (mut w, _) = watcher(&api, Some("10"));
    let WatcherEvent::Frames {
        items,
        resource_version,
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (uids(&items), resource_version.as_str()),
        (vec![(WatchEventType::Added, "a".into())], "11")
    );
    assert_eq!(items[0].1.raw.get(), event("a", "11"));
    let WatcherEvent::Frames {
        items,
        resource_version,
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (uids(&items), resource_version.as_str()),
        (vec![(WatchEventType::Deleted, "b".into())], "12")
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_mid_frame_resumes_from_the_last_complete_frame() {
    let b = frame("ADDED", "b", "7");
    let api = ScriptedApi::new(vec![
        // Clean end of the body in the middle of a frame.
        watch(vec![
            data(frame("ADDED", "a", "6")),
            Step::Delay(Duration::from_millis(10)),
            data(&b[..30]),
        ]),
        // A cut connection in the middle of a frame.
        watch(vec![
            data(frame("ADDED", "b", "7")),
            Step::Delay(Duration::from_millis(10)),
            data(&b[..12]),
            Step::Cut("connection reset"),
        ]),
        watch(vec![data(frame("ADDED", "c", "8")), Step::Hang]),
    ]);
    let (mut w, _) = watcher(&api, Some("5"));
    let WatcherEvent::Frames {
        resource_version, ..
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(resource_version, "6");
    let WatcherEvent::Frames {
        resource_version, ..
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(resource_version, "7");
    let err = w.next().await.unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let WatcherEvent::Frames {
        resource_version, ..
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(resource_version, "8");
    assert_eq!(api.calls(), vec![wcall("5"), wcall("6"), wcall("7")]);
    let c = w.stats().counters();
    assert_eq!((c.truncated_frames, c.watch_restarts), (2, 2));
    // Both streams delivered frames first, so the reconnects were immediate.
    let t = api.call_times();
    assert!(
        t[1] - t[0] < Duration::from_millis(100) && t[2] - t[1] < Duration::from_millis(100),
        "{t:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn bookmarks_move_the_resource_version() {
    let api = ScriptedApi::new(vec![
        watch(vec![
            data(bookmark("50")),
            Step::Delay(Duration::from_secs(59)),
        ]),
        watch(vec![
            data(frame("ADDED", "z", "51") + &bookmark("60")),
            Step::Hang,
        ]),
    ]);
    let (mut w, _) = watcher(&api, Some("5"));
    let WatcherEvent::Bookmark { resource_version } = w.next().await.unwrap() else {
        panic!()
    };
    assert_eq!(resource_version, "50");
    assert_eq!(w.resource_version(), Some("50"));
    // A bookmark folded into a batch sets the batch's resourceVersion.
    let WatcherEvent::Frames {
        items,
        resource_version,
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!((items.len(), resource_version.as_str()), (1, "60"));
    assert_eq!(api.calls(), vec![wcall("5"), wcall("50")]);
    assert_eq!(w.stats().counters().bookmarks, 2);
}

#[tokio::test(start_paused = true)]
async fn a_401_makes_the_credentials_be_read_again() {
    let api = ScriptedApi::new(vec![
        watch(vec![data(error_frame(401, "Unauthorized"))]),
        Answer::Watch(Err(api_error(401, "Unauthorized", None))),
        watch(vec![data(frame("ADDED", "a", "6")), Step::Hang]),
    ]);
    let (mut w, _) = watcher(&api, Some("5"));
    let err = w.next().await.unwrap_err();
    assert_eq!(err.api_error().map(|e| e.code), Some(401));
    assert_eq!(api.invalidations(), 1);
    let err = w.next().await.unwrap_err();
    assert_eq!(err.api_error().map(|e| e.code), Some(401));
    assert_eq!(api.invalidations(), 2);
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::Frames { .. }
    ));
    assert_eq!(api.calls(), vec![wcall("5"), wcall("5"), wcall("5")]);
    assert_eq!(w.stats().counters().unauthorized, 2);
}

#[tokio::test(start_paused = true)]
async fn a_watch_that_runs_its_course_is_reopened_at_once_and_a_short_one_after_backoff() {
    let api = ScriptedApi::new(vec![
        watch(vec![Step::Delay(Duration::from_secs(60))]),
        watch(vec![Step::Delay(Duration::from_secs(5))]),
        watch(vec![Step::Hang]),
    ]);
    let (mut w, backoff) = watcher(&api, Some("5"));
    let _ = tokio::time::timeout(Duration::from_secs(100), w.next()).await;
    let t = api.call_times();
    assert_eq!(api.calls(), vec![wcall("5"), wcall("5"), wcall("5")]);
    assert_eq!(
        t[1],
        Duration::from_secs(60),
        "no wait after a full-length watch"
    );
    let delays = backoff.delays();
    assert_eq!(delays.len(), 1);
    let waited = t[2] - t[1] - Duration::from_secs(5);
    assert!(
        waited >= delays[0].1 && waited - delays[0].1 <= Duration::from_millis(1),
        "a short watch waits for the backoff: {waited:?} vs {:?}",
        delays[0].1
    );
    assert_eq!(backoff.resets(), 1);
    assert_eq!(
        w.stats().counters().relists,
        0,
        "an ordinary end is not a gap"
    );
}

/// A resourceVersion ahead of the server's (a cluster rebuilt under kept state): the watch
/// answers nothing until its timeout, forever. The probe after such a watch finds it out,
/// and the watcher relists with a gap instead of waiting silently.
#[tokio::test(start_paused = true)]
async fn a_resource_version_ahead_of_the_server_is_found_after_a_quiet_watch_and_relisted() {
    let too_large = WatchError::Request(KubeError::Api {
        method: http::Method::GET,
        url: "https://kube.test/api/v1/events".into(),
        error: Box::new(ApiError::from_response(
            http::StatusCode::GATEWAY_TIMEOUT,
            None,
            br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Timeout: Too large resource version: 999999, current: 381","reason":"Timeout","details":{"causes":[{"reason":"ResourceVersionTooLarge","message":"Too large resource version"}]},"code":504}"#,
        )),
    });
    let api = ScriptedApi::new(vec![
        // Resuming: probed (the server was not ahead then), watched.
        Answer::Probe(Ok(())),
        // A quiet but valid resourceVersion: probed, watched again.
        watch(vec![Step::Delay(Duration::from_secs(60))]),
        Answer::Probe(Ok(())),
        // Then the same kind of quiet watch, but the probe says it is ahead.
        watch(vec![Step::Delay(Duration::from_secs(60))]),
        Answer::Probe(Err(too_large)),
        list("381", None, &[]),
    ]);
    let (mut w, _) = watcher(&api, Some("999999"));
    let ev = tokio::time::timeout(Duration::from_secs(300), w.next())
        .await
        .expect("the watcher does not wait silently")
        .unwrap();
    match ev {
        WatcherEvent::ListStarted {
            after_gap: Some(gap),
        } => {
            assert_eq!(gap.reason, GapReason::ResourceVersionTooLarge);
            assert_eq!(gap.from_resource_version.as_deref(), Some("999999"));
            assert!(
                gap.message.contains("Too large resource version"),
                "{}",
                gap.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListPage { .. }
    ));
    assert_eq!(
        api.calls(),
        vec![wcall("999999"), wcall("999999"), lcall(None)]
    );
    assert_eq!(
        api.probes(),
        vec!["999999", "999999", "999999"],
        "at the start and after each quiet watch"
    );
    assert_eq!(w.stats().counters().probes, 3);
    assert_eq!(w.stats().counters().relists, 1);
}

#[tokio::test(start_paused = true)]
async fn a_watch_with_changes_is_not_probed_and_a_failed_probe_only_delays_the_next_watch() {
    let api = ScriptedApi::new(vec![
        watch(vec![
            data(frame("ADDED", "x", "78")),
            Step::Delay(Duration::from_secs(60)),
        ]),
        watch(vec![Step::Delay(Duration::from_secs(60))]),
        Answer::Probe(Err(connection_refused())),
        watch(vec![Step::Hang]),
    ]);
    let (mut w, _) = watcher(&api, Some("77"));
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::Frames { .. }
    ));
    // The first watch ends (it brought a change: no probe), the second one ends quiet: probe,
    // which fails; the watcher reports the error and watches again after a backoff.
    assert!(w.next().await.is_err());
    let _ = tokio::time::timeout(Duration::from_secs(100), w.next()).await;
    assert_eq!(api.calls(), vec![wcall("77"), wcall("78"), wcall("78")]);
    assert_eq!(
        api.probes(),
        vec!["77", "78"],
        "when resuming, and after the quiet watch"
    );
    assert_eq!(w.stats().counters().relists, 0);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let api = ScriptedApi::new(vec![
        Answer::List(Err(api_error(429, "TooManyRequests", Some(7)))),
        list("1", None, &[]),
    ]);
    let (mut w, _) = watcher(&api, None);
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListStarted { .. }
    ));
    assert_eq!(
        w.next().await.unwrap_err().api_error().map(|e| e.code),
        Some(429)
    );
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListPage { .. }
    ));
    let t = api.call_times();
    assert!(t[1] - t[0] >= Duration::from_secs(7), "{t:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_stream_is_dropped_after_the_idle_limit() {
    let api = ScriptedApi::new(vec![
        watch(vec![Step::Hang]),
        watch(vec![data(frame("ADDED", "a", "6")), Step::Hang]),
    ]);
    let (mut w, _) = watcher(&api, Some("5"));
    let err = w.next().await.unwrap_err();
    assert!(matches!(err, WatchError::Idle(_)), "{err}");
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::Frames { .. }
    ));
    let t = api.call_times();
    assert_eq!(
        t[1] - t[0],
        Duration::from_secs(90),
        "watch timeout 60 s + 30 s grace"
    );
    assert_eq!(w.stats().counters().idle_timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn batches_are_bounded_and_oversized_frames_break_the_stream() {
    let body: String = (0..7)
        .map(|i| frame("ADDED", &format!("u{i}"), &(100 + i).to_string()))
        .collect();
    let api = ScriptedApi::new(vec![watch(vec![data(body), Step::Hang])]);
    let cfg = WatcherConfig {
        max_batch_frames: 3,
        ..config()
    };
    let (mut w, _) = watcher_with(&api, Some("5"), cfg);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let WatcherEvent::Frames {
            items,
            resource_version,
        } = w.next().await.unwrap()
        else {
            panic!()
        };
        assert_eq!(resource_version, items.last().unwrap().1.resource_version);
        sizes.push(items.len());
    }
    assert_eq!(sizes, vec![3, 3, 1]);

    let api = ScriptedApi::new(vec![
        watch(vec![
            data(frame("ADDED", "a", "6")),
            Step::Delay(Duration::from_millis(1)),
            data("x".repeat(5000)),
        ]),
        watch(vec![Step::Hang]),
    ]);
    let cfg = WatcherConfig {
        max_frame_bytes: 1000,
        ..config()
    };
    let (mut w, _) = watcher_with(&api, Some("5"), cfg);
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::Frames { .. }
    ));
    assert!(matches!(
        w.next().await.unwrap_err(),
        WatchError::BadStream(_)
    ));
    let _ = tokio::time::timeout(Duration::from_secs(1), w.next()).await;
    assert_eq!(api.calls(), vec![wcall("5"), wcall("6")]);
    assert_eq!(w.stats().counters().oversized_frames, 1);
}

#[tokio::test(start_paused = true)]
async fn forbidden_is_reported_and_retried_after_backoff() {
    let api = ScriptedApi::new(vec![
        Answer::List(Err(api_error(403, "Forbidden", None))),
        Answer::List(Err(api_error(403, "Forbidden", None))),
        list("3", None, &[("a", "2")]),
    ]);
    let (mut w, backoff) = watcher(&api, None);
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListStarted { .. }
    ));
    for _ in 0..2 {
        let err = w.next().await.unwrap_err();
        assert!(err.to_string().contains("403 Forbidden"), "{err}");
    }
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListPage { last: Some(_), .. }
    ));
    assert_eq!(backoff.delays().len(), 2);
    assert_eq!(w.stats().counters().api_errors, 2);
}

#[tokio::test(start_paused = true)]
async fn next_is_cancel_safe() {
    let api = ScriptedApi::new(vec![
        Answer::Watch(Err(connection_refused())),
        watch(vec![
            Step::Delay(Duration::from_secs(3)),
            data(frame("ADDED", "a", "6")),
            Step::Hang,
        ]),
    ]);
    let (mut w, _) = watcher(&api, Some("5"));
    assert!(w.next().await.is_err());
    // Cancel during the backoff wait and during the wait for a frame.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), w.next())
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(2), w.next())
            .await
            .is_err()
    );
    let WatcherEvent::Frames { items, .. } = w.next().await.unwrap() else {
        panic!()
    };
    assert_eq!(items.len(), 1);
    assert_eq!(api.calls(), vec![wcall("5"), wcall("5")]);
}

#[tokio::test(start_paused = true)]
async fn bad_list_pages_and_items() {
    let api = ScriptedApi::new(vec![
        Answer::List(Ok("<html>oops</html>".into())),
        Answer::List(Ok(r#"{"kind":"EventList","metadata":{"resourceVersion":"9"},"items":[{"metadata":{"name":"no-uid","resourceVersion":"1"}}]}"#.into())),
    ]);
    let (mut w, _) = watcher(&api, None);
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::ListStarted { .. }
    ));
    assert!(matches!(
        w.next().await.unwrap_err(),
        WatchError::BadList(_)
    ));
    let WatcherEvent::ListPage { items, last, .. } = w.next().await.unwrap() else {
        panic!()
    };
    assert!(items.is_empty());
    assert_eq!(last.as_deref(), Some("9"));
    assert_eq!(w.stats().counters().skipped_list_items, 1);
}

#[test]
fn config_from_section() {
    let mut s = Section::from_pairs(SectionKind::Input, "kubernetes_events", &[]);
    let c = WatcherConfig::from_section(&mut s, Some("Event")).unwrap();
    assert_eq!(
        (c.page_limit, c.watch_timeout, c.backoff_base),
        (500, Duration::from_secs(600), BASE)
    );
    let mut s = Section::from_pairs(
        SectionKind::Input,
        "kubernetes_events",
        &[
            ("kube_request_limit", "0"),
            ("kube_watch_timeout", "2m"),
            ("interval_sec", "1"),
            ("interval_nsec", "0"),
        ],
    );
    let c = WatcherConfig::from_section(&mut s, None).unwrap();
    assert_eq!(
        (c.page_limit, c.watch_timeout, c.backoff_base),
        (500, Duration::from_secs(120), Duration::from_secs(1))
    );
    let mut s = Section::from_pairs(
        SectionKind::Input,
        "k",
        &[("kube_request_limit", "50"), ("interval_sec", "2")],
    );
    let c = WatcherConfig::from_section(&mut s, None).unwrap();
    assert_eq!(
        (c.page_limit, c.backoff_base),
        (50, Duration::from_millis(2500))
    );
    for bad in [
        ("interval_nsec", "0"),
        ("kube_watch_timeout", "0"),
        ("kube_request_limit", "x"),
    ] {
        let mut s = Section::from_pairs(SectionKind::Input, "k", &[bad]);
        let e = WatcherConfig::from_section(&mut s, None).unwrap_err();
        assert!(e.to_string().contains(bad.0), "{e}");
    }
}

#[tokio::test(start_paused = true)]
async fn later_answers_can_be_queued() {
    let api = ScriptedApi::new(vec![watch(vec![data(frame("ADDED", "a", "6"))])]);
    let (mut w, _) = watcher(&api, Some("5"));
    assert!(matches!(
        w.next().await.unwrap(),
        WatcherEvent::Frames { .. }
    ));
    api.push(watch(vec![data(frame("ADDED", "b", "7")), Step::Hang]));
    let WatcherEvent::Frames {
        resource_version, ..
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(resource_version, "7");
}

#[tokio::test(start_paused = true)]
async fn a_list_interrupted_by_a_restart_resumes_from_its_continue_token() {
    let api = ScriptedApi::new(vec![
        list("10", Some("c2"), &[("c", "3")]),
        list("10", None, &[("d", "4")]),
        watch(vec![Step::Hang]),
    ]);
    let mut w = Watcher::resume_list(api.clone(), config(), RecordingBackoff::new(1), "c1".into());
    let WatcherEvent::ListPage {
        items,
        last,
        continue_token,
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (list_uids(&items), last, continue_token.as_deref()),
        (vec!["c"], None, Some("c2"))
    );
    let WatcherEvent::ListPage {
        last,
        continue_token,
        ..
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!((last.as_deref(), continue_token), (Some("10"), None));
    let _ = tokio::time::timeout(Duration::from_millis(10), w.next()).await;
    assert_eq!(
        api.calls(),
        vec![lcall(Some("c1")), lcall(Some("c2")), wcall("10")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_list_whose_token_expired_starts_over_with_a_gap() {
    let api = ScriptedApi::new(vec![
        Answer::List(Err(api_error(410, "Expired", None))),
        list("50", None, &[("a", "1")]),
    ]);
    let mut w = Watcher::resume_list(
        api.clone(),
        config(),
        RecordingBackoff::new(1),
        "old".into(),
    );
    let WatcherEvent::ListStarted {
        after_gap: Some(gap),
    } = w.next().await.unwrap()
    else {
        panic!()
    };
    assert_eq!(gap.reason, GapReason::ListContinueExpired);
    let WatcherEvent::ListPage { last, .. } = w.next().await.unwrap() else {
        panic!()
    };
    assert_eq!(last.as_deref(), Some("50"));
    assert_eq!(api.calls(), vec![lcall(Some("old")), lcall(None)]);
}

#[tokio::test(start_paused = true)]
async fn dropping_next_while_it_lingers_for_more_frames_loses_nothing() {
    let api = ScriptedApi::new(vec![watch(vec![
        data(frame("ADDED", "a", "11")),
        Step::Delay(Duration::from_millis(3)),
        data(frame("ADDED", "b", "12")),
        Step::Hang,
    ])]);
    let (mut w, _) = watcher(&api, Some("10"));
    // Cancelled while it holds frame "a" and waits (linger) for more: like a select! whose
    // other branch (a timer) won.
    let first = tokio::time::timeout(Duration::from_millis(1), w.next()).await;
    assert!(first.is_err(), "still lingering: {first:?}");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let WatcherEvent::Frames {
            items,
            resource_version,
        } = w.next().await.unwrap()
        else {
            panic!()
        };
        seen.extend(uids(&items).into_iter().map(|(_, u)| u));
        if seen.len() == 2 {
            assert_eq!(resource_version, "12");
        }
    }
    assert_eq!(
        seen,
        vec!["a".to_string(), "b".to_string()],
        "no frame lost to the cancellation"
    );
}
