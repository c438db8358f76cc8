//! The whole pipeline under load, every service its own process on the real
//! broker (and Redis): N streams of 30 s (ten validation clips back to back)
//! ingested in real time at once, for N = 1, 2, 4, 8, 12, ... Per N: whether the
//! pipeline keeps up, the latency from a frame's ingest to the first partial
//! transcript that covers it (p50/p95/p99), each service's peak memory and
//! CPU time, and the CPU time of the broker and Redis meanwhile (when they
//! run on this machine).
//!
//!     scripts/stack up --infra
//!     cargo bench --bench pipeline [-- --streams 1,2,4,8] [--modes separate,chained] [--model PATH] [--out FILE]
//!
//! Two modes, each swept in turn: `separate` (every stage its own process,
//! the default deployment; preprocess as `--preprocess-replicas` replicas,
//! 2 by default, one replica of the others) and `chained` (the mouth crop
//! inside ingest, `ingest --crop`, publishing `mouths` directly).
//!
//! Writes target/bench/pipeline.json, or --out (scripts/bench renders the report).
//!
//! A load is sustained when every stream's final arrives, and within 5 s of
//! the streams' real-time end (a slow pipeline that holds capture back keeps
//! its per-frame latency flat, but ends late), the median latency over the
//! last third of the frames is within a second of the first third's (no
//! growing backlog), and p99 stays under 5 s.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

use mouthmap_bus::kafka::{InMessage, KafkaSettings, StartAt, consumer};
use mouthmap_contracts::{Transcript, TranscriptKind};
use serde_json::json;

/// Latency of every frame to the first partial covering it, in stream order.
fn frame_latencies(partials: &[(i64, Transcript)]) -> Vec<f64> {
    let mut out = Vec::new();
    let mut covered_before = 0u64;
    for (ts, t) in partials {
        if t.kind != TranscriptKind::Partial || t.covered_ms <= covered_before {
            continue;
        }
        // The newest frame covered was ingested latency_ms before publication;
        // frames were ingested 40 ms apart (real-time pacing).
        let newest_ingest = *ts as f64 - t.latency_ms;
        let newest_ms = t.covered_ms - 40;
        let mut f = covered_before;
        while f < t.covered_ms {
            let ingest = newest_ingest - (newest_ms - f) as f64;
            out.push(*ts as f64 - ingest);
            f += 40;
        }
        covered_before = t.covered_ms;
    }
    out
}

