//! What the feature store costs the decoder, against a real Redis that the
//! benchmark starts (`redis-server` on a free port):
//!
//! 1. the latency of one enrichment lookup (a stream's views, then its
//!    speaker's), without the cache and with it (p50, p99);
//! 2. the decoder's messages per second (`DecodeHandler`, synthetic
//!    posteriors of two GRID sentences per stream, 7 windows and an end,
//!    open decoding in every case), with enrichment off, on without the
//!    cache, and on with the cache.
//!
//!     cargo bench -p mouthmap-decoder --bench enrichment
//!
//! Writes target/bench/enrichment.json and prints a summary.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mouthmap_bus::kafka::{Handler, InMessage, Incoming};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_contracts::{LogitsEvent, encode_envelope};
use mouthmap_decoder::service::DecodeHandler;
use mouthmap_decoder::stage::{DecodeSettings, Decoder};
use mouthmap_decoder::synth;
use mouthmap_feature_store::enrich::Enricher;
use mouthmap_feature_store::{OnlineStore, Registry, Row, StoreSettings, Value};
use serde_json::json;

const STREAMS: usize = 50;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn messages() -> Vec<InMessage> {
    let text = "bin blue at f two now | lay green by x nine again";
    // As peaked as the real model's output: the rest under the beam's prune.
    let probs = synth::posteriors(text, 12, 0.999);
    let mut out = Vec::new();
    for s in 0..STREAMS {
        let id = format!("stream-{s}");
        let mut events: Vec<(LogitsEvent, Vec<u8>)> = synth::windows(&id, &probs, 25);
        events.push((synth::end(&id), Vec::new()));
        for (offset, (ev, payload)) in events.into_iter().enumerate() {
            out.push(InMessage {
                topic: "logits".into(),
                partition: 0,
                offset: offset as i64,
                key: Some(id.clone().into_bytes()),
                payload: encode_envelope(&ev, &payload),
                headers: Vec::new(),
                timestamp_ms: None,
            });
        }
    }
    out
}

async fn decode_rate(enricher: Option<Enricher>, msgs: &[InMessage]) -> f64 {
    let mut h = DecodeHandler {
        stage: Decoder::new(DecodeSettings::default()),
        transcripts_topic: "transcripts".into(),
        metrics: StageMetrics::new("bench"),
        idle_timeout: Duration::from_secs(60),
        enricher,
        open: Default::default(),
        clock: Default::default(),
        published_finals: Default::default(),
        shadow: None,
    };
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 2 || start.elapsed() < Duration::from_secs(4) {
        for m in msgs {
            // Decoded as the consume loop does, so the contract checks count.
            let (event, payload) = m.decode::<LogitsEvent>().unwrap();
            h.handle(Incoming {
                event: &event,
                payload,
                msg: m,
            })
            .await
            .unwrap();
        }
        rounds += 1;
    }
    (rounds * msgs.len()) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server)");
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = OnlineStore::new(
        StoreSettings::new(format!("redis://127.0.0.1:{port}/0")),
        Arc::new(Registry::builtin()),
    )
    .unwrap();
    for s in 0..STREAMS {
        let mut settings = Row::new();
        settings.insert(
            "speaker_id".into(),
            Value::Str(format!("speaker-{}", s % 10)),
        );
        // No grammar: decoding is the same with enrichment on and off.
        settings.insert("language".into(), Value::Str("en".into()));
        store
            .write("stream_settings", &format!("stream-{s}"), &settings)
            .await
            .unwrap();
        let mut q = Row::new();
        q.insert("face_share".into(), Value::Float(0.99));
        q.insert("frames".into(), Value::Int(150));
        store
            .write("stream_quality", &format!("stream-{s}"), &q)
            .await
            .unwrap();
    }
    for p in 0..10 {
        let mut a = Row::new();
        a.insert("streams_seen".into(), Value::Int(3));
        a.insert("words".into(), Value::Int(36));
        store
            .write("speaker_activity", &format!("speaker-{p}"), &a)
            .await
            .unwrap();
    }

    let mut lookup = serde_json::Map::new();
    for (name, cache) in [
        ("no_cache", Duration::ZERO),
        ("cache_1s", Duration::from_secs(1)),
    ] {
        let mut e = Enricher::new(store.clone(), cache, Duration::from_secs(1));
        let mut ms = Vec::new();
        for i in 0..5000 {
            let id = format!("stream-{}", i % STREAMS);
            let t = Instant::now();
            let found = e.lookup(&id).await.unwrap();
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(found.speaker_id.is_some());
        }
        let (p50, p99) = (percentile(&mut ms, 0.5), percentile(&mut ms, 0.99));
        println!(
            "lookup {name}: p50 {p50:.3} ms, p99 {p99:.3} ms (5000 lookups over {STREAMS} streams)"
        );
        lookup.insert(
            name.into(),
            json!({"p50_ms": p50, "p99_ms": p99, "lookups": 5000}),
        );
    }

    let msgs = messages();
    let mut rates = serde_json::Map::new();
    for (name, enricher) in [
        ("off", None),
        (
            "on_no_cache",
            Some(Enricher::new(
                store.clone(),
                Duration::ZERO,
                Duration::from_millis(30),
            )),
        ),
        (
            "on_cache_1s",
            Some(Enricher::new(
                store.clone(),
                Duration::from_secs(1),
                Duration::from_millis(30),
            )),
        ),
    ] {
        let r = decode_rate(enricher, &msgs).await;
        println!("decoder, enrichment {name}: {r:.0} messages/s");
        rates.insert(name.into(), json!(r));
    }
    let _ = redis.kill();
    let _ = redis.wait();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let report = json!({
        "streams": STREAMS, "messages_per_round": msgs.len(),
        "lookup": lookup, "decoder_messages_per_s": rates,
    });
    std::fs::write(
        out.join("enrichment.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("wrote target/bench/enrichment.json");
}
