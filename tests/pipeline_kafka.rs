//! The whole pipeline on the real broker, every service its own process:
//! validation clips in, partial and final transcripts out; the same texts as
//! `mouthmap transcribe`; malformed messages dead-lettered; a stream without
//! an end closed by the idle timeout.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::pipeline::*;
use common::*;
use mouthmap_bus::kafka::{KafkaSettings, OutMessage, Producer};
use mouthmap_contracts::{
    self, LogitsEvent, LogitsWindow, SourceKind, StreamStart, TopicKind, Transcript,
    TranscriptKind, headers,
};

#[tokio::test(flavor = "multi_thread")]
async fn four_services_turn_validation_clips_into_transcripts() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let t = Topics::new();
    let model = model().display().to_string();
    let _pre = t.service(&brokers, "preprocess", &[]);
    let _inf = t.service(&brokers, "infer", &["--model", &model]);
    let _dec = t.service(&brokers, "decode", &[]);
    let (ids, msgs) = clips_through(&t, &brokers, &["ingest"]).await;
    let mut kafka_finals = HashMap::new();
    for ((clip, sentence), id) in CLIPS.iter().zip(&ids) {
        let f = check_stream(&msgs, id, clip, sentence);
        assert_eq!(f.stable_prefix, f.text);
        assert!(
            !f.words.is_empty()
                && f.words
                    .windows(2)
                    .all(|w| w[0].end_ms <= w[1].start_ms + 40)
        );
        assert!(f.latency_ms > 0.0 && f.confidence > 0.0);
        assert_eq!(f.model_version, "1.0.0");
        kafka_finals.insert(*clip, f.text.clone());
    }

    // The embedded pipeline gives the same final texts.
    for (clip, _) in CLIPS {
        let out = t
            .command(&brokers)
            .args(["transcribe", "--json", "--model", &model])
            .arg(grid_clip(&format!("{clip}.mp4")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last: Transcript =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap())
                .unwrap();
        assert_eq!(last.kind, TranscriptKind::Final);
        assert_eq!(
            last.text, kafka_finals[clip],
            "{clip}: transcribe and Kafka agree"
        );
    }
}

/// The mouth crop chained into ingest (`ingest --crop`): no preprocess
/// service runs, so every transcript comes from crops ingest published to
/// `mouths` itself; each clip still reads as its sentence.
#[tokio::test(flavor = "multi_thread")]
async fn the_crop_chained_into_ingest_reads_the_clips_without_a_preprocess_service() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let t = Topics::new();
    let model = model().display().to_string();
    let _inf = t.service(&brokers, "infer", &["--model", &model]);
    let _dec = t.service(&brokers, "decode", &[]);
    let (ids, msgs) = clips_through(
        &t,
        &brokers,
        &["ingest", "--crop", "--feature-store", "false"],
    )
    .await;
    for ((clip, sentence), id) in CLIPS.iter().zip(&ids) {
        let f = check_stream(&msgs, id, clip, sentence);
        assert_eq!(f.frames_lost, 0, "{clip}: nothing lost");
    }
}

/// Ingests every clip of [`CLIPS`] at once, each under a fresh id, with the
/// `ingest` command line `ingest_args`, and reads the transcripts topic until
/// each has its final. Returns the ids (in `CLIPS` order) and the messages.
async fn clips_through(
    t: &Topics,
    brokers: &str,
    ingest_args: &[&str],
) -> (Vec<String>, Vec<mouthmap_bus::kafka::InMessage>) {
    let ids: Vec<String> = CLIPS.iter().map(|(c, _)| unique(c)).collect();
    let mut ingest = t.command(brokers);
    ingest.args(ingest_args);
    for ((clip, _), id) in CLIPS.iter().zip(&ids) {
        ingest.arg(format!(
            "{id}={}",
            grid_clip(&format!("{clip}.mp4")).display()
        ));
    }
    assert!(ingest.status().unwrap().success());
    let msgs = read_until(brokers, &t.transcripts, |m| {
        ids.iter().all(|id| finals_for(m, id) >= 1)
    })
    .await;
    (ids, msgs)
}

