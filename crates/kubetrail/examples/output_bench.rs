//! Drives one output directly with synthetic records, for `bench/pg-output.sh` and
//! `bench/nats-output.sh` (not part of kubetrail itself):
//!
//! ```text
//! output_bench postgresql URL N [BATCH]   N records into a new table, batches of BATCH (2000)
//! output_bench nats URL N [BATCH]         N acknowledged JetStream messages into a new stream
//! ```
//! Records are realistic Event records of about 1.5 KiB, each with its own id, delivered the
//! way the output runner does (one batch at a time, each complete before the next). Prints
//! records/s, MiB/s and the process's peak RSS.

use std::time::Instant;

use kubetrail::outputs::nats::NatsOutput;
use kubetrail::outputs::postgresql::PostgresqlOutput;
use kubetrail::pipeline::Output;
use kubetrail_core::config::{Section, SectionKind};
use kubetrail_state::QueueItem;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn record(i: u64) -> QueueItem {
    let id = format!("{:08x}-7c1e-4d2a-9f3b-{:012x}:{}", i as u32, i, 100_000 + i);
    let ns = ["default", "kube-system", "payments", "web"][(i % 4) as usize];
    let mut data = format!(
        concat!(
            r#"{{"id":"{id}","time":"2026-11-27T00:30:51.{us:06}Z","kind":"k8s_event","source":"kubernetes_events.0","tag":"k8s.events","#,
            r#""namespace":"{ns}","name":"web-{i}.18ebbf2a","uid":"{i:08x}","resource_version":"{rv}","api":"v1","observed":"list","#,
            r#""reason":"BackOff","type":"Warning","message":"Back-off pulling image \"registry.example/web:1.{i}\"","#,
            r#""involved_object":{{"kind":"Pod","name":"web-{i}","namespace":"{ns}","uid":"p-{i}","api_version":"v1","field_path":"spec.containers{{web}}"}},"#,
            r#""reporting_controller":"kubelet","reporting_instance":"node-{n}","count":3,"first_time":"2026-11-27T00:29:51Z","last_time":"2026-11-27T00:30:51Z","#,
            r#""object":{{"kind":"Event","apiVersion":"v1","metadata":{{"name":"web-{i}.18ebbf2a","namespace":"{ns}","uid":"{i:08x}","resourceVersion":"{rv}","#,
            r#""creationTimestamp":"2026-11-27T00:29:51Z","managedFields":[{{"manager":"kubelet","operation":"Update","apiVersion":"v1","time":"2026-11-27T00:30:51Z"}}]}},"#,
            r#""involvedObject":{{"kind":"Pod","namespace":"{ns}","name":"web-{i}","uid":"p-{i}","apiVersion":"v1","resourceVersion":"4711","fieldPath":"spec.containers{{web}}"}},"#,
            r#""reason":"BackOff","message":"Back-off pulling image \"registry.example/web:1.{i}\"","source":{{"component":"kubelet","host":"node-{n}"}},"#,
            r#""firstTimestamp":"2026-11-27T00:29:51Z","lastTimestamp":"2026-11-27T00:30:51Z","count":3,"type":"Warning","eventTime":null,"#,
            r#""reportingComponent":"kubelet","reportingInstance":"node-{n}","annotations":"#
        ),
        id = id,
        us = i % 1_000_000,
        ns = ns,
        i = i,
        rv = 100_000 + i,
        n = i % 50,
    );
    // Pad to about 1.5 KiB with a realistic annotation value.
    let pad = 1536usize.saturating_sub(data.len() + 4);
    data.push('"');
    data.push_str(&"a".repeat(pad));
    data.push_str("\"}}");
    QueueItem {
        seq: i + 1,
        id,
        data: data.into_bytes().into(),
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |k| k / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: output_bench postgresql|nats URL N [BATCH]".into());
    }
    let (kind, url) = (args[1].as_str(), args[2].as_str());
    let n: u64 = args[3].parse()?;
    let batch: u64 = args.get(4).map(|b| b.parse()).transpose()?.unwrap_or(2000);
    let tag = format!("{:08x}", fastrand::u32(..));
    let mut output: Box<dyn Output> = match kind {
        "postgresql" => {
            let table = format!("bench_{tag}");
            let mut s = Section::from_pairs(
                SectionKind::Output,
                "postgresql",
                &[("url", url), ("table", &table)],
            );
            Box::new(PostgresqlOutput::from_section(&mut s)?)
        }
        "nats" => {
            let stream = format!("BENCH{tag}");
            let subject = format!("bench{tag}.{{kind}}.{{namespace}}");
            let mut s = Section::from_pairs(
                SectionKind::Output,
                "nats",
                &[("url", url), ("stream", &stream), ("subject", &subject)],
            );
            Box::new(NatsOutput::from_section(&mut s)?)
        }
        other => return Err(format!("unknown output '{other}'").into()),
    };
    output.open(None).await.map_err(|e| e.to_string())?;
    // One warm-up batch: connecting, creating the table or stream.
    let warm: Vec<QueueItem> = (n..n + 10).map(record).collect();
    output.deliver(&warm).await.map_err(|e| e.to_string())?;

    // Records are made batch by batch (outside the timing), as a queue read would hand them.
    let mut bytes = 0usize;
    let mut busy = std::time::Duration::ZERO;
    let mut from = 0u64;
    while from < n {
        let chunk: Vec<QueueItem> = (from..n.min(from + batch)).map(record).collect();
        bytes += chunk.iter().map(|r| r.data.len()).sum::<usize>();
        from += chunk.len() as u64;
        let start = Instant::now();
        output.deliver(&chunk).await.map_err(|e| e.to_string())?;
        busy += start.elapsed();
    }
    let secs = busy.as_secs_f64();
    output.close().await.map_err(|e| e.to_string())?;
    println!(
        "{kind} output: {n} records of {} bytes on average, batches of {batch}",
        bytes / n.max(1) as usize
    );
    println!("  time in deliver: {secs:.2} s");
    println!(
        "  throughput:  {:.0} records/s ({:.1} MiB/s)",
        n as f64 / secs,
        bytes as f64 / secs / 1048576.0
    );
    println!("  peak RSS:    {:.1} MiB (this process)", peak_rss_mib());
    Ok(())
}
