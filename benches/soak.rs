//! Soak: a steady load for a long time, every service its own process on
//! the real broker. Each of N lanes streams the 30 s validation video in
//! real time through one long-running ingest (its HTTP API), one stream
//! after another, for M minutes. Every minute, each service's resident
//! memory is sampled. At the end: streams started, finals (exactly one per
//! stream, none timed out), windows lost (a final that covers less than
//! its stream), frames lost and dead letters; memory is flat when the mean
//! of the last 10 minutes is within 10% of minutes 5 to 10.
//!
//!     scripts/stack up --infra
//!     cargo bench --bench soak -- --minutes 30 --streams 4
//!
//! Writes target/bench/soak.json; `scripts/soak` runs it and renders the
//! plot and the section of docs/reliability.md.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mouthmap_bus::kafka::{InMessage, KafkaSettings, StartAt, consumer};
use mouthmap_contracts::{Transcript, TranscriptKind};
use serde_json::json;

/// A stream is started on each lane this often (the video is 30 s long).
const EVERY: Duration = Duration::from_secs(32);

/// A final transcript among the messages read, kept under its stream.
fn keep_final(finals: &mut HashMap<String, Vec<Transcript>>, m: &InMessage) {
    if let Ok(t) = serde_json::from_slice::<Transcript>(&m.payload)
        && t.kind == TranscriptKind::Final
    {
        finals.entry(t.stream_id.clone()).or_default().push(t);
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let brokers = std::env::var("MOUTHMAP_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let minutes: u64 = arg("--minutes").map_or(30, |m| m.parse().expect("--minutes 30"));
    let lanes: usize = arg("--streams").map_or(4, |m| m.parse().expect("--streams 4"));
    let out = root().join("target/bench");
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let video = long_video(&out);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mouthmap"));
    let model = root().join("models/mouthmap-lipnet-grid-s1/4/model.onnx");
    let face = shared().join("models/yunet/face_detection_yunet_2026may.onnx");
    let topics: HashMap<&str, String> = [
        ("MOUTHMAP_FRAMES_TOPIC", unique("soak-frames")),
        ("MOUTHMAP_MOUTHS_TOPIC", unique("soak-mouths")),
        ("MOUTHMAP_LOGITS_TOPIC", unique("soak-logits")),
        ("MOUTHMAP_TRANSCRIPTS_TOPIC", unique("soak-transcripts")),
        ("MOUTHMAP_DEAD_LETTER_TOPIC", unique("soak-dlq")),
    ]
    .into_iter()
    .collect();
    let token = unique("soak-token");
    let api = free_port();
    let mut services: Vec<(Service, u16)> = Vec::new();
    for role in ["ingest", "preprocess", "infer", "decode"] {
        let port = if role == "ingest" { api } else { free_port() };
        let log = logs.join(format!("soak-{role}.log"));
        let mut c = Command::new(&bin);
        c.envs(topics.iter().map(|(k, v)| (*k, v.as_str())))
            .env("MOUTHMAP_BROKERS", &brokers)
            .env("MOUTHMAP_FACE_MODEL", &face)
            .env("MOUTHMAP_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            // No feature store: the soak measures the pipeline alone.
            .env("MOUTHMAP_FEATURE_STORE", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .arg(role);
        match role {
            "ingest" => {
                c.args(["--listen", &format!("127.0.0.1:{api}")])
                    .args(["--api-token", &token, "--media-root"])
                    .arg(&out)
                    .args(["--max-streams", &(2 * lanes).to_string()]);
            }
            _ => {
                c.args(["--metrics-listen", &format!("127.0.0.1:{port}")])
                    .args(["--group", &unique(role)]);
            }
        }
        if role == "infer" {
            c.arg("--model").arg(&model);
        }
        let child = c.spawn().expect("service starts");
        services.push((
            Service {
                role: role.into(),
                child,
                log,
            },
            port,
        ));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    let reader = consumer(
        &KafkaSettings::new(&brokers, "soak"),
        &unique("soak-reader"),
        &[&topics["MOUTHMAP_TRANSCRIPTS_TOPIC"]],
        StartAt::Earliest,
    )
    .unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let run_for = Duration::from_secs(minutes * 60);
    let mut next_start = started;
    let mut next_sample = started;
    let mut streams: Vec<String> = Vec::new();
    let mut finals: HashMap<String, Vec<Transcript>> = HashMap::new();
    let mut samples: Vec<serde_json::Value> = Vec::new();
    let mut refused = 0u64;
    let mut k = 0;
    loop {
        let now = Instant::now();
        let running = now.duration_since(started) < run_for;
        if running && now >= next_start {
            for lane in 0..lanes {
                let id = format!("soak-{lane}-{k}");
                let r = http
                    .post(format!("http://127.0.0.1:{api}/v1/streams"))
                    .bearer_auth(&token)
                    .json(&json!({"source": video, "id": id, "realtime": true}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => streams.push(id),
                    other => {
                        refused += 1;
                        eprintln!("stream {id} not started: {other:?}");
                    }
                }
            }
            k += 1;
            next_start += EVERY;
        }
        if now >= next_sample {
            let mut rss = serde_json::Map::new();
            for (s, _) in &services {
                rss.insert(s.role.clone(), json!(rss_mib(s.child.id())));
            }
            for name in ["tansu", "redis-server"] {
                let mib: f64 = pids_named(name).into_iter().map(rss_mib).sum();
                rss.insert(name.into(), json!(mib));
            }
            let minute = now.duration_since(started).as_secs_f64() / 60.0;
            println!(
                "{minute:5.1} min: {} streams, {} finals, RSS MiB {rss:?}",
                streams.len(),
                finals.len()
            );
            samples.push(json!({"minute": minute, "rss_mib": rss}));
            next_sample += Duration::from_secs(60);
        }
        let all_final = streams.iter().all(|id| finals.contains_key(id));
        if !running
            && (all_final || now.duration_since(started) > run_for + Duration::from_secs(120))
        {
            break;
        }
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), reader.recv()).await {
            keep_final(&mut finals, &InMessage::from_borrowed(&m));
        }
    }
    // Finals arriving late would still be duplicates: a last look.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), reader.recv()).await {
            keep_final(&mut finals, &InMessage::from_borrowed(&m));
        }
    }

    let mut counters = serde_json::Map::new();
    let ingest_page = http
        .get(format!("http://127.0.0.1:{api}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .ok();
    let ingest_page = match ingest_page {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    counters.insert(
        "frames_lost".into(),
        json!(metric(&ingest_page, "mouthmap_frames_lost_total")),
    );
    let mut errors = 0.0;
    let mut error_kinds = Vec::new();
    for (s, port) in &services {
        if s.role == "ingest" {
            continue;
        }
        let page = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .ok();
        let page = match page {
            Some(r) => r.text().await.unwrap_or_default(),
            None => String::new(),
        };
        errors += metric(&page, "mouthmap_errors_total");
        error_kinds.extend(
            page.lines()
                .filter(|l| l.starts_with("mouthmap_errors_total"))
                .map(str::to_string),
        );
    }
    counters.insert("stage_errors".into(), json!(errors));
    counters.insert("stage_errors_by_kind".into(), json!(error_kinds));
    for (s, _) in &mut services {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(s.child.id().to_string())
            .status();
    }
    for (s, _) in &mut services {
        let until = Instant::now() + Duration::from_secs(20);
        while s.child.try_wait().ok().flatten().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = s.child.kill();
        let _ = s.child.wait();
    }

    // A 30 s stream's final covers about 30 s; less means windows were lost.
    let expected_ms = 29_000;
    let missing = streams
        .iter()
        .filter(|id| !finals.contains_key(*id))
        .count();
    let duplicated = finals.values().filter(|f| f.len() > 1).count();
    let timed_out = finals.values().flatten().filter(|t| t.timed_out).count();
    let short = finals
        .values()
        .filter(|f| f[0].covered_ms < expected_ms)
        .count();
    let mean = |from: f64, to: f64, role: &str| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| {
                let m = s["minute"].as_f64().unwrap();
                m >= from && m <= to
            })
            .filter_map(|s| s["rss_mib"][role].as_f64())
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let total = minutes as f64;
    let mut flat = serde_json::Map::new();
    let mut all_flat = true;
    for role in ["ingest", "preprocess", "infer", "decode"] {
        let (early, late) = (mean(5.0, 10.0, role), mean(total - 10.0, total, role));
        let ok = late <= early * 1.10;
        all_flat &= ok;
        flat.insert(
            role.into(),
            json!({"minutes_5_10_mib": early, "last_10_mib": late, "flat": ok}),
        );
    }
    let report = json!({
        "minutes": minutes, "lanes": lanes, "stream_seconds": 30,
        "streams": streams.len(), "refused": refused,
        "finals": finals.len(), "missing_finals": missing,
        "duplicate_finals": duplicated, "timed_out": timed_out,
        "streams_with_lost_windows": short,
        "counters": counters, "memory": flat, "memory_flat": all_flat,
        "samples": samples,
        "command": format!("cargo bench --bench soak -- --minutes {minutes} --streams {lanes}"),
        "brokers": brokers,
    });
    std::fs::write(
        out.join("soak.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!(
        "{} streams in {minutes} min: {} finals, {missing} missing, {duplicated} duplicated, {timed_out} timed out, {short} with lost windows; memory flat: {all_flat}; wrote target/bench/soak.json",
        streams.len(),
        finals.len()
    );
}