fn start_event(id: &str) -> Vec<u8> {
    mouthmap_contracts::encode_envelope(
        &LogitsEvent::Start(StreamStart {
            stream_id: id.into(),
            source: "test".into(),
            source_kind: SourceKind::File,
            fps: 25,
            started_at_ms: 0,
        }),
        &[],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_are_dead_lettered_and_silent_streams_time_out() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let t = Topics::new();
    let settings = KafkaSettings::new(&brokers, "t");
    t.create(&brokers).await;
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models/tiny-contract.onnx");
    let _inf = t.service(&brokers, "infer", &["--model", tiny.to_str().unwrap()]);
    let _dec = t.service(&brokers, "decode", &["--idle-timeout", "2s"]);
    let producer = Producer::new(&settings).unwrap();
    let send = |topic: &str, key: &str, payload: Vec<u8>| {
        let schema = if topic == t.mouths {
            TopicKind::Mouths
        } else {
            TopicKind::Logits
        };
        producer
            .send(
                &OutMessage::new(topic, key, payload)
                    .header(headers::SCHEMA, schema.schema_header()),
            )
            .unwrap()
    };

    // Malformed mouths and logits.
    send(&t.mouths, "bad-mouths", b"not a mouths message".to_vec())
        .await
        .unwrap();
    let short = LogitsWindow {
        stream_id: "bad-logits".into(),
        first_frame: 0,
        frames: 75,
        valid_frames: 75,
        classes: 28,
        vocabulary: (0..28).map(|i| i.to_string()).collect(),
        blank: 27,
        model_name: "m".into(),
        model_version: "1".into(),
        served_version: 0,
        shadow: false,
        newest_ingest_us: 0,
        face_share: 1.0,
    };
    send(
        &t.logits,
        "bad-logits",
        mouthmap_contracts::encode_envelope(&LogitsEvent::Window(short.clone()), &[0u8; 12]),
    )
    .await
    .unwrap();

    // A window whose sizes multiply past u32 (2^31 frames x 2 classes x 4
    // bytes wraps to 0): refused by its bounds, not sliced into a panic.
    let wraps = LogitsWindow {
        stream_id: "bad-wrap".into(),
        frames: 1 << 31,
        valid_frames: 1,
        classes: 2,
        vocabulary: vec!["a".into(), "_".into()],
        blank: 1,
        ..short.clone()
    };
    send(
        &t.logits,
        "bad-wrap",
        mouthmap_contracts::encode_envelope(&LogitsEvent::Window(wraps), &[]),
    )
    .await
    .unwrap();

    // A stream that starts, sends one window, and never ends.
    let id = unique("silent");
    send(&t.logits, &id, start_event(&id)).await.unwrap();
    let mut probs = Vec::new();
    for f in 0..75 {
        for k in 0..28 {
            // "1 2 ..." then blanks: class 1 on even frames under 10, blank elsewhere.
            let p: f32 = if (f < 10 && f % 2 == 0 && k == 1) || ((f >= 10 || f % 2 == 1) && k == 27)
            {
                0.9
            } else {
                0.1 / 27.0
            };
            probs.extend_from_slice(&p.to_le_bytes());
        }
    }
    let window = LogitsWindow {
        stream_id: id.clone(),
        ..short
    };
    send(
        &t.logits,
        &id,
        mouthmap_contracts::encode_envelope(&LogitsEvent::Window(window), &probs),
    )
    .await
    .unwrap();

    let dead = read_until(&brokers, &t.dlq, |m| m.len() >= 3).await;
    let reasons: HashMap<String, (String, String)> = dead
        .iter()
        .map(|m| {
            (
                m.key_str().unwrap().to_string(),
                (
                    m.header(headers::DLQ_STAGE).unwrap().to_string(),
                    m.header(headers::DLQ_REASON).unwrap().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(reasons["bad-mouths"].0, "infer");
    assert!(reasons["bad-mouths"].1.contains("envelope"), "{reasons:?}");
    assert_eq!(reasons["bad-logits"].0, "decode");
    assert!(
        reasons["bad-logits"].1.contains("payload is 12 bytes"),
        "{reasons:?}"
    );
    assert_eq!(reasons["bad-wrap"].0, "decode");
    assert!(
        reasons["bad-wrap"]
            .1
            .contains("frames in a window is 2147483648, over the limit"),
        "{reasons:?}"
    );

    let msgs = read_until(&brokers, &t.transcripts, |m| finals_for(m, &id) >= 1).await;
    let finals: Vec<Transcript> = msgs
        .iter()
        .filter(|m| m.key_str() == Some(id.as_str()) && m.header(headers::EVENT) == Some("final"))
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(finals.len(), 1);
    assert!(finals[0].timed_out, "the final says it timed out");
    assert_eq!(finals[0].text, "11111", "five separated class-1 characters");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_chunk_is_one_trace_across_all_four_services() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let (port, received) = otlp::start().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let t = Topics::new();
    let model = model().display().to_string();
    let traced = |role: &str, extra: &[&str]| {
        Proc::spawn(
            role,
            t.command(&brokers)
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                .arg(role)
                .args(["--metrics-listen", "127.0.0.1:0", "--group"])
                .arg(unique(role))
                .args(extra),
        )
    };
    let mut services = vec![
        traced("preprocess", &[]),
        traced("infer", &["--model", &model]),
        traced("decode", &[]),
    ];
    let id = unique("traced");
    let status = t
        .command(&brokers)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .arg("ingest")
        .arg(format!("{id}={}", grid_clip("bbie8n.mp4").display()))
        .status()
        .unwrap();
    assert!(status.success());
    read_until(&brokers, &t.transcripts, |m| finals_for(m, &id) >= 1).await;
    // SIGTERM: each service flushes its spans as it exits.
    for s in &mut services {
        assert!(s.terminate().success(), "{} exits cleanly", s.name);
    }

    let rx = received.lock().unwrap();
    let services_in = |trace: &str| -> Vec<&str> {
        let mut names: Vec<&str> = [
            "mouthmap-ingest",
            "mouthmap-preprocess",
            "mouthmap-infer",
            "mouthmap-decode",
        ]
        .into_iter()
        .filter(|svc| {
            rx.spans
                .iter()
                .any(|s| s.trace == trace && s.service.contains(svc))
        })
        .collect();
        names.dedup();
        names
    };
    let full: Vec<&otlp::Span> = rx
        .spans
        .iter()
        .filter(|s| s.name == "ingest.chunk" && services_in(&s.trace).len() == 4)
        .collect();
    assert!(
        !full.is_empty(),
        "no chunk's trace reached all four services; span names seen: {:?}",
        rx.spans
            .iter()
            .map(|s| (&s.service, &s.name))
            .collect::<std::collections::BTreeSet<_>>()
    );
    // The batch span links the chunks whose frames it carried.
    let batches: Vec<&otlp::Span> = rx
        .spans
        .iter()
        .filter(|s| s.name == "infer.batch")
        .collect();
    assert!(!batches.is_empty(), "an infer.batch span was exported");
    assert!(
        batches
            .iter()
            .any(|b| full.iter().any(|c| b.links.contains(&c.trace))),
        "the batch span links the chunk traces"
    );
}

/// Issue #5's load shape: four streams at once, two over RTMP through
/// nginx-rtmp and two from files, with two preprocess and two infer replicas
/// in their consumer groups.
#[tokio::test(flavor = "multi_thread")]
async fn four_streams_at_once_through_replicated_services() {
    if !available(&[Need::Broker, Need::NginxRtmp]) {
        return;
    }
    let brokers = brokers();
    let t = Topics::new();
    let model = model().display().to_string();
    let (pre_group, inf_group) = (unique("pre"), unique("inf"));
    let replica = |role: &str, group: &str, extra: &[&str]| {
        let port = free_port();
        let p = Proc::spawn(
            role,
            t.command(&brokers)
                .arg(role)
                .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
                .args(["--group", group])
                .args(extra),
        );
        (p, port)
    };
    let mut services = [
        replica("preprocess", &pre_group, &[]),
        replica("preprocess", &pre_group, &[]),
        replica("infer", &inf_group, &["--model", &model]),
        replica("infer", &inf_group, &["--model", &model]),
        replica("decode", &unique("dec"), &[]),
    ];
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
    wait_port(api, Duration::from_secs(30));
    // Replication is what this test shows: every replica holds partitions
    // of its group before the streams start (a group's second member is
    // given its share by a rebalance that can take seconds, and streams
    // done before it would all go through the first).
    for (p, port) in &services[..4] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report = readyz(*port).await;
            if report.as_ref().is_some_and(|r| partitions_held(r) > 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} replica on :{port} was given no partitions of its group in 60 s: {report:?}",
                p.name
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    let streams = [
        ("bras6n", "bin red at s six now", true),
        ("bwim4n", "bin white in m four now", true),
        ("lgiz2n", "lay green in z two now", false),
        ("lrbr6p", "lay red by r six please", false),
    ];
    let ids: Vec<String> = streams.iter().map(|(c, _, _)| unique(c)).collect();
    let mut publishers: Vec<Proc> = streams
        .iter()
        .zip(&ids)
        .filter(|((_, _, rtmp), _)| *rtmp)
        .map(|((clip, _, _), id)| {
            ffmpeg_publish(&grid_clip(&format!("{clip}.mp4")), &nginx.url(id))
        })
        .collect();
    let mut files = t.command(&brokers);
    files.args(["ingest", "--realtime"]);
    for ((clip, _, rtmp), id) in streams.iter().zip(&ids) {
        if !rtmp {
            files.arg(format!(
                "{id}={}",
                grid_clip(&format!("{clip}.mp4")).display()
            ));
        }
    }
    assert!(files.status().unwrap().success());
    for p in &mut publishers {
        assert!(
            p.wait(Duration::from_secs(60)).success(),
            "ffmpeg published"
        );
    }

    let msgs = read_until(&brokers, &t.transcripts, |m| {
        ids.iter().all(|id| finals_for(m, id) >= 1)
    })
    .await;
    for ((clip, sentence, _), id) in streams.iter().zip(&ids) {
        check_stream(&msgs, id, clip, sentence);
    }
    // Every replica still runs, is ready and holds partitions of its group:
    // streams that all went through one survivor would not show replication.
    for (p, port) in &mut services {
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "{} replica on :{port} is alive",
            p.name
        );
        let report = readyz(*port)
            .await
            .unwrap_or_else(|| panic!("replica on :{port} is ready"));
        assert!(
            partitions_held(&report) > 0,
            "replica on :{port} holds partitions: {report}"
        );
    }
}

/// Bad messages on the frames topic, each from a stream of its own, while a
/// good stream goes through: frames out of order, a chunk whose sizes do
/// not match its frame count, a corrupt JPEG, a message from a future
/// schema version and a 3 MB message (over the 1 MB every producer here
/// keeps to). Each is dead-lettered with its reason (the 3 MB one cut to
/// its head, its size named); the good stream reads its sentence, as if
/// they were not there. (A 10 MB message: Apache Kafka refuses it at
/// produce, the topics' `max.message.bytes`; the local broker takes it but
/// its consumers cannot fetch over about 4 MB, see docs/reliability.md.)
#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_are_dead_lettered_with_their_reason_and_a_good_stream_goes_through() {
    use mouthmap_contracts::{FrameChunk, FrameEvent, FrameInfo, PixelFormat};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let t = Topics::new();
    t.create(&brokers).await;
    let _stages = t.stages(&brokers);

    let chunk = |id: &str, format, indexes: &[u64], sizes: Vec<u32>| {
        FrameEvent::Chunk(FrameChunk {
            stream_id: id.into(),
            seq: 0,
            width: 64,
            height: 64,
            format,
            frames: indexes
                .iter()
                .map(|&index| FrameInfo {
                    index,
                    pts_ns: index * 40_000_000,
                    ingest_us: 1,
                })
                .collect(),
            sizes,
            discontinuity: false,
        })
    };
    let start = |id: &str| {
        FrameEvent::Start(StreamStart {
            stream_id: id.into(),
            source: "test".into(),
            source_kind: SourceKind::File,
            fps: 25,
            started_at_ms: 0,
        })
    };
    let (order, count, jpeg, future, huge) = (
        unique("bad-order"),
        unique("bad-count"),
        unique("bad-jpeg"),
        unique("bad-future"),
        unique("bad-huge"),
    );
    let mut corrupt = vec![0xFF, 0xD8, 0xFF, 0xE0];
    corrupt.extend(std::iter::repeat_n(0x5Au8, 96));
    let bad: Vec<(&str, Vec<u8>, String)> = vec![
        (
            &order,
            mouthmap_contracts::encode_envelope(
                &chunk(&order, PixelFormat::Gray8, &[3, 2], Vec::new()),
                &vec![0u8; 2 * 64 * 64],
            ),
            "frames/v1".into(),
        ),
        (
            &count,
            mouthmap_contracts::encode_envelope(
                &chunk(&count, PixelFormat::Jpeg, &[0, 1, 2], vec![10, 10]),
                &[0u8; 20],
            ),
            "frames/v1".into(),
        ),
        (
            &jpeg,
            mouthmap_contracts::encode_envelope(
                &chunk(&jpeg, PixelFormat::Jpeg, &[0], vec![100]),
                &corrupt,
            ),
            "frames/v1".into(),
        ),
        (
            &future,
            mouthmap_contracts::encode_envelope(&start(&future), &[]),
            "frames/v2".into(),
        ),
        (&huge, vec![b'x'; 3 << 20], "frames/v1".into()),
    ];
    // A plain client: the pipeline's own producer refuses to send 3 MB.
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.max.bytes", "16000000")
        .create()
        .unwrap();
    let good = unique("good");
    let mut ingest = t.command(&brokers);
    ingest
        .args(["ingest", "--realtime"])
        .arg(format!("{good}={}", grid_clip("bbie8n.mp4").display()));
    let mut ingest = Proc::spawn("ingest", &mut ingest);
    for (id, payload, schema) in &bad {
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: headers::SCHEMA,
            value: Some(schema.as_str()),
        });
        raw.send(
            FutureRecord::to(&t.frames)
                .key(*id)
                .payload(payload)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("{id}: {e}"));
    }
    assert!(tokio::task::block_in_place(|| ingest.wait(Duration::from_secs(60))).success());

    let dead = read_until(&brokers, &t.dlq, |m| m.len() >= bad.len()).await;
    let by_key: HashMap<&str, &mouthmap_bus::kafka::InMessage> =
        dead.iter().map(|m| (m.key_str().unwrap(), m)).collect();
    for (id, expect) in [
        (&order, "frame indexes in a chunk must increase"),
        (&count, "needs 3 non-zero `sizes`, has 2"),
        (&jpeg, "JPEG"),
        (&future, "frames/v2"),
        (&huge, "3145728 bytes, over the 1000000-byte limit"),
    ] {
        let m = by_key
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} dead-lettered"));
        let reason = m.header(headers::DLQ_REASON).unwrap();
        assert!(
            reason.contains(expect),
            "{id}: {reason:?} should say {expect:?}"
        );
        assert_eq!(m.header(headers::DLQ_STAGE), Some("preprocess"));
    }
    let cut = by_key[huge.as_str()];
    assert_eq!(cut.payload.len(), mouthmap_bus::kafka::DEAD_LETTER_KEEPS);
    assert_eq!(
        cut.header(mouthmap_bus::kafka::DLQ_TRUNCATED),
        Some("3145728")
    );

    let msgs = read_until(&brokers, &t.transcripts, |m| finals_for(m, &good) >= 1).await;
    check_stream(&msgs, &good, "bbie8n", "bin blue in e eight now");
}
