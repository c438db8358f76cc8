//! The ingest API and the command line as an attacker would try them, on a
//! real ingest process: no local file, device or internal address through
//! the API, no cross-origin or rebinding request, no callback without its
//! secret, a cap on streams, and no secret in `--help`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn the_api_refuses_files_devices_internal_addresses_and_foreign_origins() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let topic = unique("frames");
    let media = tempfile::tempdir().unwrap();
    // What a media root may hold besides videos: a FIFO (opening it would
    // block a thread for good), a link out of the root, and a real clip.
    assert!(
        std::process::Command::new("mkfifo")
            .arg(media.path().join("pipe.mp4"))
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink("/etc/passwd", media.path().join("escape.mp4")).unwrap();
    std::fs::copy(grid_clip("bbaf2n.mp4"), media.path().join("clip.mp4")).unwrap();
    let port = free_port();
    let _ingest = Proc::spawn(
        "ingest",
        mouthmap(&brokers, &topic)
            .args(["ingest", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--media-root")
            .arg(media.path())
            .args(["--max-streams", "1"]),
    );
    wait_port(port, Duration::from_secs(30));
    let base = format!("http://127.0.0.1:{port}");
    tokio::task::spawn_blocking(move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let start_as = |source: &str, id: &str| {
            http.post(format!("{base}/v1/streams"))
                .bearer_auth(TEST_TOKEN)
                .json(&json!({ "source": source, "id": id, "realtime": true }))
                .send()
                .unwrap()
        };
        let start = |source: &str| start_as(source, "refused");
        let mut answers = Vec::new();
        for source in [
            "file:///etc/passwd",
            "/etc/passwd",
            "/nonexistent/clip.mp4",
            "pipe.mp4",
            "escape.mp4",
            "../../../../etc/passwd",
            "v4l2:///dev/video0",
            "/dev/video0",
            "http://169.254.169.254/latest/meta-data/",
            "rtmp://127.0.0.1:1935/live/internal",
            "rtsp://localhost/cam",
            "http://[::1]:8088/v1/streams",
        ] {
            let r = start(source);
            assert_eq!(r.status(), 400, "{source} was not refused");
            let body: Value = r.json().unwrap();
            let error = body["error"].as_str().unwrap().to_string();
            assert!(
                !error.contains("no such file") && !error.contains("passwd"),
                "{source}: the refusal tells what exists: {error}"
            );
            answers.push((source, error));
        }
        // A file that exists and one that does not read the same.
        assert_eq!(answers[1].1, answers[2].1);

        // Within the cap, a clip under the media root starts; over it, 429.
        let ok = start_as("clip.mp4", "first");
        assert_eq!(ok.status(), 201);
        let over = start_as("clip.mp4", "second");
        assert_eq!(over.status(), 429);
        assert!(over.text().unwrap().contains("--max-streams"));

        // A page elsewhere posting a form: refused before any handler.
        for path in ["/v1/rtmp/on_publish", "/v1/streams"] {
            let r = http
                .post(format!("{base}{path}"))
                .bearer_auth(TEST_TOKEN)
                .header("origin", "http://evil.example")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("app=live&name=forged")
                .send()
                .unwrap();
            assert_eq!(r.status(), 403, "{path}");
        }
        // DNS rebinding: a name that is not this API's.
        let r = http
            .get(format!("{base}/v1/streams"))
            .bearer_auth(TEST_TOKEN)
            .header("host", "evil.example")
            .send()
            .unwrap();
        assert_eq!(r.status(), 421);
        // The callbacks want their own secret, in a header; the API token is not it.
        let r = http
            .post(format!("{base}/v1/rtmp/on_publish"))
            .bearer_auth(TEST_TOKEN)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("app=live&name=forged")
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = http
            .post(format!("{base}/v1/rtmp/on_publish?token={TEST_TOKEN}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("app=live&name=forged")
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
        let listed: Value = http
            .get(format!("{base}/v1/streams"))
            .bearer_auth(TEST_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(listed["active"].as_array().unwrap().len(), 1, "{listed}");
    })
    .await
    .unwrap();
}

/// `--help` names the environment variables but never prints their values
/// or a config file's.
#[test]
fn help_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mouthmap.toml");
    std::fs::write(
        &config,
        "api_token = \"cfg-token-secret\"\nredis_url = \"redis://:cfg-redis-secret@db:6379/0\"\n",
    )
    .unwrap();
    for command in [
        &["ingest"][..],
        &["decode"],
        &["preprocess"],
        &["features", "serve"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mouthmap"))
            .args(command)
            .arg("--help")
            .env("MOUTHMAP_API_TOKEN", "env-token-secret")
            .env("MOUTHMAP_KAFKA_OPTIONS", "sasl.password=env-sasl-secret")
            .env("MOUTHMAP_REDIS_URL", "redis://:env-redis-secret@db:6379/0")
            .env("MOUTHMAP_RTMP_CALLBACK_SECRET", "env-callback-secret")
            .env("MOUTHMAP_CONFIG", &config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{command:?} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("MOUTHMAP_KAFKA_OPTIONS"), "{help}");
        for secret in [
            "env-token-secret",
            "env-sasl-secret",
            "env-redis-secret",
            "env-callback-secret",
            "cfg-token-secret",
            "cfg-redis-secret",
        ] {
            assert!(!help.contains(secret), "{command:?} --help shows {secret}");
        }
    }
}

/// The gateway without a token listens on loopback only: beyond it, it
/// refuses to start and says what to set (before touching the broker).
#[test]
fn the_gateway_refuses_to_listen_beyond_loopback_without_a_token() {
    for (listen, grpc) in [("0.0.0.0:0", "127.0.0.1:0"), ("127.0.0.1:0", "0.0.0.0:0")] {
        let out = mouthmap("127.0.0.1:1", "unused")
            .args(["gateway", "--listen", listen, "--grpc-listen", grpc])
            .env_remove("MOUTHMAP_API_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{listen} {grpc}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("without a token: set --api-token"),
            "{stderr}"
        );
    }
}