/// Waits (up to 60 s) until every service's /readyz names partitions.
async fn wait_for_partitions(ports: &[u16]) {
    let until = Instant::now() + Duration::from_secs(60);
    for port in ports {
        loop {
            let held = tokio::task::spawn_blocking({
                let url = format!("http://127.0.0.1:{port}/readyz");
                move || {
                    reqwest::blocking::get(url)
                        .and_then(|r| r.json::<serde_json::Value>())
                        .map(|v| {
                            v["detail"]["partitions"]
                                .as_array()
                                .is_some_and(|p| !p.is_empty())
                        })
                        .unwrap_or(false)
                }
            })
            .await
            .unwrap_or(false);
            if held {
                break;
            }
            assert!(
                Instant::now() < until,
                "the service on :{port} holds no partitions after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

struct Run {
    report: serde_json::Value,
    sustained: bool,
}

#[allow(clippy::too_many_arguments)]
async fn run_load(
    n: usize,
    video: &Path,
    logs: &Path,
    brokers: &str,
    bin: &Path,
    model: Option<&Path>,
    face: &Path,
    seconds: u64,
    chained: bool,
    preprocess_replicas: usize,
) -> Run {
    let topics: HashMap<&str, String> = [
        ("MOUTHMAP_FRAMES_TOPIC", unique("bench-frames")),
        ("MOUTHMAP_MOUTHS_TOPIC", unique("bench-mouths")),
        ("MOUTHMAP_LOGITS_TOPIC", unique("bench-logits")),
        ("MOUTHMAP_TRANSCRIPTS_TOPIC", unique("bench-transcripts")),
        ("MOUTHMAP_DEAD_LETTER_TOPIC", unique("bench-dlq")),
    ]
    .into_iter()
    .collect();
    let command = |role: &str| {
        let mut c = Command::new(bin);
        c.envs(topics.iter().map(|(k, v)| (*k, v.as_str())))
            .env("MOUTHMAP_BROKERS", brokers)
            .env("MOUTHMAP_PARTITIONS", "6")
            .env("MOUTHMAP_FACE_MODEL", face)
            .env("MOUTHMAP_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .arg(role);
        c
    };
    let mut services = Vec::new();
    let mut ready_ports = Vec::new();
    // Chained: the mouth crop runs inside ingest (`ingest --crop`).
    let roles: &[&str] = if chained {
        &["infer", "decode"]
    } else {
        &["preprocess", "infer", "decode"]
    };
    for &role in roles {
        let group = unique(role);
        let replicas = if role == "preprocess" {
            preprocess_replicas
        } else {
            1
        };
        for replica in 0..replicas {
            let log = logs.join(format!("{role}-{n}-{replica}.log"));
            let mut c = command(role);
            let port = free_port();
            ready_ports.push(port);
            c.args(["--metrics-listen", &format!("127.0.0.1:{port}"), "--group"])
                .arg(&group)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            if role == "infer"
                && let Some(model) = model
            {
                c.arg("--model").arg(model);
            }
            services.push(Service {
                role: role.into(),
                child: c.spawn().expect("service starts"),
                log,
            });
        }
    }
    // Every service holds partitions before the streams start: replicas
    // that join a group at once may wait a rebalance or two (10-20 s on
    // Tansu's in-memory storage), and a load measured meanwhile would be
    // one replica's.
    wait_for_partitions(&ready_ports).await;
    let ids: Vec<String> = (0..n).map(|i| unique(&format!("bench{i}"))).collect();
    let mut ingest = command("ingest");
    ingest.arg("--realtime");
    if chained {
        ingest.arg("--crop");
    }
    for id in &ids {
        ingest.arg(format!("{id}={}", video.display()));
    }
    let ingest_log = logs.join(format!("ingest-{n}.log"));
    ingest
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&ingest_log).unwrap());
    let started = Instant::now();
    let (broker_cpu0, redis_cpu0) = (cpu_of("tansu"), cpu_of("redis-server"));
    let mut ingest = Service {
        role: "ingest".into(),
        child: ingest.spawn().expect("ingest starts"),
        log: ingest_log,
    };

    let c = consumer(
        &KafkaSettings::new(brokers, "bench"),
        &unique("bench-reader"),
        &[&topics["MOUTHMAP_TRANSCRIPTS_TOPIC"]],
        StartAt::Earliest,
    )
    .unwrap();
    let mut per_stream: HashMap<String, Vec<(i64, Transcript)>> = HashMap::new();
    let mut finals = 0;
    // Seconds past the stream's real-time end at which each final came:
    // backpressure that slows capture keeps the per-frame latency flat, but
    // not this.
    let mut late = Vec::new();
    let deadline = started + Duration::from_secs(seconds + 90);
    let mut peak_ingest = (0.0, 0.0);
    while finals < n && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            let m = InMessage::from_borrowed(&m);
            if let Ok(t) = serde_json::from_slice::<Transcript>(&m.payload) {
                if t.kind == TranscriptKind::Final {
                    finals += 1;
                    late.push(started.elapsed().as_secs_f64() - seconds as f64);
                }
                per_stream
                    .entry(t.stream_id.clone())
                    .or_default()
                    .push((m.timestamp_ms.unwrap_or(0), t));
            }
        }
        if let Ok(None) = ingest.child.try_wait() {
            let (mib, secs) = usage(ingest.child.id());
            peak_ingest = (f64::max(peak_ingest.0, mib), f64::max(peak_ingest.1, secs));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut memory = serde_json::Map::new();
    let mut cpu = serde_json::Map::new();
    memory.insert("ingest".into(), json!(peak_ingest.0));
    cpu.insert("ingest".into(), json!(peak_ingest.1));
    cpu.insert("broker".into(), json!(cpu_of("tansu") - broker_cpu0));
    cpu.insert("redis".into(), json!(cpu_of("redis-server") - redis_cpu0));
    for s in &mut services {
        let (mib, secs) = usage(s.child.id());
        // Replicas of a role: their CPU summed, the largest one's memory.
        let before = |m: &serde_json::Map<String, serde_json::Value>| {
            m.get(&s.role).and_then(|v| v.as_f64()).unwrap_or(0.0)
        };
        memory.insert(s.role.clone(), json!(before(&memory).max(mib)));
        cpu.insert(s.role.clone(), json!(before(&cpu) + secs));
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(s.child.id().to_string())
            .status();
    }
    for s in services.iter_mut().chain(std::iter::once(&mut ingest)) {
        let until = Instant::now() + Duration::from_secs(20);
        while s.child.try_wait().ok().flatten().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = s.child.kill();
        let _ = s.child.wait();
        let _ = &s.log;
    }

    let mut all = Vec::new();
    let (mut first_third, mut last_third) = (Vec::new(), Vec::new());
    let mut uncovered = 0usize;
    // Per stream: from its first frame's ingest to its first partial.
    let mut first_partial = Vec::new();
    for id in &ids {
        let ts = per_stream.remove(id).unwrap_or_default();
        let lat = frame_latencies(&ts);
        if let Some(&first) = lat.first() {
            first_partial.push(first);
        }
        uncovered += (seconds as usize * 25).saturating_sub(lat.len());
        let third = lat.len() / 3;
        first_third.extend_from_slice(&lat[..third]);
        last_third.extend_from_slice(&lat[lat.len() - third..]);
        all.extend(lat);
    }
    let (p50, p95, p99) = (
        percentile(&mut all, 0.5),
        percentile(&mut all, 0.95),
        percentile(&mut all, 0.99),
    );
    let (m_first, m_last) = (
        percentile(&mut first_third, 0.5),
        percentile(&mut last_third, 0.5),
    );
    let (fp50, fp95, fpmax) = (
        percentile(&mut first_partial, 0.5),
        percentile(&mut first_partial, 0.95),
        percentile(&mut first_partial, 1.0),
    );
    let latest = late.iter().copied().fold(f64::NAN, f64::max);
    let sustained = finals == n && m_last <= m_first + 1000.0 && p99 < 5000.0 && latest <= 5.0;
    println!(
        "{n:>3} streams: finals {finals}/{n}, frame-to-first-partial p50 {p50:.0} ms p95 {p95:.0} ms p99 {p99:.0} ms (median first third {m_first:.0}, last third {m_last:.0}): {}",
        if sustained {
            "sustained"
        } else {
            "NOT sustained"
        }
    );
    println!(
        "     first partial of a stream after its first frame: p50 {fp50:.0} ms p95 {fp95:.0} ms max {fpmax:.0} ms; last final {latest:.1} s after the streams' end"
    );
    println!("     peak memory MiB {memory:?}\n     CPU s {cpu:?}");
    Run {
        report: json!({
            "streams": n, "finals": finals, "sustained": sustained,
            "latest_final_s_after_end": latest,
            "elapsed_s": elapsed,
            "frames_measured": all.len(), "frames_never_in_a_partial": uncovered,
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99,
                "median_first_third": m_first, "median_last_third": m_last},
            "first_partial_ms": {"p50": fp50, "p95": fp95, "max": fpmax},
            "peak_memory_mib": memory, "cpu_s": cpu,
        }),
        sustained,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let brokers = std::env::var("MOUTHMAP_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    assert!(
        std::net::TcpStream::connect_timeout(
            &brokers
                .split(',')
                .next()
                .unwrap()
                .parse()
                .expect("host:port"),
            Duration::from_secs(2)
        )
        .is_ok(),
        "no broker at {brokers}: run scripts/stack up --infra"
    );
    let counts: Vec<usize> = arg("--streams")
        .unwrap_or_else(|| "1,2,4,8,12,16,20,24".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--streams 1,4,8"))
        .collect();
    let out = root().join("target/bench");
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let video = long_video(&out);
    let seconds = 30;
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mouthmap"));
    // The model `mouthmap infer` serves by default, unless --model names another.
    let model: Option<PathBuf> = arg("--model").map(PathBuf::from);
    let face = shared().join("models/yunet/face_detection_yunet_2026may.onnx");
    // Preprocess (detecting a face on every frame) is the stage that needs
    // more than one core first: it scales by replicas in its consumer group.
    let preprocess_replicas: usize =
        arg("--preprocess-replicas").map_or(2, |r| r.parse().expect("--preprocess-replicas 2"));
    let modes: Vec<String> = arg("--modes")
        .unwrap_or_else(|| "separate,chained".into())
        .split(',')
        .map(|m| m.trim().to_string())
        .collect();
    let mut report = json!({
        "stream_seconds": seconds,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "broker_storage": std::env::var("MOUTHMAP_BROKER_STORAGE").unwrap_or_else(|_| "memory".into()),
        "preprocess_replicas": preprocess_replicas,
    });
    for mode in &modes {
        let chained = match mode.as_str() {
            "separate" => false,
            "chained" => true,
            other => panic!("--modes separate,chained: not {other:?}"),
        };
        println!("{mode}:");
        let mut runs = Vec::new();
        let mut max_sustained = 0;
        for &n in &counts {
            let r = run_load(
                n,
                &video,
                &logs,
                &brokers,
                &bin,
                model.as_deref(),
                &face,
                seconds,
                chained,
                preprocess_replicas,
            )
            .await;
            if r.sustained {
                max_sustained = max_sustained.max(n);
            }
            // Past the first load not sustained, but always through 4 streams.
            let stop = !r.sustained && n >= 4;
            runs.push(r.report);
            if stop {
                break;
            }
        }
        println!("{mode}: max sustained {max_sustained} streams");
        report[mode.as_str()] = json!({"max_sustained_streams": max_sustained, "runs": runs});
    }
    let path = arg("--out").map_or_else(|| out.join("pipeline.json"), PathBuf::from);
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("wrote {}", path.display());
}
