//! Ingest against the real broker: a GRID clip from a file and one published
//! over RTMP through nginx-rtmp both arrive on `frames` whole.

mod common;

use std::time::Duration;

use common::*;
use mouthmap_contracts::{EndReason, FrameEvent, PixelFormat, SourceKind};

#[tokio::test(flavor = "multi_thread")]
async fn file_clip_arrives_complete_and_in_order() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let topic = unique("frames");
    let id = unique("file-bbaf2n");
    let clip = grid_clip("bbaf2n.mp4");
    let status = mouthmap(&brokers, &topic)
        .arg("ingest")
        .arg(format!("{id}={}", clip.display()))
        .status()
        .unwrap();
    assert!(status.success(), "ingest exited with {status}");

    let streams = collect_streams(&brokers, &topic, &[&id], Duration::from_secs(60)).await;
    let seen = &streams[&id];
    assert_complete(seen, 75);
    let FrameEvent::Start(start) = &seen[0].event else {
        unreachable!()
    };
    assert_eq!(start.source_kind, SourceKind::File);
    assert_eq!(start.fps, 25);
    let FrameEvent::Chunk(first) = &seen[1].event else {
        unreachable!()
    };
    assert_eq!(
        (first.width, first.height, first.format),
        (360, 288, PixelFormat::Jpeg),
        "JPEG frames by default"
    );
    // 25 fps: frame n is presented at n * 40 ms.
    for s in &seen[1..seen.len() - 1] {
        let FrameEvent::Chunk(c) = &s.event else {
            unreachable!()
        };
        for f in &c.frames {
            assert_eq!(f.pts_ns, f.index * 40_000_000, "frame {} pts", f.index);
        }
        assert!(
            s.msg
                .header("traceparent")
                .is_some_and(|t| t.starts_with("00-"))
        );
    }
    let FrameEvent::End(end) = &seen.last().unwrap().event else {
        unreachable!()
    };
    assert_eq!(end.reason, EndReason::Eos);
}

/// `--pixel-format gray8` publishes each frame's luma plane alone (the same
/// first bytes as the I420 frame, two thirds of its size); `jpeg` one JPEG
/// per frame, which decodes back to nearly the I420 frame at a fraction of
/// the bytes.
#[tokio::test(flavor = "multi_thread")]
async fn gray8_and_jpeg_frames_carry_the_i420_picture() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let clip = grid_clip("bbaf2n.mp4");
    let mut frames = Vec::new();
    for format in ["i420", "gray8", "jpeg"] {
        let topic = unique("frames");
        let id = unique(format);
        let status = mouthmap(&brokers, &topic)
            .args(["ingest", "--pixel-format", format])
            .arg(format!("{id}={}", clip.display()))
            .status()
            .unwrap();
        assert!(status.success(), "ingest exited with {status}");
        let streams = collect_streams(&brokers, &topic, &[&id], Duration::from_secs(60)).await;
        assert_complete(&streams[&id], 75);
        let mut pixels: Vec<(PixelFormat, Vec<u8>)> = Vec::new();
        for s in &streams[&id] {
            let (FrameEvent::Chunk(c), payload) = s.msg.decode::<FrameEvent>().unwrap() else {
                continue;
            };
            assert_eq!((c.width, c.height), (360, 288));
            pixels.extend(
                c.frame_ranges()
                    .into_iter()
                    .map(|r| (c.format, payload[r].to_vec())),
            );
        }
        assert_eq!(pixels.len(), 75, "{format}");
        frames.push(pixels);
    }
    let luma = 360 * 288;
    let (mut jpeg_bytes, mut diff) = (0usize, 0f64);
    let mut decoded = Vec::new();
    for (i, (((cf, c), (gf, g)), (jf, j))) in
        frames[0].iter().zip(&frames[1]).zip(&frames[2]).enumerate()
    {
        assert_eq!(
            (*cf, *gf, *jf),
            (PixelFormat::I420, PixelFormat::Gray8, PixelFormat::Jpeg)
        );
        assert_eq!((c.len(), g.len()), (luma * 3 / 2, luma));
        assert!(c[..luma] == g[..], "frame {i}: gray8 is not the luma plane");
        mouthmap_preprocessor::jpeg::decode_i420(j, 360, 288, &mut decoded).unwrap();
        assert_eq!(decoded.len(), c.len());
        jpeg_bytes += j.len();
        diff += decoded[..luma]
            .iter()
            .zip(&c[..luma])
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / luma as f64;
    }
    let (mean_jpeg, mean_diff) = (jpeg_bytes / 75, diff / 75.0);
    assert!(
        mean_jpeg < luma * 3 / 2 / 5,
        "a jpeg frame is {mean_jpeg} bytes on average"
    );
    assert!(mean_diff < 3.0, "jpeg luma differs by {mean_diff} levels");
}

