//! Observability: `/metrics` exposes the per-component series and they move as records flow;
//! `/healthz` answers; `/readyz` is ready once the Events watch is connected and fails when the
//! watch stalls.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use kubetrail_emulator::{EventSpec, Faults};
use kubetrail_net::{HttpClient, TlsClientSettings};

async fn get(client: &HttpClient, path: &str) -> (u16, String) {
    let req = http::Request::get(path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    match client.send(req).await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let body = resp
                .into_body()
                .read_to_end(1 << 22)
                .await
                .unwrap_or_default();
            (code, String::from_utf8_lossy(&body).into_owned())
        }
        Err(e) => (0, e.to_string()),
    }
}

fn value(metrics: &str, series: &str) -> Option<i64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_records_and_readyz_follows_the_watch() {
    let env = Env::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = env.config("      kube_watch_timeout: 1s").replace(
        "  grace: 5s\n",
        &format!("  grace: 5s\n  http_listen: 127.0.0.1:{port}\n"),
    );
    let config =
        kubetrail_core::config::Config::parse(&yaml, std::path::Path::new("m.yaml")).unwrap();
    let plan = kubetrail::topology::Plan::from_config(config).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(plan.run(async move {
        let _ = rx.await;
    }));
    let client = HttpClient::new(
        &format!("http://127.0.0.1:{port}"),
        &TlsClientSettings::default(),
    )
    .unwrap();

    let ready = wait_until_async(Duration::from_secs(20), || async {
        get(&client, "/readyz").await.0 == 200
    })
    .await;
    assert!(
        ready,
        "ready once the watch is connected: {:?}",
        get(&client, "/readyz").await
    );
    assert_eq!(get(&client, "/healthz").await.0, 200);

    for i in 0..25 {
        env.emu.create_event(EventSpec::simple(
            "shop",
            "Pod",
            format!("web-{i}"),
            "BackOff",
            "Back-off restarting",
        ));
    }
    assert!(wait_until(Duration::from_secs(20), || env.records().len() >= 25).await);
    let (code, text) = get(&client, "/metrics").await;
    assert_eq!(code, 200);
    let input = "{component=\"kubernetes_events.0\"}";
    let output = "{component=\"file.0\"}";
    assert_eq!(
        value(
            &text,
            &format!("kubetrail_component_records_in_total{input}")
        ),
        Some(25),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("kubetrail_component_records_out_total{output}")
        ),
        Some(25),
        "{text}"
    );
    assert!(
        value(
            &text,
            &format!("kubetrail_component_bytes_out_total{output}")
        )
        .unwrap_or(0)
            > 25 * 300
    );
    for series in [
        format!("kubetrail_queue_records{output}"),
        format!("kubetrail_queue_bytes{output}"),
        format!("kubetrail_events_relists_total{input}"),
        format!("kubetrail_events_seconds_since_last_event{input}"),
        format!("kubetrail_gap_records_total{input}"),
        format!("kubetrail_component_errors_total{input}"),
        format!("kubetrail_component_retried_total{output}"),
        format!("kubetrail_component_dropped_total{output}"),
        format!("kubetrail_component_failed_total{output}"),
    ] {
        assert!(value(&text, &series).is_some(), "missing {series}:\n{text}");
    }
    assert!(text.contains("# TYPE kubetrail_component_records_in_total counter"));

    // The API server stops answering watches: readiness must fail (two watch timeouts + 10 s).
    env.emu.set_faults(Faults {
        delay: Some(Duration::from_secs(120)),
        ..Default::default()
    });
    env.emu.cut_watches();
    let stalled = wait_until_async(Duration::from_secs(30), || async {
        get(&client, "/readyz").await.0 == 503
    })
    .await;
    let (_, why) = get(&client, "/readyz").await;
    assert!(stalled, "readyz fails when the watch stalls: {why}");
    assert!(why.contains("no progress"), "{why}");
    // It recovers when the server does.
    env.emu.set_faults(Faults::default());
    env.emu.cut_watches();
    let back = wait_until_async(Duration::from_secs(60), || async {
        get(&client, "/readyz").await.0 == 200
    })
    .await;
    assert!(back, "ready again: {:?}", get(&client, "/readyz").await);

    let _ = tx.send(());
    run.await.unwrap().unwrap();
}

async fn wait_until_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
