//! Leader election of the `kubernetes_events` input across real `kubetrail` processes, each
//! with its own state and `file` output, against the emulator's Lease API (short timings:
//! lease_duration 2 s, renew_deadline 1.2 s, retry_period 250 ms):
//! - two and three replicas, the leader killed with SIGKILL ten times while Events are created
//!   and repeated: every occurrence in the union of the outputs; never more repeats than
//!   `kubetrail_leader_handover_replayed_total` counted; none at all in a PostgreSQL table the
//!   replicas share;
//! - a failover repeats exactly what the killed leader committed after its last handover, and
//!   a graceful shutdown hands over at once with no repeat;
//! - a leader frozen (SIGSTOP) past lease_duration and thawed commits nothing it received
//!   after it was frozen;
//! - a handed-over resourceVersion that expired (410): the new leader relists with a `gap`
//!   record and does not record again the Events the previous leader had recorded;
//! - a Lease annotated by hand (409 on renewal), a failing Lease API (5xx) shorter and longer
//!   than renew_deadline (no replica ready while it fails), a Lease deleted by hand and one
//!   taken by an intruder.
//!
//! The PostgreSQL test needs `KUBETRAIL_TEST_PG_URL` (set by `./scripts/test`); without it, it
//! fails and says so.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TOKEN, read_records, signal, wait_until};
use kubetrail_emulator::{Emulator, EmulatorOptions, EventSpec, Faults};

const NS: &str = "kubetrail";

/// An Event occurrence: (uid, resourceVersion).
type Occurrence = (String, String);
const LEASE: &str = "kubetrail-events";
const COMPONENT: &str = "kubernetes_events.0";

/// Timings of the election in these tests.
#[derive(Clone, Copy)]
struct Timings {
    lease: &'static str,
    deadline: &'static str,
    retry: &'static str,
    lease_duration: Duration,
}

const FAST: Timings = Timings {
    lease: "2s",
    deadline: "1200ms",
    retry: "250ms",
    lease_duration: Duration::from_secs(2),
};

struct Replica {
    i: usize,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    runs: u32,
}

