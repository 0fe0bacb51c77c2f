//! Load generator for the audit benchmarks under `bench/` (not part of kubetrail itself):
//!
//! ```text
//! audit_load gen-certs DIR                      CA, server certificate and key, token file
//! audit_load gen-log FILE BYTES TEMPLATE        a realistic audit log of BYTES from real lines
//! audit_load post URL CA TOKEN CONNS BATCH TOTAL TEMPLATE
//!                                               POST EventLists of BATCH events on CONNS
//!                                               keep-alive connections until TOTAL events
//!                                               are answered 200; prints events/s
//! ```
//! TEMPLATE is a JSON-lines audit log (real apiserver lines); every generated event is one of
//! its lines with the `auditID` replaced by a unique random-looking (version 4) UUID, so bodies are the
//! real shapes and sizes and no two events share a dedup key. Each pass over the template
//! moves its timestamps (`requestReceivedTimestamp`, `stageTimestamp`, same format and length)
//! forward by the template's time span plus a second, so time advances through the generated
//! log as it does through a real one instead of repeating the template's few seconds.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use kubetrail_net::{HttpClient, TlsClientSettings};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Template lines split around their auditID value, so an event is made by two copies and a
/// 36-byte id.
struct Template {
    lines: Vec<Line>,
    /// How far each pass over the template moves its timestamps, in microseconds.
    period_us: i64,
}

/// What precedes a timestamp value the generator moves.
const TS_KEY: &[u8] = b"Timestamp\":\"";
/// `2026-11-27T00:16:44.307833Z`
const TS_LEN: usize = 27;

/// The timestamp values in `line` (microsecond RFC 3339, 27 bytes): where each starts and
/// its time in microseconds since the epoch.
fn timestamps(line: &[u8]) -> Vec<(usize, i64)> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(p) = line[i..].windows(TS_KEY.len()).position(|w| w == TS_KEY) {
        let start = i + p + TS_KEY.len();
        if let Some(b) = line.get(start..start + TS_LEN)
            && b[TS_LEN - 1] == b'Z'
            && let Ok(s) = std::str::from_utf8(b)
            && let Ok(t) =
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        {
            found.push((start, (t.unix_timestamp_nanos() / 1000) as i64));
        }
        i = start;
    }
    found
}

/// splitmix64's finalizer: a bijection on u64 that scatters consecutive inputs.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes `unix_us` as `2026-11-27T00:16:44.307833Z` (27 bytes) into `out`.
fn write_ts(unix_us: i64, out: &mut [u8]) {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix_us.div_euclid(1_000_000)) else {
        return;
    };
    let micros = unix_us.rem_euclid(1_000_000) as u32;
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, t.year().max(0) as u32);
    put(5, 2, u32::from(u8::from(t.month())));
    put(8, 2, u32::from(t.day()));
    put(11, 2, u32::from(t.hour()));
    put(14, 2, u32::from(t.minute()));
    put(17, 2, u32::from(t.second()));
    put(20, 6, micros);
}

/// One template line: the text before and after its auditID value, and its timestamps
/// (offset in the generated event, which always has a 36-byte id, and time in microseconds),
/// found once so generating an event is copies and digit writes.
struct Line {
    head: Vec<u8>,
    tail: Vec<u8>,
    stamps: Vec<(usize, i64)>,
}

