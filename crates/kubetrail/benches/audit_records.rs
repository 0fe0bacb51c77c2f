//! What one audit line costs on its way to a queue, step by step: parsing (typed, only the
//! fields the record needs), normalizing into a record, the built-in Secrets redaction that
//! runs first in every pipeline, and encoding the record as the JSON line outputs receive.
//! Lines are the real apiserver audit lines of the shared fixtures
//! (`$KUBETRAIL_FIXTURES/audit/kube-apiserver-1.28/audit-sample-200.jsonl`).
//!
//! `cargo bench -p kubetrail --bench audit_records`; throughput is reported in bytes of log.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kubetrail::filters::redact::Redact;
use kubetrail::pipeline::Filter;
use kubetrail::sources::audit::{normalize, parse_body, parse_body_owned, parse_line};

fn lines() -> Vec<Vec<u8>> {
    let dir =
        std::env::var("KUBETRAIL_FIXTURES").unwrap_or_else(|_| "../../../shared/fixtures".into());
    let path = format!("{dir}/audit/kube-apiserver-1.28/audit-sample-200.jsonl");
    let text =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (set KUBETRAIL_FIXTURES)"));
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn bench(c: &mut Criterion) {
    let lines = lines();
    let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let source: Arc<str> = Arc::from("audit_file.0");
    let tag: Arc<str> = Arc::from("k8s.audit");
    let redact = Redact::secrets_only();
    let mut g = c.benchmark_group("audit_records");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("parse", |b| {
        b.iter(|| {
            for l in &lines {
                let _ = std::hint::black_box(parse_line(l));
            }
        })
    });
    g.bench_function("parse+normalize", |b| {
        b.iter(|| {
            for l in &lines {
                if let Ok(item) = parse_line(l) {
                    std::hint::black_box(normalize(item, &source, &tag, false));
                }
            }
        })
    });
    let records: Vec<_> = lines
        .iter()
        .filter_map(|l| parse_line(l).ok())
        .map(|i| normalize(i, &source, &tag, false))
        .collect();
    g.bench_function("redact(secrets)", |b| {
        b.iter_batched(
            || records.clone(),
            |mut rs| {
                for r in &mut rs {
                    std::hint::black_box(redact.apply(r));
                }
                rs
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for r in &records {
                r.encode_into(&mut out);
                out.push(b'\n');
            }
            std::hint::black_box(out.len())
        })
    });
    g.finish();

    // A webhook body as the apiserver sends it (an EventList of 400 events, each a sample
    // line): read into records (parse and normalize), copying each original or sharing the
    // body. The body is made fresh for each run, outside the measurement.
    let items: Vec<&[u8]> = lines.iter().cycle().take(400).map(Vec::as_slice).collect();
    let mut body =
        br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#.to_vec();
    body.extend_from_slice(&items.join(&b","[..]));
    body.extend_from_slice(b"]}");
    let mut g = c.benchmark_group("audit_webhook_body");
    g.throughput(Throughput::Bytes(body.len() as u64));
    let to_records = |items: Vec<Result<_, _>>| {
        items
            .into_iter()
            .filter_map(Result::ok)
            .map(|i| normalize(i, &source, &tag, false))
            .collect::<Vec<_>>()
    };
    g.bench_function("parse+normalize (copied originals)", |b| {
        b.iter_batched(
            || body.clone(),
            |body| to_records(parse_body(&body).unwrap_or_default()),
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("parse+normalize (shared body)", |b| {
        b.iter_batched(
            || body.clone(),
            |body| to_records(parse_body_owned(body).unwrap_or_default()),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
