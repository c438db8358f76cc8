//! Spans reach an OTLP receiver, and the `traceparent` on each Kafka message
//! belongs to a trace the receiver got.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use mouthmap_bus::telemetry::trace_id_of;

#[tokio::test(flavor = "multi_thread")]
async fn chunk_spans_reach_otlp_and_match_kafka_traceparents() {
    if !available(&[Need::Broker]) {
        return;
    }
    let brokers = brokers();
    let (port, received) = otlp::start().await;

    let topic = unique("frames");
    let id = unique("traced");
    let status = mouthmap(&brokers, &topic)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .arg("ingest")
        .arg(format!("{id}={}", grid_clip("bbaf2n.mp4").display()))
        .status()
        .unwrap();
    assert!(status.success());

    let streams = collect_streams(&brokers, &topic, &[&id], Duration::from_secs(60)).await;
    let from_kafka: Vec<String> = streams[&id]
        .iter()
        .map(|s| {
            let tp = s
                .msg
                .header("traceparent")
                .expect("every message carries traceparent");
            trace_id_of(tp).expect("valid traceparent").to_string()
        })
        .collect();
    // The exporter flushed before ingest exited, but give the receiver a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: HashSet<String> = received
            .lock()
            .unwrap()
            .spans
            .iter()
            .map(|s| s.trace.clone())
            .collect();
        if from_kafka.iter().all(|t| got.contains(t)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} Kafka trace ids reached the OTLP receiver",
            from_kafka.iter().filter(|t| got.contains(*t)).count(),
            from_kafka.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rx = received.lock().unwrap();
    let chunk_spans: Vec<_> = rx
        .spans
        .iter()
        .filter(|s| s.name == "ingest.chunk")
        .collect();
    // The clip's 75 frames in ingest's default chunks (6 frames: 13 chunks).
    let chunks =
        75usize.div_ceil(mouthmap_ingest::chunker::ChunkPolicy::default().frames_per_chunk);
    assert_eq!(
        chunk_spans.len(),
        chunks,
        "one span per chunk of the clip's 75 frames"
    );
    assert!(
        chunk_spans
            .iter()
            .all(|s| s.service.contains("mouthmap-ingest")),
        "{:?}",
        chunk_spans[0].service
    );
    // Each chunk is its own trace, so one chunk can be followed across services.
    let distinct: HashSet<_> = chunk_spans.iter().map(|s| &s.trace).collect();
    assert_eq!(distinct.len(), chunks);
}