impl Template {
    fn load(path: &str) -> Result<Template, Error> {
        let text = std::fs::read(path)?;
        let mut lines = Vec::new();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let needle = b"\"auditID\":\"";
            let Some(pos) = line.windows(needle.len()).position(|w| w == needle) else {
                continue;
            };
            let start = pos + needle.len();
            let Some(len) = line[start..].iter().position(|b| *b == b'"') else {
                continue;
            };
            let (head, tail) = (line[..start].to_vec(), line[start + len..].to_vec());
            let mut stamps = timestamps(&head);
            stamps.extend(
                timestamps(&tail)
                    .into_iter()
                    .map(|(at, us)| (head.len() + 36 + at, us)),
            );
            lines.push(Line { head, tail, stamps });
        }
        if lines.is_empty() {
            return Err("the template has no audit lines".into());
        }
        let stamps: Vec<i64> = lines
            .iter()
            .flat_map(|l| l.stamps.iter().map(|(_, us)| *us))
            .collect();
        let span = stamps.iter().max().unwrap_or(&0) - stamps.iter().min().unwrap_or(&0);
        Ok(Template {
            lines,
            period_us: span + 1_000_000,
        })
    }

    /// Appends event number `n` (a unique auditID) to `out`.
    fn write(&self, n: u64, out: &mut Vec<u8>) {
        let line = &self.lines[(n % self.lines.len() as u64) as usize];
        let pass = (n / self.lines.len() as u64) as i64;
        let start = out.len();
        out.extend_from_slice(&line.head);
        // A version-4 UUID as the apiserver makes them (random, so dedup keys land all over
        // the key space as real ones do; counting ids would only ever append to the right
        // edge of the dedup index). `a` is a bijection of `n`, so ids never repeat; its 64
        // bits fill the first 60 random bits and 4 bits of the clock sequence.
        let a = mix64(n);
        let b = mix64(n ^ 0x9e37_79b9_7f4a_7c15);
        // 8-4-4-4-12 hex digits, written without the formatting machinery (a tenth of the
        // generator's CPU with write!).
        let hex = |out: &mut Vec<u8>, v: u64, digits: u32| {
            for i in (0..digits).rev() {
                out.push(b"0123456789abcdef"[((v >> (4 * i)) & 0xf) as usize]);
            }
        };
        hex(out, a >> 32, 8);
        out.push(b'-');
        hex(out, (a >> 16) & 0xffff, 4);
        out.extend_from_slice(b"-4");
        hex(out, a & 0x0fff, 3);
        out.push(b'-');
        hex(out, 0x8000 | (((a >> 12) & 0xf) << 10) | (b & 0x3ff), 4);
        out.push(b'-');
        hex(out, (b >> 16) & 0xffff_ffff_ffff, 12);
        out.extend_from_slice(&line.tail);
        if pass > 0 {
            for &(at, us) in &line.stamps {
                let at = start + at;
                write_ts(us + pass * self.period_us, &mut out[at..at + TS_LEN]);
            }
        }
    }
}

fn gen_certs(dir: &str) -> Result<(), Error> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    std::fs::create_dir_all(dir)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
        .signed_by(&key, &ca, &ca_key)?;
    std::fs::write(format!("{dir}/ca.crt"), ca.pem())?;
    std::fs::write(format!("{dir}/tls.crt"), cert.pem())?;
    std::fs::write(format!("{dir}/tls.key"), key.serialize_pem())?;
    std::fs::write(format!("{dir}/tokens"), "bench-token\n")?;
    Ok(())
}

fn gen_log(file: &str, bytes: u64, template: &str) -> Result<(), Error> {
    let t = Template::load(template)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(file)?);
    let (mut written, mut n, mut buf) = (0u64, 0u64, Vec::with_capacity(1 << 16));
    while written < bytes {
        buf.clear();
        t.write(n, &mut buf);
        buf.push(b'\n');
        out.write_all(&buf)?;
        written += buf.len() as u64;
        n += 1;
    }
    out.flush()?;
    println!("{n} lines, {written} bytes");
    Ok(())
}

/// About how many bytes a generated event takes in a body (the template's lines average
/// ~1,620), for sizing.
const EVENT_BYTES: u64 = 1700;
/// Up to how many bytes of request bodies `post` builds before it starts the clock.
const PREBUILD_MAX_BYTES: u64 = 4 << 30;

