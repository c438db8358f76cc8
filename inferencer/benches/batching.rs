//! What the inferencer's dynamic batching buys on this machine, with the
//! committed model and a real mouth crop:
//!
//! 1. saturated throughput: windows per second of one model run of B
//!    windows, for B = 1..32 (a backlog: the queue is always full);
//! 2. under load: S streams sending 25 fps mouth chunks in real time (one
//!    window per stream per second at hop 25, stream phases spread), through
//!    the real `Inferencer` stage, for each max batch and max queue delay:
//!    windows per second out, mean batch, and the latency from a window's
//!    newest frame to its probabilities (p50, p95);
//! 3. the front end once per frame against the whole graph per window
//!    (`InferSettings::front_end`): CPU per stream frame at hop 25 and 10,
//!    streams fed as fast as the stage takes them, one ONNX Runtime thread.
//!
//!     cargo bench -p mouthmap-inferencer --bench batching [-- --streams 24 --seconds 12 --device cpu]
//!
//! Writes target/bench/inferencer.json (read by scripts/bench) and prints a summary.
//! Another model version (its `model.onnx`, with `front.onnx` and `back.onnx`
//! beside it for the front end once) and only the third table:
//!
//!     cargo bench -p mouthmap-inferencer --bench batching -- --model DIR/model.onnx \
//!         --front-end-only --out target/bench/inferencer-other.json

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mouthmap_contracts::{
    CropQuality, FrameInfo, LogitsEvent, MouthChunk, MouthEvent, SourceKind, StreamStart,
};
use mouthmap_inferencer::model::{Device, Model};
use mouthmap_inferencer::stage::{FrontEnd, InferSettings, Inferencer};
use serde_json::json;

/// Whether a flag without a value was given.
fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A good crop's quality, for every bench frame.
fn quality() -> CropQuality {
    CropQuality {
        face_score: 0.9,
        face_found: true,
        detected: true,
        box_width: 60.0,
        brightness: 100.0,
        sharpness: 40.0,
    }
}

