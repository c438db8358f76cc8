//! Ingest's HTTP API on the real broker: token, start, list, stop, errors, metrics.

mod common;

use std::time::Duration;

use common::*;
use mouthmap_contracts::{EndReason, FrameEvent};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn api_starts_lists_and_stops_streams_behind_a_token() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let topic = unique("frames");
    let port = free_port();
    let _ingest = Proc::spawn(
        "ingest",
        mouthmap(&brokers, &topic)
            .arg("ingest")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--media-root")
            .arg(shared().join("data"))
            .env("MOUTHMAP_API_TOKEN", "s3cret"),
    );
    wait_port(port, Duration::from_secs(30));
    let base = format!("http://127.0.0.1:{port}");
    let id = unique("api-stream");
    // Under the media root (MOUTHMAP_SHARED/data), by its relative path.
    let clip = "grid/s1/bbaf2n.mp4".to_string();

    let (base2, id2) = (base.clone(), id.clone());
    let checks = tokio::task::spawn_blocking(move || {
        let http = reqwest::blocking::Client::new();
        let (base, id) = (base2, id2);
        assert_eq!(
            http.get(format!("{base}/healthz")).send().unwrap().status(),
            200
        );
        // Readiness needs no token either (a Kubernetes probe has none).
        let ready = http.get(format!("{base}/readyz")).send().unwrap();
        assert_eq!(ready.status(), 200);
        let ready: Value = ready.json().unwrap();
        assert_eq!(ready["ready"], true, "{ready}");
        let denied = http.get(format!("{base}/v1/streams")).send().unwrap();
        assert_eq!(denied.status(), 401, "no token, no access");
        let wrong = http
            .get(format!("{base}/v1/streams"))
            .bearer_auth("nope")
            .send()
            .unwrap();
        assert_eq!(wrong.status(), 401);

        let bad = http
            .post(format!("{base}/v1/streams"))
            .bearer_auth("s3cret")
            .json(&json!({"source": "grid/s1/no-such-clip.mp4"}))
            .send()
            .unwrap();
        assert_eq!(bad.status(), 400);
        let body: Value = bad.json().unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("media root"),
            "{body}"
        );

        // Paced in real time, so it is still running when we stop it.
        let started = http
            .post(format!("{base}/v1/streams"))
            .bearer_auth("s3cret")
            .json(&json!({"source": clip, "id": id, "realtime": true}))
            .send()
            .unwrap();
        assert_eq!(started.status(), 201);
        let again = http
            .post(format!("{base}/v1/streams?token=s3cret"))
            .json(&json!({"source": clip, "id": id}))
            .send()
            .unwrap();
        assert_eq!(again.status(), 409, "one stream per id");

        std::thread::sleep(Duration::from_millis(1200));
        let listed: Value = http
            .get(format!("{base}/v1/streams"))
            .bearer_auth("s3cret")
            .send()
            .unwrap()
            .json()
            .unwrap();
        let active = listed["active"].as_array().unwrap();
        assert_eq!(active.len(), 1, "{listed}");
        assert_eq!(active[0]["id"], id.as_str());
        assert!(active[0]["frames"].as_u64().unwrap() > 0, "{listed}");

        let stopped = http
            .delete(format!("{base}/v1/streams/{id}"))
            .bearer_auth("s3cret")
            .send()
            .unwrap();
        assert_eq!(stopped.status(), 202);
        let missing = http
            .delete(format!("{base}/v1/streams/nope"))
            .bearer_auth("s3cret")
            .send()
            .unwrap();
        assert_eq!(missing.status(), 404);

        std::thread::sleep(Duration::from_millis(500));
        let metrics = http
            .get(format!("{base}/metrics"))
            .bearer_auth("s3cret")
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(
            metrics.contains("mouthmap_events_sent_total{stage=\"ingest\"}"),
            "{metrics}"
        );
    });
    checks.await.unwrap();

    let streams = collect_streams(&brokers, &topic, &[&id], Duration::from_secs(30)).await;
    let seen = &streams[&id];
    let FrameEvent::End(end) = &seen.last().unwrap().event else {
        panic!("ends with an end event")
    };
    assert_eq!(end.reason, EndReason::Stopped);
    assert!(
        end.frames > 0 && end.frames < 75,
        "stopped midway: {} frames",
        end.frames
    );
    let chunked: u64 = seen
        .iter()
        .filter_map(|s| match &s.event {
            FrameEvent::Chunk(c) => Some(c.frames.len() as u64),
            _ => None,
        })
        .sum();
    assert_eq!(
        chunked, end.frames,
        "every captured frame was published before the end"
    );
}

#[test]
fn api_refuses_to_listen_without_a_token_even_on_loopback() {
    for listen in ["0.0.0.0:0", "127.0.0.1:0"] {
        let out = mouthmap("127.0.0.1:1", "unused")
            .args(["ingest", "--listen", listen, "--create-topics", "false"])
            .env_remove("MOUTHMAP_API_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{listen}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("without a token: set --api-token"),
            "{stderr}"
        );
    }
}

#[test]
fn a_settle_that_would_outlast_the_publish_callback_is_refused_at_start() {
    let out = mouthmap("127.0.0.1:1", "unused")
        .args(["ingest", "--listen", "127.0.0.1:0"])
        .args(["--create-topics", "false", "--rtmp-settle", "5s"])
        .env("MOUTHMAP_API_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--rtmp-settle 5s is over 2s") && stderr.contains("use at most 2s"),
        "{stderr}"
    );
}