/// An `audit.k8s.io/v1` EventList of `count` generated events, the first being number `first`.
fn event_list(template: &Template, first: u64, count: u64) -> Bytes {
    let mut body = Vec::with_capacity((count * EVENT_BYTES) as usize);
    body.extend_from_slice(
        br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#,
    );
    for i in 0..count {
        if i > 0 {
            body.push(b',');
        }
        template.write(first + i, &mut body);
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

async fn post(args: &[String]) -> Result<(), Error> {
    let [url, ca, token, conns, batch, total, template] = args else {
        return Err("post URL CA TOKEN CONNS BATCH TOTAL TEMPLATE".into());
    };
    let conns: u64 = conns.parse()?;
    let batch: u64 = batch.parse()?;
    let total: u64 = total.parse()?;
    if batch == 0 || conns == 0 {
        return Err("CONNS and BATCH must be at least 1".into());
    }
    let template = Arc::new(Template::load(template)?);
    let tls = TlsClientSettings {
        ca_file: Some(ca.into()),
        ..Default::default()
    };
    let client = HttpClient::new(url, &tls)?;
    // The bodies are made before the clock starts when they fit in memory (1.5 GB for the
    // default million events): on a 2-core machine that kubetrail shares with this generator,
    // every cycle spent writing bodies during the run is taken from kubetrail. The bytes sent
    // are the same either way.
    let bodies: Option<Arc<Vec<Bytes>>> = (total.saturating_mul(EVENT_BYTES) <= PREBUILD_MAX_BYTES)
        .then(|| {
            Arc::new(
                (0..total.div_ceil(batch))
                    .map(|k| event_list(&template, k * batch, batch.min(total - k * batch)))
                    .collect(),
            )
        });
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let token = Arc::new(format!("Bearer {token}"));
    let (cpu0, machine0) = (own_cpu(), machine_ticks());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, template, bodies, next, done, refused, token) = (
            client.clone(),
            template.clone(),
            bodies.clone(),
            next.clone(),
            done.clone(),
            refused.clone(),
            token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    return Ok::<_, Error>(latencies);
                }
                let body = match &bodies {
                    Some(b) => b[(first / batch) as usize].clone(),
                    None => event_list(&template, first, batch.min(total - first)),
                };
                loop {
                    let req = http::Request::post("/audit?timeout=30s")
                        .header("content-type", "application/json")
                        .header("authorization", token.as_str())
                        .body(Full::new(body.clone()))?;
                    let t = Instant::now();
                    let resp = client.send(req).await?;
                    let status = resp.status().as_u16();
                    let _ = resp.into_body().read_to_end(1 << 16).await;
                    latencies.push(t.elapsed());
                    if status == 200 {
                        done.fetch_add(batch.min(total - first), Ordering::Relaxed);
                        break;
                    }
                    // 503: the queue is full; retry like the apiserver (sooner, it's a bench).
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu1, machine1) = (own_cpu(), machine_ticks());
    latencies.sort();
    let p = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    let events = done.load(Ordering::Relaxed);
    println!(
        "{events} events in {secs:.2} s = {:.0} events/s ({conns} connections, {batch} per EventList, each answered only when durable); 503s {}; request latency p50 {:?} p99 {:?}",
        events as f64 / secs,
        refused.load(Ordering::Relaxed),
        p(0.5),
        p(0.99)
    );
    println!(
        "load generator CPU during the run: {:.2} s user, {:.2} s system",
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1
    );
    if let (Some(a), Some(b)) = (machine0, machine1) {
        let d: Vec<u64> = a
            .iter()
            .zip(&b)
            .map(|(a, b)| b.saturating_sub(*a))
            .collect();
        let all: u64 = d.iter().sum::<u64>().max(1);
        // user nice system idle iowait irq softirq steal
        println!(
            "machine during the run: {:.0} % idle, {:.0} % stolen by the hypervisor",
            100.0 * (d[3] + d[4]) as f64 / all as f64,
            100.0 * d[7] as f64 / all as f64
        );
    }
    Ok(())
}

/// This process's CPU time so far: (user, system) seconds.
fn own_cpu() -> (f64, f64) {
    // SAFETY: `rusage` is plain integers, for which all-zero bytes are a valid value;
    // getrusage only writes into the struct it is given.
    let (rc, ru) = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut ru), ru)
    };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// The machine's CPU time counters (user nice system idle iowait irq softirq steal), from
/// the first line of /proc/stat; `None` where there is none.
fn machine_ticks() -> Option<[u64; 8]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut fields = stat.lines().next()?.split_whitespace().skip(1);
    let mut out = [0u64; 8];
    for v in &mut out {
        *v = fields.next()?.parse().ok()?;
    }
    Some(out)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen-certs") if args.len() == 2 => gen_certs(&args[1]),
        Some("gen-log") if args.len() == 4 => gen_log(&args[1], args[2].parse()?, &args[3]),
        Some("post") => tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?.block_on(post(&args[1..])),
        _ => Err("usage: audit_load gen-certs DIR | gen-log FILE BYTES TEMPLATE | post URL CA TOKEN CONNS BATCH TOTAL TEMPLATE".into()),
    }
}
