//! Replays a stream's windows through the decode stage, without a model or
//! a video: for changing the stitcher and measuring each change in seconds.
//!
//!     cargo run --release -p mouthmap-decoder --example replay -- DIR
//!
//! DIR holds what `python -m mouthmap_model.replay` writes (see it for how):
//! `meta.json` (vocabulary, blank, classes, the lexicon grammar
//! `lexicon:WORD ...`, and per stream its
//! name and window starts) and per stream `NAME.f32`, its windows'
//! posteriors (little-endian f32, `[windows, 75, classes]`). Prints one JSON
//! object: per decoding (`open`, `lexicon`, `grid`) the streams' final
//! texts, or with `REPLAY_WORDS=1` their timed words.
//! `RUST_LOG=mouthmap_decoder=trace` shows every window's labels and cut.
use std::path::PathBuf;

use mouthmap_contracts::{LogitsEvent, LogitsWindow, TranscriptKind};
use mouthmap_decoder::stage::{DecodeSettings, Decoder};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let dir = PathBuf::from(std::env::args().nth(1).expect("DIR"));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let vocabulary: Vec<String> = serde_json::from_value(meta["vocabulary"].clone()).unwrap();
    let classes = meta["classes"].as_u64().unwrap() as usize;
    let blank = meta["blank"].as_u64().unwrap() as u32;
    let lexicon = meta["lexicon"].as_str().unwrap().to_string();
    let modes = [
        ("open", None),
        ("lexicon", Some(lexicon)),
        ("grid", Some("grid".to_string())),
    ];
    let timed_words = std::env::var_os("REPLAY_WORDS").is_some();
    let per = 75 * classes * 4;
    let streams: Vec<(&str, Vec<u8>, &Vec<serde_json::Value>)> = meta["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap();
            let bytes = std::fs::read(dir.join(format!("{name}.f32"))).unwrap();
            (name, bytes, s["starts"].as_array().unwrap())
        })
        .collect();
    let mut out = serde_json::Map::new();
    for (mode, grammar) in modes {
        let mut rows = Vec::new();
        for (name, bytes, starts) in &streams {
            let mut dec = Decoder::new(DecodeSettings {
                grammar: grammar.clone(),
                ..DecodeSettings::default()
            });
            for (i, first) in starts.iter().enumerate() {
                let w = LogitsWindow {
                    stream_id: (*name).into(),
                    first_frame: first.as_u64().unwrap(),
                    frames: 75,
                    valid_frames: 75,
                    classes: classes as u32,
                    vocabulary: vocabulary.clone(),
                    blank,
                    model_name: "replay".into(),
                    model_version: "0".into(),
                    served_version: 0,
                    shadow: false,
                    newest_ingest_us: 0,
                    face_share: 1.0,
                };
                dec.handle(&LogitsEvent::Window(w), &bytes[i * per..(i + 1) * per])
                    .unwrap();
            }
            let t = dec
                .handle(&mouthmap_decoder::synth::end(name), &[])
                .unwrap();
            let f = t.iter().find(|t| t.kind == TranscriptKind::Final).unwrap();
            rows.push(if timed_words {
                serde_json::to_value(&f.words).unwrap()
            } else {
                serde_json::Value::String(f.text.clone())
            });
        }
        out.insert(mode.into(), serde_json::Value::Array(rows));
    }
    println!("{}", serde_json::Value::Object(out));
}