#[tokio::test(flavor = "multi_thread")]
async fn rtmp_publish_through_nginx_arrives_complete() {
    if !available(&[Need::Broker, Need::NginxRtmp]) {
        return;
    }
    let brokers = brokers();
    let topic = unique("frames");
    let api = free_port();
    let nginx = Nginx::start(api);
    let ingest_url = format!("rtmp://127.0.0.1:{}", nginx.port);
    let logs = tempfile::tempdir().unwrap();
    let ingest_log = logs.path().join("ingest.log");
    let publish_key = "pk-do-not-log-me";
    let kafka_password = "kafka-pw-do-not-log-me";
    let mut ingest = Proc::spawn(
        "ingest",
        mouthmap(&brokers, &topic)
            .arg("ingest")
            .arg("--listen")
            .arg(format!("127.0.0.1:{api}"))
            .arg("--rtmp-url")
            .arg(&ingest_url)
            .args(["--rtmp-publish-key", publish_key])
            // A Kafka password among the client settings (the broker here
            // has no SASL: librdkafka holds it unused) must not reach a log.
            .env(
                "MOUTHMAP_KAFKA_OPTIONS",
                format!("sasl.password={kafka_password}"),
            )
            .env("MOUTHMAP_LOG", "debug,ort=warn")
            .stderr(std::fs::File::create(&ingest_log).unwrap()),
    );
    wait_port(api, Duration::from_secs(30));

    let key = unique("rtmp-bbaf2n");
    let url = format!("{}?key={publish_key}", nginx.url(&key));
    let mut ffmpeg = ffmpeg_publish(&grid_clip("bbaf2n.mp4"), &url);
    let published = ffmpeg.wait(Duration::from_secs(60));
    assert!(published.success(), "ffmpeg could not publish: {published}");

    let streams = collect_streams(&brokers, &topic, &[&key], Duration::from_secs(60)).await;
    let seen = &streams[&key];
    assert_complete(seen, 75);
    let FrameEvent::Start(start) = &seen[0].event else {
        unreachable!()
    };
    assert_eq!(start.source_kind, SourceKind::Rtmp);
    assert!(
        ingest.terminate().success(),
        "ingest exits cleanly on SIGTERM"
    );
    // No secret in any log: the publish key rode in the publisher's URL,
    // the callback secret in a header nginx added, the token in ingest's
    // environment.
    let ingest_said = std::fs::read_to_string(&ingest_log).unwrap();
    let nginx_said = nginx.logs();
    assert!(
        nginx_said.contains(&key),
        "nginx logged the publish: {nginx_said}"
    );
    for secret in [
        publish_key,
        TEST_CALLBACK_SECRET,
        TEST_TOKEN,
        kafka_password,
    ] {
        assert!(!nginx_said.contains(secret), "{secret} in nginx's logs");
        assert!(!ingest_said.contains(secret), "{secret} in ingest's log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rtsp_camera_stream_arrives_complete() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let topic = unique("frames");
    let port = free_port();
    let _server = Proc::spawn(
        "rtsp server",
        std::process::Command::new("/usr/bin/python3")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/rtsp_server.py"),
            )
            .arg(port.to_string())
            .arg(grid_clip("bbaf2n.mp4"))
            .stdout(std::process::Stdio::null()),
    );
    wait_port(port, Duration::from_secs(20));
    let id = unique("rtsp");
    let status = mouthmap(&brokers, &topic)
        .arg("ingest")
        .arg(format!("{id}=rtsp://127.0.0.1:{port}/clip"))
        .status()
        .unwrap();
    assert!(status.success());
    let streams = collect_streams(&brokers, &topic, &[&id], Duration::from_secs(60)).await;
    assert_complete(&streams[&id], 75);
    let FrameEvent::Start(start) = &streams[&id][0].event else {
        unreachable!()
    };
    assert_eq!(start.source_kind, SourceKind::Rtsp);
}
