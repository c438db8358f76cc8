//! The gateway's three doors on one running pipeline (preprocess, infer,
//! decode, ingest with nginx-rtmp, the gateway; one start shared by every
//! check, as they are slow): the HTTP upload API, the gRPC streaming API
//! (the Python example and a Rust client that cancels or sends ten times
//! faster than real time) and the web view in headless Chromium.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::pipeline::{CLIPS, Topics, word_errors};
use common::*;
use mouthmap_contracts::{Transcript, TranscriptKind};
use mouthmap_gateway::grpc::proto::transcriber_client::TranscriberClient;
use mouthmap_gateway::grpc::proto::video_input::Input;
use mouthmap_gateway::grpc::proto::{
    Frame, StreamConfig, TranscriptEvent, VideoInput, transcript_event,
};

const BOUNDARY: &str = "mouthmap-test-boundary";

fn multipart(field: &str, file: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"{field}\"; filename=\"clip.mp4\"\r\ncontent-type: video/mp4\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A clip's frames as JPEG images (ffmpeg's MJPEG stream, split at the markers).
fn jpeg_frames(video: &Path) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(video)
        .args(["-an", "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let data = out.stdout;
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(start) = find(&data[at..], &[0xff, 0xd8]).map(|i| i + at) {
        let Some(end) = find(&data[start + 2..], &[0xff, 0xd9]).map(|i| i + start + 2) else {
            break;
        };
        frames.push(data[start..end + 2].to_vec());
        at = end + 2;
    }
    frames
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Resident memory of a process, kB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

struct Grpc {
    port: u16,
}

impl Grpc {
    /// Starts a call: sends the config; returns the frame sender and the events.
    async fn call(
        &self,
        id: &str,
    ) -> (
        tokio::sync::mpsc::Sender<VideoInput>,
        tonic::Streaming<TranscriptEvent>,
    ) {
        let mut client = TranscriberClient::connect(format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(VideoInput {
            input: Some(Input::Config(StreamConfig {
                stream_id: id.into(),
                grammar: String::new(),
                as_fast_as_possible: false,
            })),
        })
        .await
        .unwrap();
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {TEST_TOKEN}").parse().unwrap(),
        );
        let events = client.transcribe(req).await.unwrap().into_inner();
        (tx, events)
    }
}

fn frame(jpeg: &[u8], i: usize) -> VideoInput {
    VideoInput {
        input: Some(Input::Frame(Frame {
            jpeg: jpeg.to_vec(),
            pts_us: i as i64 * 40_000,
        })),
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    content_type: &str,
) -> reqwest::Response {
    client
        .post(url)
        .bearer_auth(TEST_TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_three_doors_on_one_pipeline() {
    if !available(&[Need::Broker, Need::NginxRtmp, Need::Browser, Need::Examples]) {
        return;
    }
    let brokers = brokers();
    let t = Topics::new();
    t.create(&brokers).await;
    let _stages = t.stages(&brokers);
    let api = free_port();
    let nginx = Nginx::start(api);
    let _ingest = Proc::spawn(
        "ingest",
        t.command(&brokers)
            .args(["ingest", "--listen"])
            .arg(format!("127.0.0.1:{api}"))
            .arg("--rtmp-url")
            .arg(format!("rtmp://127.0.0.1:{}", nginx.port)),
    );
    let (http, grpc_port) = (free_port(), free_port());
    let gateway = Proc::spawn(
        "gateway",
        t.command(&brokers)
            .args(["gateway", "--listen"])
            .arg(format!("127.0.0.1:{http}"))
            .arg("--grpc-listen")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .args(["--max-streams", "2", "--ingest-url"])
            .arg(format!("http://127.0.0.1:{api}")),
    );
    let base = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gateway not ready after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let grpc = Grpc { port: grpc_port };
    let upload_url = format!("{base}/v1/transcriptions");

    // HTTP: a validation clip as a multipart form: its final, within a word.
    let (clip, sentence) = CLIPS[0];
    let video = std::fs::read(grid_clip(&format!("{clip}.mp4"))).unwrap();
    let r = post(
        &client,
        &upload_url,
        multipart("file", &video),
        &format!("multipart/form-data; boundary={BOUNDARY}"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-mouthmap-stream-id"));
    let f: Transcript = r.json().await.unwrap();
    assert_eq!(f.kind, TranscriptKind::Final);
    assert!(
        word_errors(&f.text, sentence) <= 1,
        "{:?} vs {sentence:?}",
        f.text
    );
    assert!(!f.words.is_empty() && f.confidence > 0.0 && !f.model_version.is_empty());

    // ?stream=true with the raw body: partials, then one final, as NDJSON.
    let (clip, sentence) = CLIPS[1];
    let video = std::fs::read(grid_clip(&format!("{clip}.mp4"))).unwrap();
    let mut r = post(
        &client,
        &format!("{upload_url}?stream=true"),
        video,
        "video/mp4",
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let lines: Vec<Transcript> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let finals = lines
        .iter()
        .filter(|t| t.kind == TranscriptKind::Final)
        .count();
    assert_eq!(finals, 1, "{lines:?}");
    assert!(lines.len() >= 2, "partials before the final: {lines:?}");
    let last = lines.last().unwrap();
    assert_eq!(last.kind, TranscriptKind::Final);
    assert!(
        word_errors(&last.text, sentence) <= 1,
        "{:?} vs {sentence:?}",
        last.text
    );

    // Bad input: a text file is refused with a reason; no token, 401.
    let r = post(
        &client,
        &upload_url,
        b"this is not a video\n".to_vec(),
        "text/plain",
    )
    .await;
    assert_eq!(r.status(), 415);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("text"), "{e}");
    let r = client.post(&upload_url).body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Saturated: two uploads in flight (the gateway's limit here), a third gets 429.
    let dir = tempfile::tempdir().unwrap();
    let long = std::fs::read(join_clips(dir.path(), &["bbie8n", "bras6n", "bbie8n"])).unwrap();
    let mut busy = Vec::new();
    for _ in 0..2 {
        let r = post(
            &client,
            &format!("{upload_url}?stream=true"),
            long.clone(),
            "video/mp4",
        )
        .await;
        assert_eq!(r.status(), 200);
        busy.push(r);
    }
    let r = post(&client, &upload_url, long.clone(), "video/mp4").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    for mut r in busy {
        while r.chunk().await.unwrap().is_some() {}
    }

    // gRPC health and reflection answer without a token.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "mouthmap.v1.Transcriber".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([ask]))
            .await
            .unwrap()
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("no list of services: {answer:?}");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"mouthmap.v1.Transcriber"), "{names:?}");
    }

    // gRPC, the Python example: a validation clip in real time.
    let (clip, sentence) = CLIPS[0];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(examples_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/transcribe_grpc.py"))
            .arg(grid_clip(&format!("{clip}.mp4")))
            .args([
                "--address",
                &format!("127.0.0.1:{grpc_port}"),
                "--token",
                TEST_TOKEN,
                "--json",
            ])
            .stderr(Stdio::inherit())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "the Python example failed");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().any(|e| e["kind"] == "partial"), "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "final");
    assert!(
        word_errors(last["text"].as_str().unwrap(), sentence) <= 1,
        "{last} vs {sentence:?}"
    );

    // gRPC, ten times faster than real time: slowed, not buffered; still right.
    let frames = jpeg_frames(&grid_clip(&format!("{clip}.mp4")));
    assert_eq!(frames.len(), 75);
    let rss_before = rss_kb(gateway.child.id());
    let (tx, mut events) = grpc.call(&unique("fast")).await;
    let sender = tokio::spawn({
        let frames = frames.clone();
        async move {
            let t0 = Instant::now();
            let mut sent_by_1s = None;
            for (i, jpeg) in frames.iter().enumerate() {
                tx.send(frame(jpeg, i)).await.unwrap();
                if sent_by_1s.is_none() && t0.elapsed() >= Duration::from_secs(1) {
                    sent_by_1s = Some(i);
                }
                // 4 ms a frame: ten times 25 fps.
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            (sent_by_1s.unwrap_or(frames.len()), t0.elapsed())
        }
    });
    let mut got = Vec::new();
    while let Some(e) = events.message().await.unwrap() {
        got.push(e);
    }
    let (sent_by_1s, sending) = sender.await.unwrap();
    let rss_after = rss_kb(gateway.child.id());
    eprintln!(
        "ten times real time: {sent_by_1s} frames taken in the first second, all 75 in {sending:?}; gateway RSS {rss_before} -> {rss_after} kB"
    );
    // Paced: 25 frames a second plus what the transport's window holds,
    // not the 250 a second the client tried.
    assert!(
        sent_by_1s <= 25 + 40,
        "{sent_by_1s} frames taken in the first second"
    );
    assert!(
        sending >= Duration::from_millis(1500),
        "all 75 frames taken in {sending:?}"
    );
    assert!(
        rss_after < rss_before + 100 * 1024,
        "gateway grew from {rss_before} to {rss_after} kB"
    );
    let last = got.last().unwrap();
    assert_eq!(last.kind(), transcript_event::Kind::Final);
    assert!(
        word_errors(&last.text, sentence) <= 1,
        "{:?} vs {sentence:?}",
        last.text
    );

    // gRPC, a client that goes away mid-stream: its stream ends at once, and
    // its final on the topic says cancelled.
    let cancelled_id = unique("cancelled");
    let (tx, events) = grpc.call(&cancelled_id).await;
    for (i, jpeg) in frames.iter().take(30).enumerate() {
        tx.send(frame(jpeg, i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(events);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tx);
    let msgs = read_until(&brokers, &t.transcripts, |m| {
        common::pipeline::finals_for(m, &cancelled_id) >= 1
    })
    .await;
    let finals: Vec<Transcript> = common::pipeline::transcripts_for(&msgs, &cancelled_id)
        .into_iter()
        .filter(|t| t.kind == TranscriptKind::Final)
        .collect();
    assert_eq!(finals.len(), 1);
    assert!(
        finals[0].cancelled,
        "the final of a cancelled call says so: {:?}",
        finals[0]
    );

    // The web view in headless Chromium: a clip published over RTMP shows
    // up, its mouth crop updates, and the page ends with its final.
    let (clip, sentence) = CLIPS[1];
    let shot = dir.path().join("web-view.png");
    let mut node = Command::new("node");
    node.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/webview.mjs"))
        .arg(&base)
        .arg(TEST_TOKEN)
        .arg(browser_node())
        .arg(std::env::var_os("MOUTHMAP_SCREENSHOT").unwrap_or(shot.clone().into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut browser = Proc::spawn("node", &mut node);
    let stdout = browser.child.stdout.take().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = seen_tx.send(line);
        }
    });
    assert_eq!(
        seen_rx.recv_timeout(Duration::from_secs(60)).unwrap(),
        "ready"
    );
    let mut publisher = ffmpeg_publish(
        &grid_clip(&format!("{clip}.mp4")),
        &nginx.url(&unique("web")),
    );
    let seen = tokio::task::spawn_blocking(move || seen_rx.recv_timeout(Duration::from_secs(170)))
        .await
        .unwrap()
        .expect("the page reported what it saw");
    let status = tokio::task::block_in_place(|| browser.wait(Duration::from_secs(20)));
    let _ = publisher.wait(Duration::from_secs(30));
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert!(
        status.success(),
        "the page did not show a stream, its crops and its final: {seen}"
    );
    assert!(seen["crops_seen"].as_u64().unwrap() >= 2, "{seen}");
    assert!(!seen["streams"].as_array().unwrap().is_empty(), "{seen}");
    assert!(
        word_errors(seen["text"].as_str().unwrap(), sentence) <= 1,
        "the page's final {seen} vs {sentence:?}"
    );
    assert!(seen["problems"].as_array().unwrap().is_empty(), "{seen}");
}