fn pgm(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("the test crop");
    // P5\n140 46\n255\n then the pixels.
    let mut fields = 0;
    let mut i = 0;
    while fields < 4 {
        while bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        while !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        fields += 1;
    }
    bytes[i + 1..].to_vec()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn saturated(model: &mut Model, crop: &[u8], batch: usize) -> f64 {
    let window: Vec<u8> = crop.repeat(75);
    let crops = window.repeat(batch);
    for _ in 0..2 {
        model.run(&crops, batch).unwrap();
    }
    let start = Instant::now();
    let mut runs = 0;
    while runs < 3 || start.elapsed() < Duration::from_secs(4) {
        model.run(&crops, batch).unwrap();
        runs += 1;
    }
    (runs * batch) as f64 / start.elapsed().as_secs_f64()
}

struct Loaded {
    windows_per_s: f64,
    mean_batch: f64,
    p50_ms: f64,
    p95_ms: f64,
}

fn under_load(
    model_path: &Path,
    device: Device,
    threads: usize,
    crop: &[u8],
    settings: InferSettings,
    streams: usize,
    seconds: u64,
) -> Loaded {
    let model = Model::load(model_path, device, threads).unwrap();
    let mut stage = Inferencer::new(model, settings);
    let chunk_bytes: Vec<u8> = crop.repeat(25);
    let quality = quality();
    for s in 0..streams {
        let start = MouthEvent::Start(StreamStart {
            stream_id: format!("s{s}"),
            source: "bench".into(),
            source_kind: SourceKind::File,
            fps: 25,
            started_at_ms: 0,
        });
        stage.handle(&start, &[], &[]).unwrap();
    }
    // Every stream sends one 25-frame chunk a second, phases spread evenly;
    // the first two seconds fill the windows and are not measured.
    let begin = Instant::now();
    let mut next_seq = vec![0u64; streams];
    let mut latencies = Vec::new();
    let mut windows = 0usize;
    let warmup = Duration::from_secs(3);
    let total = warmup + Duration::from_secs(seconds);
    let mut batch_sizes = Vec::new();
    loop {
        let t = begin.elapsed();
        if t >= total {
            break;
        }
        let mut out = Vec::new();
        for (s, next) in next_seq.iter_mut().enumerate() {
            let due = Duration::from_secs_f64(*next as f64 + s as f64 / streams as f64);
            if t >= due {
                let seq = *next;
                *next += 1;
                let ingest = now_us();
                let chunk = MouthEvent::Chunk(MouthChunk {
                    stream_id: format!("s{s}"),
                    seq,
                    width: 140,
                    height: 46,
                    frames: (0..25)
                        .map(|i| FrameInfo {
                            index: seq * 25 + i,
                            pts_ns: (seq * 25 + i) * 40_000_000,
                            ingest_us: ingest,
                        })
                        .collect(),
                    quality: vec![quality.clone(); 25],
                    no_face: false,
                    discontinuity: false,
                });
                out.extend(stage.handle(&chunk, &chunk_bytes, &[]).unwrap());
            }
        }
        out.extend(stage.tick().unwrap());
        let done = now_us();
        let measuring = begin.elapsed() >= warmup;
        for p in out {
            if let LogitsEvent::Window(w) = p.event
                && measuring
            {
                windows += 1;
                latencies.push((done - w.newest_ingest_us) as f64 / 1000.0);
            }
        }
        for b in stage.take_batches() {
            if measuring {
                batch_sizes.push(b.windows as f64);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let measured = (begin.elapsed() - warmup).as_secs_f64();
    Loaded {
        windows_per_s: windows as f64 / measured,
        mean_batch: batch_sizes.iter().sum::<f64>() / batch_sizes.len().max(1) as f64,
        p50_ms: percentile(&mut latencies.clone(), 0.5),
        p95_ms: percentile(&mut latencies, 0.95),
    }
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// `streams` streams of `frames` frames each, in chunks of `chunk`, fed
/// round-robin as fast as the stage takes them: (CPU ms per stream frame,
/// windows out).
fn front_end_cost(
    model_path: &Path,
    crop: &[u8],
    front_end: FrontEnd,
    hop: usize,
    streams: usize,
    frames: u64,
) -> (f64, usize) {
    let model = Model::load(model_path, Device::Cpu, 1).unwrap();
    let settings = InferSettings {
        hop,
        max_batch: 16,
        max_delay: Duration::ZERO,
        early: 0,
        front_end,
    };
    let mut stage = Inferencer::new(model, settings);
    let chunk = 5u64;
    let bytes = crop.repeat(chunk as usize);
    let quality = quality();
    let cpu = cpu_seconds();
    let mut windows = 0;
    for seq in 0..frames / chunk {
        for s in 0..streams {
            let ev = MouthEvent::Chunk(MouthChunk {
                stream_id: format!("s{s}"),
                seq,
                width: 140,
                height: 46,
                frames: (0..chunk)
                    .map(|i| FrameInfo {
                        index: seq * chunk + i,
                        pts_ns: 0,
                        ingest_us: 0,
                    })
                    .collect(),
                quality: vec![quality.clone(); chunk as usize],
                no_face: false,
                discontinuity: false,
            });
            windows += stage
                .handle(&ev, &bytes, &[])
                .unwrap()
                .iter()
                .filter(|p| matches!(p.event, LogitsEvent::Window(_)))
                .count();
        }
    }
    let ms = (cpu_seconds() - cpu) * 1000.0 / (streams as u64 * frames) as f64;
    (ms, windows)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model_path: PathBuf = arg(
        "--model",
        root.join("models/mouthmap-lipnet-grid-s1/4/model.onnx"),
    );
    let front_end_only = flag("--front-end-only");
    let out_path: PathBuf = arg("--out", root.join("target/bench/inferencer.json"));
    let crop = pgm(&root.join("tests/data/bbaf2n-frame37-crop.pgm"));
    assert_eq!(crop.len(), 140 * 46);
    let streams: usize = arg("--streams", 24);
    let seconds: u64 = arg("--seconds", 12);
    let threads: usize = arg("--threads", 2);
    let device = match arg("--device", "cpu".to_string()).as_str() {
        "cuda" => Device::Cuda,
        _ => Device::Cpu,
    };
    let mut model = Model::load(&model_path, device, threads).expect("the model loads");

    let mut saturated_rows = Vec::new();
    for batch in [1, 2, 4, 8, 16, 32].into_iter().filter(|_| !front_end_only) {
        let wps = saturated(&mut model, &crop, batch);
        println!("saturated: batch {batch:>2}: {wps:7.1} windows/s");
        saturated_rows.push(json!({"batch": batch, "windows_per_s": wps}));
    }
    drop(model);

    let mut loaded_rows = Vec::new();
    for max_batch in [1, 4, 16].into_iter().filter(|_| !front_end_only) {
        for delay_ms in [0u64, 20, 100] {
            let settings = InferSettings {
                hop: 25,
                max_batch,
                max_delay: Duration::from_millis(delay_ms),
                early: 0,
                ..InferSettings::default()
            };
            let r = under_load(
                &model_path,
                device,
                threads,
                &crop,
                settings,
                streams,
                seconds,
            );
            println!(
                "{streams} streams: max batch {max_batch:>2}, max delay {delay_ms:>3} ms: {:6.1} windows/s, mean batch {:4.1}, latency p50 {:6.0} ms p95 {:6.0} ms",
                r.windows_per_s, r.mean_batch, r.p50_ms, r.p95_ms
            );
            loaded_rows.push(json!({
                "max_batch": max_batch, "max_delay_ms": delay_ms,
                "windows_per_s": r.windows_per_s, "mean_batch": r.mean_batch,
                "p50_ms": r.p50_ms, "p95_ms": r.p95_ms,
            }));
        }
    }
    let mut front_rows = Vec::new();
    for hop in [25usize, 10] {
        for (name, front_end) in [
            ("per-window", FrontEnd::PerWindow),
            ("once", FrontEnd::Once),
        ] {
            let (ms, windows) = front_end_cost(&model_path, &crop, front_end, hop, 4, 400);
            println!(
                "front end {name:>10}, hop {hop}: {ms:5.2} ms CPU a stream frame ({windows} windows, 4 streams of 400 frames)"
            );
            front_rows.push(
                json!({"front_end": name, "hop": hop, "cpu_ms_per_frame": ms, "windows": windows}),
            );
        }
    }

    if let Some(dir) = out_path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let report = json!({
        "device": format!("{device:?}"),
        "threads": threads,
        "model": model_path.file_name().unwrap().to_string_lossy(),
        "model_path": model_path.display().to_string(),
        "streams": streams,
        "offered_windows_per_s": streams,
        "seconds": seconds,
        "saturated": saturated_rows,
        "under_load": loaded_rows,
        "front_end": front_rows,
    });
    std::fs::write(&out_path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("wrote {}", out_path.display());
}