impl Replica {
    fn start(&mut self) {
        let stderr = std::fs::File::create(self.dir.join(format!("stderr.{}", self.runs))).unwrap();
        let stdout = std::fs::File::create(self.dir.join(format!("stdout.{}", self.runs))).unwrap();
        self.runs += 1;
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_kubetrail"))
                .args(["run", "-c"])
                .arg(&self.config)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("spawn kubetrail"),
        );
    }

    fn signal(&self, sig: &str) {
        signal(self.child.as_ref().expect("running"), sig);
    }

    /// SIGKILL (or SIGTERM) and wait for the exit.
    fn stop(&mut self, sig: &str) -> std::process::ExitStatus {
        self.signal(sig);
        self.child.take().unwrap().wait().unwrap()
    }

    fn out(&self) -> PathBuf {
        self.dir.join("out/events.jsonl")
    }

    fn records(&self) -> Vec<serde_json::Value> {
        read_records(&self.out())
    }

    fn out_len(&self) -> u64 {
        std::fs::metadata(self.out()).map(|m| m.len()).unwrap_or(0)
    }

    /// The `/metrics` address of the current run (`http_listen: 127.0.0.1:0`), from its log.
    fn metrics_addr(&self) -> Option<SocketAddr> {
        let log =
            std::fs::read_to_string(self.dir.join(format!("stderr.{}", self.runs - 1))).ok()?;
        log.lines()
            .find(|l| l.contains("serving /metrics"))?
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))?
            .parse()
            .ok()
    }

    fn get(&self, path: &str) -> Option<String> {
        let mut s =
            TcpStream::connect_timeout(&self.metrics_addr()?, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    }

    fn metric(&self, name: &str) -> Option<i64> {
        let text = self.get("/metrics")?;
        let series = format!("{name}{{component=\"{COMPONENT}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series).and_then(|v| v.trim().parse().ok()))
    }

    fn log(&self) -> String {
        (0..self.runs)
            .map(|r| {
                std::fs::read_to_string(self.dir.join(format!("stderr.{r}"))).unwrap_or_default()
            })
            .collect()
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    emu: Emulator,
    replicas: Vec<Replica>,
}

impl Cluster {
    async fn new(n: usize, t: Timings, pg: Option<(&str, &str)>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let emu = Emulator::start(EmulatorOptions {
            tokens: vec![(TOKEN.into(), "kubetrail".into())],
            ..Default::default()
        })
        .await
        .unwrap();
        let ca = dir.path().join("ca.crt");
        emu.write_ca_file(&ca).unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        let replicas = (0..n)
            .map(|i| {
                let rdir = dir.path().join(format!("r{i}"));
                std::fs::create_dir_all(&rdir).unwrap();
                let pg_output = match pg {
                    Some((url, table)) => format!(
                        "    - name: postgresql\n      match: '*'\n      url: {url}\n      table: {table}\n      retry_base_backoff: 200ms\n      retry_max_backoff: 1s\n"
                    ),
                    None => String::new(),
                };
                let yaml = format!(
                    r#"service:
  data_dir: {data}
  http_listen: 127.0.0.1:0
  log_level: info
  grace: 5s
pipeline:
  inputs:
    - name: kubernetes_events
      tag: k8s.events
      kube_url: {url}
      kube_ca_file: {ca}
      kube_token_file: {token}
      interval_nsec: 100000000
      leader_election: on
      leader_election.lease_namespace: {NS}
      leader_election.lease_name: {LEASE}
      leader_election.identity: r{i}
      leader_election.lease_duration: {lease}
      leader_election.renew_deadline: {deadline}
      leader_election.retry_period: {retry}
      leader_election.handover_skew: 1s
  outputs:
    - name: file
      match: '*'
      path: {out}
      file: events.jsonl
{pg_output}"#,
                    data = rdir.join("data").display(),
                    url = emu.url(),
                    ca = ca.display(),
                    token = token.display(),
                    out = rdir.join("out").display(),
                    lease = t.lease,
                    deadline = t.deadline,
                    retry = t.retry,
                );
                let config = rdir.join("kubetrail.yaml");
                std::fs::write(&config, yaml).unwrap();
                Replica {
                    i,
                    dir: rdir,
                    config,
                    child: None,
                    runs: 0,
                }
            })
            .collect();
        Cluster {
            _dir: dir,
            emu,
            replicas,
        }
    }

    /// The replica whose process holds the Lease (`r<i>_<suffix>`) and that holder, if a
    /// running replica does.
    fn holder(&self) -> Option<usize> {
        self.holder_id().map(|(i, _)| i)
    }

    fn holder_id(&self) -> Option<(usize, String)> {
        let h = self.emu.lease_holder(NS, LEASE)?;
        let i: usize = h.strip_prefix('r')?.split('_').next()?.parse().ok()?;
        self.replicas
            .get(i)
            .filter(|r| r.child.is_some())
            .map(|r| (r.i, h.clone()))
    }

    /// Waits for a live leader (other than the holder `not`) whose output grows: it emits.
    async fn emitting_leader_except(&self, not: Option<&str>, within: Duration) -> (usize, String) {
        let end = Instant::now() + within;
        while Instant::now() < end {
            match self.holder_id() {
                Some((i, h)) if Some(h.as_str()) != not => {
                    let before = self.replicas[i].out_len();
                    let grew = wait_until(Duration::from_secs(3), || {
                        self.replicas[i].out_len() > before
                    })
                    .await;
                    if grew && self.holder_id().as_ref() == Some(&(i, h.clone())) {
                        return (i, h);
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        panic!("no emitting leader within {within:?}:\n{}", self.logs());
    }

    async fn emitting_leader(&self, within: Duration) -> usize {
        self.emitting_leader_except(None, within).await.0
    }

    /// Every Event occurrence in the union of the outputs, and how many times each appears in
    /// each replica's output.
    fn union(&self) -> (HashSet<Occurrence>, Vec<HashMap<String, usize>>) {
        let mut all = HashSet::new();
        let mut per = Vec::new();
        for r in &self.replicas {
            let mut ids = HashMap::new();
            for rec in r.records() {
                if rec["kind"] == "k8s_event" {
                    all.insert((
                        rec["uid"].as_str().unwrap().to_string(),
                        rec["resource_version"].as_str().unwrap().to_string(),
                    ));
                }
                *ids.entry(rec["id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            per.push(ids);
        }
        (all, per)
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for r in &self.replicas {
            let log = r.log();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("WARN")
                        || l.contains("ERROR")
                        || l.contains("Lease")
                        || l.contains("lead")
                })
                .collect();
            for l in &tail[tail.len().saturating_sub(12)..] {
                out.push_str(&format!("r{}: {l:.300}\n", r.i));
            }
        }
        out
    }

    fn stop_all(&mut self) {
        for r in &mut self.replicas {
            if r.child.is_some() {
                let status = r.stop("TERM");
                assert!(
                    status.success(),
                    "r{} exits cleanly after SIGTERM: {status:?}",
                    r.i
                );
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Creates and repeats Events until stopped: ~150 occurrences a second in two namespaces.
struct Writer {
    stop: Arc<AtomicBool>,
    made: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(emu: &Emulator) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(Mutex::new(Vec::new()));
        let (emu, s, m) = (emu.clone(), stop.clone(), made.clone());
        let task = tokio::spawn(async move {
            let mut refs: Vec<(String, String)> = Vec::new();
            let mut i = 0usize;
            while !s.load(Ordering::Relaxed) {
                for _ in 0..3 {
                    let e = if refs.is_empty() || fastrand::u8(..) < 110 {
                        i += 1;
                        let e = emu.create_event(EventSpec::simple(
                            ["a", "b"][i % 2],
                            "Pod",
                            format!("web-{i}"),
                            "BackOff",
                            format!("Back-off restarting failed container {i}"),
                        ));
                        refs.push((e.namespace.clone(), e.name.clone()));
                        e
                    } else {
                        let (ns, name) = refs[fastrand::usize(..refs.len())].clone();
                        emu.bump_event(&ns, &name).expect("bump")
                    };
                    m.lock().unwrap().push((e.uid, e.resource_version));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Writer { stop, made, task }
    }

    fn made(&self) -> usize {
        self.made.lock().unwrap().len()
    }

    async fn finish(self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.made.lock().unwrap().clone()
    }
}

fn pg_url() -> String {
    std::env::var("KUBETRAIL_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("KUBETRAIL_TEST_PG_URL is not set: run the tests with ./scripts/test, which starts PostgreSQL (scripts/services)")
    })
}

async fn pg_query(sql: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .query_one(sql, &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

/// Asserts what every scenario ends with: every occurrence made is in the union of the
/// outputs, and the records written more than once (by several replicas, or by one that led
/// again from a handover behind its own earlier commits) are at most what the leaders counted
/// as possibly replayed. Returns the number of repeats.
fn check_union(c: &Cluster, expected: &HashSet<(String, String)>, replayed: i64) -> usize {
    let (all, per) = c.union();
    let missing: Vec<_> = expected.difference(&all).collect();
    assert!(
        missing.is_empty(),
        "{} of {} occurrences missing, e.g. {:?}\n{}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(3)],
        c.logs()
    );
    let mut total: HashMap<&str, usize> = HashMap::new();
    for ids in &per {
        for (id, n) in ids {
            *total.entry(id.as_str()).or_default() += n;
        }
    }
    let repeats: usize = total.values().map(|n| n - 1).sum();
    assert!(
        repeats as i64 <= replayed,
        "{repeats} records repeated, more than the {replayed} the leaders counted as possibly replayed"
    );
    repeats
}

async fn kill_the_leader_ten_times(n: usize, pg: bool) {
    let table = format!("t_leader_{:08x}", fastrand::u32(..));
    let url = if pg { Some(pg_url()) } else { None };
    let mut c = Cluster::new(n, FAST, url.as_deref().map(|u| (u, table.as_str()))).await;
    let mut expected = HashSet::new();
    for i in 0..200 {
        let e = c.emu.create_event(EventSpec::simple(
            "a",
            "Pod",
            format!("pre-{i}"),
            "Pulled",
            "pulled",
        ));
        expected.insert((e.uid, e.resource_version));
    }
    for r in &mut c.replicas {
        r.start();
    }
    // Versions superseded before any list was taken are seen by nobody (a list shows the
    // latest version of each Event): the writer starts once the first leader has listed and
    // handed its position over (it commits nothing more before; a leader killed before would
    // leave the next one a fresh list, as on the very first start).
    let (mut leader, mut holder) = c
        .emitting_leader_except(None, Duration::from_secs(20))
        .await;
    assert!(
        wait_until(Duration::from_secs(5), || handed_over_rv(&c.emu).is_some()).await,
        "the first leader did not hand its position over:\n{}",
        c.logs()
    );
    let writer = Writer::start(&c.emu);
    let mut replayed = 0i64;
    let mut failovers = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(150 + fastrand::u64(..700))).await;
        replayed += c.replicas[leader]
            .metric("kubetrail_leader_handover_replayed_total")
            .unwrap_or(0);
        let killed = Instant::now();
        c.replicas[leader].stop("KILL");
        c.replicas[leader].start();
        // The next leader: another process (perhaps the restarted one).
        (leader, holder) = c
            .emitting_leader_except(Some(&holder), Duration::from_secs(20))
            .await;
        failovers.push(killed.elapsed());
    }
    let made = writer.finish().await;
    expected.extend(made);
    let complete = wait_until(Duration::from_secs(60), || expected.is_subset(&c.union().0)).await;
    for r in &c.replicas {
        replayed += r
            .metric("kubetrail_leader_handover_replayed_total")
            .unwrap_or(0);
    }
    if pg {
        let want = c
            .union()
            .1
            .iter()
            .flat_map(|m| m.keys().cloned())
            .collect::<HashSet<_>>()
            .len() as i64;
        let all_in = wait_until(Duration::from_secs(30), || {
            let n = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(pg_query(&format!("SELECT count(*) FROM {table}")))
            });
            n >= want
        })
        .await;
        let rows = pg_query(&format!("SELECT count(*) FROM {table}")).await;
        let distinct = pg_query(&format!("SELECT count(DISTINCT id) FROM {table}")).await;
        assert!(all_in, "PostgreSQL holds {rows} of {want} records");
        assert_eq!(rows, distinct, "a record twice in the shared table");
        assert_eq!(
            rows, want,
            "the shared table holds exactly the records of the union"
        );
    }
    // What is missing, if anything, for the failure message.
    let missing: Vec<_> = expected
        .difference(&c.union().0)
        .take(20)
        .cloned()
        .collect();
    c.stop_all();
    assert!(
        complete,
        "the union did not become complete: {} of {} occurrences missing, e.g. {missing:?}:\n{}",
        expected.difference(&c.union().0).count(),
        expected.len(),
        c.logs()
    );
    let repeats = check_union(&c, &expected, replayed);
    eprintln!(
        "{n} replicas, 10 SIGKILLs: {} occurrences, {repeats} repeated across replicas (at most {replayed} counted), failover {:?}",
        expected.len(),
        failovers
    );
    // A new leader emits within lease_duration plus a poll or two of the kill.
    for f in &failovers {
        assert!(*f < Duration::from_secs(8), "failover took {f:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_survive_ten_leader_kills() {
    kill_the_leader_ten_times(2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_ten_leader_kills_into_a_shared_postgresql_table() {
    kill_the_leader_ten_times(3, true).await;
}

/// The Lease annotation's position of the (single) stream: its resourceVersion.
fn handed_over_rv(emu: &Emulator) -> Option<String> {
    let lease = emu.lease(NS, LEASE)?;
    let text = lease["metadata"]["annotations"]["kubetrail.io/checkpoint"].as_str()?;
    let h: serde_json::Value = serde_json::from_str(text).ok()?;
    h["streams"].as_object()?.values().next()?["position"]["rv"]
        .as_str()
        .map(str::to_string)
}

/// What a failover may repeat, exactly: the records the killed leader committed after its last
/// handover write, each with the same id; and nothing after a graceful shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_repeats_exactly_what_was_committed_after_the_last_handover() {
    // Slow renewals, so that the test can commit between two of them.
    let slow = Timings {
        lease: "3s",
        deadline: "2500ms",
        retry: "2s",
        lease_duration: Duration::from_secs(3),
    };
    let mut c = Cluster::new(2, slow, None).await;
    c.replicas[0].start();
    for i in 0..30 {
        c.emu.create_event(EventSpec::simple(
            "a",
            "Pod",
            format!("first-{i}"),
            "Pulled",
            "x",
        ));
    }
    assert!(
        wait_until(Duration::from_secs(15), || c.replicas[0].records().len()
            >= 30)
        .await,
        "{}",
        c.logs()
    );
    c.replicas[1].start();
    let ids = |r: &Replica| -> HashSet<String> {
        r.records()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut after = Vec::new();
    let mut handed = None;
    for attempt in 0..5 {
        // Wait for a renewal that hands over everything committed so far.
        // (The emulator's resourceVersions are numbers; the test may compare them.)
        let all_handed = wait_until(Duration::from_secs(5), || {
            let newest = c.replicas[0]
                .records()
                .iter()
                .filter_map(|r| r["resource_version"].as_str()?.parse::<u64>().ok())
                .max();
            let handed = handed_over_rv(&c.emu).and_then(|rv| rv.parse::<u64>().ok());
            newest.is_some() && handed >= newest
        })
        .await;
        assert!(
            all_handed,
            "no handover of the committed position:\n{}",
            c.logs()
        );
        let before = handed_over_rv(&c.emu);
        // Right after a renewal: commit 40 more before the next one (2 s later).
        after.clear();
        for i in 0..40 {
            let e = c.emu.create_event(EventSpec::simple(
                "a",
                "Pod",
                format!("after-{attempt}-{i}"),
                "Pulled",
                "x",
            ));
            after.push(format!("{}:{}", e.uid, e.resource_version));
        }
        let committed = wait_until(Duration::from_millis(1200), || {
            let have = ids(&c.replicas[0]);
            after.iter().all(|a| have.contains(a))
        })
        .await;
        if committed && handed_over_rv(&c.emu) == before {
            c.replicas[0].stop("KILL");
            handed = Some(before);
            break;
        }
    }
    let Some(before) = handed else {
        panic!("could not commit between two renewals:\n{}", c.logs());
    };
    // The last handover of the killed leader (a renewal may have slipped in before the kill).
    let last_handover = handed_over_rv(&c.emu);
    let old = ids(&c.replicas[0]);
    // r1 takes over after lease_duration and resumes from the last handover.
    assert!(
        wait_until(Duration::from_secs(10), || c.holder() == Some(1)).await,
        "{}",
        c.logs()
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            let have = ids(&c.replicas[1]);
            after.iter().all(|a| have.contains(a))
        })
        .await
    );
    let repeated: HashSet<String> = ids(&c.replicas[1]).intersection(&old).cloned().collect();
    let want: HashSet<String> = if last_handover == before {
        after.iter().cloned().collect()
    } else {
        HashSet::new()
    };
    assert_eq!(
        repeated, want,
        "exactly the records committed after the last handover are repeated"
    );
    let replayed = c.replicas[1]
        .metric("kubetrail_leader_handover_replayed_total")
        .unwrap();
    assert!(replayed >= want.len() as i64, "counted {replayed}");

    // A graceful shutdown releases the Lease: r0 (restarted, standing by) takes it at its next
    // poll, not after expiry, with the final positions: no repeat.
    c.replicas[0].start();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut last_of_b = Vec::new();
    for i in 0..20 {
        let e = c.emu.create_event(EventSpec::simple(
            "b",
            "Pod",
            format!("before-term-{i}"),
            "Pulled",
            "x",
        ));
        last_of_b.push(format!("{}:{}", e.uid, e.resource_version));
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            let have = ids(&c.replicas[1]);
            last_of_b.iter().all(|a| have.contains(a))
        })
        .await
    );
    let b_before = ids(&c.replicas[1]);
    let status = c.replicas[1].stop("TERM");
    assert!(status.success());
    let released = Instant::now();
    let e = c.emu.create_event(EventSpec::simple(
        "b",
        "Pod",
        "after-release",
        "Pulled",
        "x",
    ));
    let id = format!("{}:{}", e.uid, e.resource_version);
    assert!(
        wait_until(Duration::from_secs(8), || ids(&c.replicas[0]).contains(&id)).await,
        "{}",
        c.logs()
    );
    let took = released.elapsed();
    // At the standby's next poll: within 2.2 × retry_period (plus the commit), where an
    // expired Lease would take lease_duration after the standby's last observation.
    assert!(took < Duration::from_millis(5000), "{took:?}");
    let again: Vec<_> = ids(&c.replicas[0])
        .difference(&old)
        .filter(|id| b_before.contains(*id))
        .cloned()
        .collect();
    assert!(again.is_empty(), "repeated after a release: {again:?}");
    assert_eq!(
        c.replicas[0].metric("kubetrail_leader_handover_replayed_total"),
        Some(0),
        "nothing may have been replayed after a release"
    );
    c.stop_all();
}

/// The first leader of a Lease without a position hands its first commit over at once, not
/// at its next renewal: killed right after it, the next leader watches on from there and sees
/// every version of the Events changed meanwhile (a fresh list would show only the latest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_before_its_first_renewal_has_handed_its_position_over() {
    // Renewals 4 s apart: the first one after emission starts is ~2 s away.
    let slow = Timings {
        lease: "6s",
        deadline: "5s",
        retry: "4s",
        lease_duration: Duration::from_secs(6),
    };
    let mut c = Cluster::new(2, slow, None).await;
    let mut made: Vec<kubetrail_emulator::EventRef> = (0..5)
        .map(|i| {
            c.emu.create_event(EventSpec::simple(
                "a",
                "Pod",
                format!("web-{i}"),
                "BackOff",
                "x",
            ))
        })
        .collect();
    c.replicas[0].start();
    assert!(
        wait_until(Duration::from_secs(20), || c.replicas[0].out_len() > 0).await,
        "{}",
        c.logs()
    );
    assert!(
        wait_until(Duration::from_secs(1), || handed_over_rv(&c.emu).is_some()).await,
        "the first commit was not handed over at once:\n{}",
        c.logs()
    );
    c.replicas[0].stop("KILL");
    // Each Event changes three times before anyone leads again.
    let names: Vec<String> = made.iter().map(|e| e.name.clone()).collect();
    for _ in 0..3 {
        for name in &names {
            made.push(c.emu.bump_event("a", name).expect("bump"));
        }
    }
    c.replicas[1].start();
    let expected: HashSet<Occurrence> = made
        .into_iter()
        .map(|e| (e.uid, e.resource_version))
        .collect();
    let complete = wait_until(Duration::from_secs(20), || expected.is_subset(&c.union().0)).await;
    // The standby could only take over lease_duration after it first saw the Lease, which
    // was after the handover was written: the gap it reports is at least that.
    let gap = c.replicas[1].metric("kubetrail_leader_takeover_gap_milliseconds");
    c.stop_all();
    assert!(complete, "{}", c.logs());
    check_union(&c, &expected, i64::MAX);
    assert!(
        gap.is_some_and(|g| (6_000..20_000).contains(&g)),
        "takeover gap {gap:?} ms"
    );
}

/// A leader frozen past lease_duration (SIGSTOP), then thawed: what it received after it was
/// frozen is never committed (its fence closed while it slept); the new leader has it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_commits_nothing_after_it_thaws() {
    let mut c = Cluster::new(2, FAST, None).await;
    c.replicas[0].start();
    c.emu
        .create_event(EventSpec::simple("a", "Pod", "first", "Pulled", "x"));
    assert_eq!(c.emitting_leader(Duration::from_secs(15)).await, 0);
    let writer = Writer::start(&c.emu);
    c.replicas[1].start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.replicas[0].signal("STOP");
    let frozen_at = writer.made();
    // r1 takes over and emits what was made after the freeze.
    let took_over = wait_until(Duration::from_secs(10), || c.holder() == Some(1)).await;
    assert!(took_over, "{}", c.logs());
    assert!(wait_until(Duration::from_secs(5), || writer.made() > frozen_at + 3).await);
    let first_after: String = {
        let m = writer.made.lock().unwrap();
        let (u, v) = &m[frozen_at + 3];
        format!("{u}:{v}")
    };
    assert!(
        wait_until(Duration::from_secs(5), || c.replicas[1]
            .records()
            .iter()
            .any(|r| r["id"] == first_after.as_str()))
        .await
    );
    tokio::time::sleep(FAST.lease_duration).await;
    let len_frozen = c.replicas[0].out_len();
    c.replicas[0].signal("CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let made = writer.finish().await;
    let after_freeze: HashSet<String> = made[frozen_at..]
        .iter()
        .map(|(u, v)| format!("{u}:{v}"))
        .collect();
    let late: Vec<String> = c.replicas[0]
        .records()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .filter(|id| after_freeze.contains(id))
        .collect();
    assert!(
        late.is_empty(),
        "the thawed leader committed {} records it received after it was frozen, e.g. {:?}",
        late.len(),
        late.first()
    );
    assert_eq!(c.replicas[0].metric("kubetrail_leader"), Some(0));
    let fenced = c.replicas[0]
        .metric("kubetrail_leader_fenced_batches_total")
        .unwrap_or(0);
    let grew = c.replicas[0].out_len() - len_frozen;
    eprintln!(
        "thawed leader: {fenced} batches fenced, its output grew by {grew} bytes (queued before the freeze)"
    );
    let readyz = c.replicas[0].get("/readyz").unwrap_or_default();
    assert!(
        readyz.starts_with("HTTP/1.0 200") || readyz.starts_with("HTTP/1.1 200"),
        "{readyz}"
    );
    assert!(readyz.contains("kubernetes_events.0: standby"), "{readyz}");
    let expected: HashSet<(String, String)> = made.into_iter().collect();
    wait_until(Duration::from_secs(20), || expected.is_subset(&c.union().0)).await;
    let replayed: i64 = c
        .replicas
        .iter()
        .filter_map(|r| r.metric("kubetrail_leader_handover_replayed_total"))
        .sum();
    c.stop_all();
    check_union(&c, &expected, replayed);
}

/// A Lease annotated by hand (409 on the next renewal), a failing Lease API for less and for
/// more than renew_deadline, a Lease deleted by hand and one taken by an intruder: collection
/// goes on with nothing lost, never two leaders emitting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_api_errors_deletion_and_an_intruder_are_survived() {
    let mut c = Cluster::new(2, FAST, None).await;
    for r in &mut c.replicas {
        r.start();
    }
    c.emu
        .create_event(EventSpec::simple("a", "Pod", "first", "Pulled", "x"));
    let leader = c.emitting_leader(Duration::from_secs(15)).await;
    let writer = Writer::start(&c.emu);
    let transitions = |c: &Cluster, i: usize| {
        c.replicas[i]
            .metric("kubetrail_leader_transitions_total")
            .unwrap_or(-1)
    };
    let t0 = transitions(&c, leader);

    // 409: someone annotates the Lease; the holder reads it back and keeps leading.
    assert!(c.emu.annotate_lease(NS, LEASE, "team", "sre"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.holder(), Some(leader));
    assert_eq!(
        transitions(&c, leader),
        t0,
        "no leadership change after a 409"
    );
    assert_eq!(
        c.emu.lease(NS, LEASE).unwrap()["metadata"]["annotations"]["team"],
        "sre"
    );

    // 5xx for less than renew_deadline: nothing changes.
    c.emu.set_faults(Faults {
        lease_fail_status: Some(503),
        ..Default::default()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.emu.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        transitions(&c, leader),
        t0,
        "no leadership change after a short outage"
    );

    // 5xx for longer: the leader stops emitting; after the outage someone leads again.
    c.emu.set_faults(Faults {
        lease_fail_status: Some(500),
        ..Default::default()
    });
    assert!(
        wait_until(Duration::from_secs(3), || c.replicas[leader]
            .metric("kubetrail_leader")
            == Some(0))
        .await,
        "the leader stood down when it could not renew"
    );
    let len = c.replicas[leader].out_len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let still = c.replicas[leader].out_len();
    // Without an answer from the Lease API for lease_duration + renew_deadline, no replica
    // can lead or take over: none is ready, and each says why.
    let unready = |c: &Cluster| {
        c.replicas.iter().all(|r| {
            let body = r.get("/readyz").unwrap_or_default();
            body.split_whitespace().nth(1) == Some("503")
                && body.contains("kubernetes_events.0/lease:")
        })
    };
    assert!(
        wait_until(Duration::from_secs(6), || unready(&c)).await,
        "/readyz while the Lease API fails: {:?}",
        c.replicas
            .iter()
            .map(|r| r.get("/readyz"))
            .collect::<Vec<_>>()
    );
    c.emu.set_faults(Faults::default());
    let leader = c.emitting_leader(Duration::from_secs(10)).await;
    assert!(
        wait_until(Duration::from_secs(5), || c.replicas.iter().all(|r| r
            .get("/readyz")
            .is_some_and(|b| b.split_whitespace().nth(1) == Some("200"))))
        .await,
        "ready again once the Lease API answers: {:?}",
        c.replicas
            .iter()
            .map(|r| r.get("/readyz"))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "after the outage r{leader} leads; the old leader's output moved by {} bytes while fenced",
        still - len
    );

    // Deleted by hand: recreated, collection goes on.
    assert!(c.emu.delete_lease(NS, LEASE));
    let leader = c.emitting_leader(Duration::from_secs(10)).await;
    assert!(c.emu.lease(NS, LEASE).is_some());

    // An intruder: the leader stops at its next renewal; after lease_duration a replica leads.
    assert!(c.emu.set_lease_holder(NS, LEASE, "intruder"));
    assert!(
        wait_until(Duration::from_secs(2), || c.replicas[leader]
            .metric("kubetrail_leader")
            == Some(0))
        .await,
        "the leader stood down for the intruder"
    );
    let back = c.emitting_leader(Duration::from_secs(10)).await;
    eprintln!("r{back} leads after the intruder");

    let made = writer.finish().await;
    let expected: HashSet<(String, String)> = made.into_iter().collect();
    // (check_union below names what is missing.)
    wait_until(Duration::from_secs(20), || expected.is_subset(&c.union().0)).await;
    let replayed: i64 = c
        .replicas
        .iter()
        .filter_map(|r| r.metric("kubetrail_leader_handover_replayed_total"))
        .sum();
    c.stop_all();
    check_union(&c, &expected, replayed);
}

/// A new leader whose handed-over resourceVersion has expired (410) relists, writes a `gap`
/// record, and does not make again the Events a previous leader already recorded: those last
/// seen more than `handover_skew` before the handed-over time of the stream's last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_handover_relists_without_recording_the_old_events_again() {
    let mut c = Cluster::new(2, FAST, None).await;
    c.replicas[0].start();
    let ids = |r: &Replica| -> HashSet<String> {
        r.records()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_string())
            .collect()
    };
    let id = |e: &kubetrail_emulator::EventRef| format!("{}:{}", e.uid, e.resource_version);
    let old: Vec<String> = (0..30)
        .map(|i| {
            id(&c.emu.create_event(EventSpec::simple(
                "a",
                "Pod",
                format!("old-{i}"),
                "Pulled",
                "x",
            )))
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(15), || {
            let have = ids(&c.replicas[0]);
            old.iter().all(|o| have.contains(o))
        })
        .await,
        "{}",
        c.logs()
    );
    // More than handover_skew (1 s) later, in whole seconds (legacy Event times): the last
    // record, handed over with its time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let last = c
        .emu
        .create_event(EventSpec::simple("a", "Pod", "last", "Pulled", "x"));
    let last_rv: u64 = last.resource_version.parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || handed_over_rv(&c.emu)
            .and_then(|rv| rv.parse::<u64>().ok())
            >= Some(last_rv))
        .await,
        "the last record was not handed over:\n{}",
        c.logs()
    );
    c.replicas[1].start();
    assert!(
        wait_until(Duration::from_secs(10), || c.replicas[1]
            .metric("kubetrail_leader")
            == Some(0))
        .await
    );
    c.replicas[0].stop("KILL");
    // Before the Lease expires: Events the new leader must record, then a compaction that
    // expires the handed-over resourceVersion.
    let new: Vec<String> = (0..10)
        .map(|i| {
            id(&c.emu.create_event(EventSpec::simple(
                "b",
                "Pod",
                format!("new-{i}"),
                "Pulled",
                "x",
            )))
        })
        .collect();
    c.emu.compact();
    assert_eq!(c.holder(), None, "r1 took over before the compaction");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let have = ids(&c.replicas[1]);
            new.iter().all(|n| have.contains(n))
        })
        .await,
        "the new leader did not record the new Events:\n{}",
        c.logs()
    );
    let records = c.replicas[1].records();
    assert!(
        records.iter().any(|r| r["kind"] == "gap"),
        "no gap record after the 410"
    );
    let have = ids(&c.replicas[1]);
    assert!(
        have.contains(&id(&last)),
        "the last record (within the skew) is repeated"
    );
    let again: Vec<&String> = old.iter().filter(|o| have.contains(*o)).collect();
    assert!(
        again.is_empty(),
        "{} old Events recorded again after the relist, e.g. {:?}",
        again.len(),
        again.first()
    );
    assert_eq!(
        c.replicas[1].metric("kubetrail_leader_handover_skipped_total"),
        Some(old.len() as i64)
    );
    c.stop_all();
}
