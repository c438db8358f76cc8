//! Ingest and preprocess as separate processes on the real broker: a clip in,
//! 75 crops out in order with start and end; malformed frames go to the
//! dead-letter topic with a reason while the good stream goes on.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use mouthmap_bus::kafka::{InMessage, KafkaSettings, OutMessage, Producer};
use mouthmap_bus::telemetry::trace_id_of;
use mouthmap_contracts::{
    self, FrameChunk, FrameEvent, FrameInfo, MouthEvent, PixelFormat, headers,
};

#[tokio::test(flavor = "multi_thread")]
async fn clip_becomes_75_ordered_crops_and_bad_frames_become_dead_letters() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let (frames, mouths, dlq) = (unique("frames"), unique("mouths"), unique("dlq"));
    let producer = Producer::new(&KafkaSettings::new(&brokers, "test")).unwrap();
    mouthmap_bus::kafka::ensure_topics(
        &KafkaSettings::new(&brokers, "t"),
        &[&frames, &mouths, &dlq],
        3,
        1,
    )
    .await
    .unwrap();

    // Bad messages: not an envelope, a payload shorter than declared, frames
    // too small, a broken JPEG, sizes over their limits, a JPEG bomb; each is
    // dead-lettered, and the good clip after them still comes through.
    let short = FrameChunk {
        stream_id: "bad-short".into(),
        seq: 0,
        width: 360,
        height: 288,
        format: PixelFormat::I420,
        frames: vec![FrameInfo {
            index: 0,
            pts_ns: 0,
            ingest_us: 0,
        }],
        sizes: Vec::new(),
        discontinuity: false,
    };
    let tiny = FrameChunk {
        stream_id: "bad-tiny".into(),
        width: 8,
        height: 8,
        ..short.clone()
    };
    let broken_jpeg = FrameChunk {
        stream_id: "bad-jpeg".into(),
        format: PixelFormat::Jpeg,
        sizes: vec![24],
        ..short.clone()
    };
    // A width whose I420 size would overflow, and a JPEG bomb: a 1.5 kB
    // file whose header declares 16384x16384 (hundreds of MB decoded), in a
    // chunk that says 40x32 and in one that says 16384x16384.
    let wide = FrameChunk {
        stream_id: "bad-wide".into(),
        width: 1_000_000,
        ..short.clone()
    };
    let mut bomb = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pattern-40x32.jpg"),
    )
    .unwrap();
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0x40, 0x00, 0x40, 0x00]);
    let bomb_chunk = FrameChunk {
        stream_id: "bad-bomb".into(),
        width: 40,
        height: 32,
        format: PixelFormat::Jpeg,
        sizes: vec![bomb.len() as u32],
        ..short.clone()
    };
    let bomb_declared = FrameChunk {
        stream_id: "bad-bomb-declared".into(),
        width: 16384,
        height: 16384,
        ..bomb_chunk.clone()
    };
    // A frame size within the contract but over the preprocessor's pixel
    // cap (4000x2200): refused before anything is decoded.
    let huge = FrameChunk {
        stream_id: "bad-huge".into(),
        width: 4000,
        height: 2200,
        format: PixelFormat::Jpeg,
        sizes: vec![10],
        ..short.clone()
    };
    let bad = [
        (
            "bad-huge",
            mouthmap_contracts::encode_envelope(&FrameEvent::Chunk(huge), &[0xFFu8; 10]),
        ),
        (
            "bad-wide",
            mouthmap_contracts::encode_envelope(&FrameEvent::Chunk(wide), &[0u8; 64]),
        ),
        (
            "bad-bomb",
            mouthmap_contracts::encode_envelope(&FrameEvent::Chunk(bomb_chunk), &bomb),
        ),
        (
            "bad-bomb-declared",
            mouthmap_contracts::encode_envelope(&FrameEvent::Chunk(bomb_declared), &bomb),
        ),
        ("bad-garbage", b"\x00\x01 definitely not a frame".to_vec()),
        (
            "bad-short",
            mouthmap_contracts::encode_envelope(&FrameEvent::Chunk(short), &[0u8; 1000]),
        ),
        (
            "bad-tiny",
            mouthmap_contracts::encode_envelope(&FrameEvent::Chunk(tiny), &[0u8; 96]),
        ),
        (
            "bad-jpeg",
            mouthmap_contracts::encode_envelope(&FrameEvent::Chunk(broken_jpeg), &[0xFFu8; 24]),
        ),
    ];
    for (key, payload) in bad {
        producer
            .send_and_wait(OutMessage::new(&frames, key, payload))
            .await
            .unwrap();
    }

    let mut pre = Proc::spawn(
        "preprocess",
        mouthmap(&brokers, &frames)
            .env("MOUTHMAP_MOUTHS_TOPIC", &mouths)
            .env("MOUTHMAP_DEAD_LETTER_TOPIC", &dlq)
            .env("MOUTHMAP_FACE_MODEL", face_model())
            .args(["preprocess", "--metrics-listen", "127.0.0.1:0", "--group"])
            .arg(unique("pre")),
    );
    let id = unique("clip");
    let status = mouthmap(&brokers, &frames)
        .arg("ingest")
        .arg(format!("{id}={}", grid_clip("bbaf2n.mp4").display()))
        .status()
        .unwrap();
    assert!(status.success());

    let out = read_until(&brokers, &mouths, |seen| {
        seen.iter()
            .any(|m| m.key_str() == Some(id.as_str()) && m.header(headers::EVENT) == Some("end"))
    })
    .await;
    let ours: Vec<&InMessage> = out
        .iter()
        .filter(|m| m.key_str() == Some(id.as_str()))
        .collect();
    let events: Vec<(MouthEvent, usize)> = ours
        .iter()
        .map(|m| {
            assert_eq!(m.header(headers::SCHEMA), Some("mouths/v1"));
            let (e, p) = m
                .decode::<MouthEvent>()
                .expect("mouths message follows the contract");
            (e, p.len())
        })
        .collect();
    assert!(matches!(events[0].0, MouthEvent::Start(_)));
    let mut next = 0u64;
    for (e, len) in &events[1..events.len() - 1] {
        let MouthEvent::Chunk(c) = e else {
            panic!("only chunks between start and end")
        };
        assert_eq!((c.width, c.height), (140, 46));
        assert_eq!(*len, 140 * 46 * c.frames.len());
        for (f, q) in c.frames.iter().zip(&c.quality) {
            assert_eq!(f.index, next, "crops in order");
            assert!(q.face_found, "face on frame {}", f.index);
            next += 1;
        }
    }
    assert_eq!(next, 75, "75 crops");
    let MouthEvent::End(end) = &events.last().unwrap().0 else {
        panic!("ends with end")
    };
    assert_eq!(end.end.frames, 75);
    assert_eq!(end.quality.frames, 75);
    assert_eq!(end.quality.face_share, 1.0);
    assert!(!end.quality.no_face);

    // Each crop message continues the trace of the frames chunk it came from.
    let frame_traces: HashSet<String> = read_until(&brokers, &frames, |s| {
        s.iter()
            .any(|m| m.key_str() == Some(id.as_str()) && m.header(headers::EVENT) == Some("end"))
    })
    .await
    .iter()
    .filter(|m| m.key_str() == Some(id.as_str()))
    .map(|m| {
        trace_id_of(m.header("traceparent").unwrap())
            .unwrap()
            .to_string()
    })
    .collect();
    for m in &ours {
        let t = trace_id_of(m.header("traceparent").expect("traceparent")).unwrap();
        assert!(
            frame_traces.contains(t),
            "mouths message starts a new trace {t}"
        );
    }

    let dead = read_until(&brokers, &dlq, |s| s.len() >= 8).await;
    let reasons: HashMap<String, String> = dead
        .iter()
        .map(|m| {
            (
                m.key_str().unwrap().to_string(),
                m.header(headers::DLQ_REASON).unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        reasons["bad-garbage"].contains("envelope magic"),
        "{reasons:?}"
    );
    assert!(
        reasons["bad-short"].contains("payload is 1000 bytes"),
        "{reasons:?}"
    );
    assert!(reasons["bad-tiny"].contains("too small"), "{reasons:?}");
    assert!(
        reasons["bad-huge"].contains("over the 8294400-pixel limit"),
        "{reasons:?}"
    );
    assert!(
        reasons["bad-wide"].contains("width is 1000000, over the limit"),
        "{reasons:?}"
    );
    assert!(
        reasons["bad-bomb"].contains("a 16384x16384 JPEG in a chunk of 40x32 frames"),
        "{reasons:?}"
    );
    assert!(
        reasons["bad-bomb-declared"].contains("width is 16384, over the limit"),
        "{reasons:?}"
    );
    assert!(
        reasons["bad-jpeg"].contains("frame 0 of chunk 0: not a decodable JPEG"),
        "{reasons:?}"
    );
    assert!(
        dead.iter()
            .all(|m| m.header(headers::DLQ_STAGE) == Some("preprocess"))
    );
    assert!(
        pre.terminate().success(),
        "preprocess exits cleanly on SIGTERM"
    );
}
