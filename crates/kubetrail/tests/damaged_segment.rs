//! A flipped byte in a queue segment, through the `kubetrail` binary: records wait in the
//! `file` output's queue (its directory cannot be written), the agent stops, a byte of the
//! second of three blocks is flipped, and the next run delivers every intact record once,
//! writes the damaged ones to the dead-letter file with the segment's path and offset, and
//! logs both. A flipped byte in a block's header loses the block: the next run delivers the
//! other blocks and writes one dead letter naming the lost records, the file and the offset.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{read_records, signal, spawn_kubetrail, wait_until};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn post(port: u16, body: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST /audit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

fn body(round: usize) -> String {
    let items: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"dmg-{round}-{i:03}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods","verb":"list","user":{{"username":"u{i}"}},"objectRef":{{"resource":"pods","namespace":"shop"}},"responseStatus":{{"code":200}},"requestReceivedTimestamp":"2026-11-27T00:31:51.810715Z","stageTimestamp":"2026-11-27T00:31:51.812000Z"}}"#
            )
        })
        .collect();
    format!(r#"{{"kind":"EventList","items":[{}]}}"#, items.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_block_goes_to_the_dead_letter_file_and_the_rest_is_delivered() {
    damaged_second_block(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_block_header_is_skipped_and_the_rest_is_delivered() {
    damaged_second_block(true).await;
}

/// Three blocks of 50 records queued, then a byte of the second one flipped: in its payload,
/// or (`header`) in its header's first sequence number.
async fn damaged_second_block(header: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let port = free_port();
    let config = d.join("kubetrail.yaml");
    std::fs::write(
        &config,
        format!(
            r#"service:
  data_dir: {d}/data
  grace: 1s
pipeline:
  inputs:
    - name: audit_webhook
      tag: k8s.audit
      listen: 127.0.0.1:{port}
      tls: off
      auth: none
  outputs:
    - name: file
      match: '*'
      path: {out}
      file: audit.jsonl
      retry_base_backoff: 100ms
      retry_max_backoff: 200ms
"#,
            d = d.display(),
            out = out.display()
        ),
    )
    .unwrap();
    // The output cannot write (its directory is a plain file): the records stay queued.
    std::fs::write(&out, "not a directory").unwrap();
    let mut child = spawn_kubetrail(&config, d, 0);
    for round in 0..3 {
        let b = body(round);
        let mut code = 0;
        for _ in 0..200 {
            if let Ok(c) = tokio::task::spawn_blocking({
                let b = b.clone();
                move || post(port, &b)
            })
            .await
            .unwrap()
            {
                code = c;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(code, 200);
    }
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());

    // Flip a byte in the middle of the second block's payload.
    let qroot = d.join("data").join("kubetrail.db-queues");
    let qdir = std::fs::read_dir(&qroot)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let seg = std::fs::read_dir(&qdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let blocks: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| w == b"KTQB")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(blocks.len(), 3, "a block per batch");
    if header {
        bytes[blocks[1] + 8] ^= 0x10;
    } else {
        bytes[(blocks[1] + 36 + blocks[2]) / 2] ^= 0x10;
    }
    std::fs::write(&seg, &bytes).unwrap();

    std::fs::remove_file(&out).unwrap();
    let mut child = spawn_kubetrail(&config, d, 1);
    let dead = d.join("data").join("dead-letter");
    let dead_lines = || -> Vec<serde_json::Value> {
        std::fs::read_dir(&dead)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let records = || read_records(&out.join("audit.jsonl"));
    // With a damaged header, one dead letter stands for the 50 records of the block.
    let want = if header { 101 } else { 150 };
    let done = wait_until(Duration::from_secs(20), || {
        let n = records().len() + dead_lines().len();
        n >= want
    })
    .await;
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let log = std::fs::read_to_string(d.join("stderr.1")).unwrap();
    let delivered = records();
    let dead = dead_lines();
    assert!(
        done,
        "{} delivered, {} dead letters:\n{log}",
        delivered.len(),
        dead.len()
    );
    assert!(!dead.is_empty(), "the damaged records are dead letters");
    assert!(
        delivered.len() >= 100,
        "the other blocks are delivered: {}",
        delivered.len()
    );
    assert_eq!(delivered.len() + dead.len(), want, "nothing twice");
    if header {
        assert_eq!(delivered.len(), 100, "every record of the other blocks");
        let reason = dead[0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("records 51 to 100"), "{reason}");
    }
    let seg_name = seg.display().to_string();
    let at = format!("at byte {}", blocks[1]);
    for l in &dead {
        let reason = l["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&seg_name) && reason.contains(&at),
            "{reason}"
        );
    }
    assert!(
        log.contains(&seg_name) && log.contains(&format!("offset={}", blocks[1])),
        "the damage is logged with the file and offset:\n{log}"
    );
    let mut ids: Vec<&str> = delivered
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), delivered.len(), "no record twice");
}
