//! `mouthmap tail`: print a topic's messages as JSON lines.

use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use mouthmap_bus::kafka::{InMessage, StartAt, consumer};
use rdkafka::consumer::Consumer;
use serde_json::{Value, json};

use super::{KafkaArgs, duration, shutdown_signal};

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Topic to read (default: the frames topic).
    #[arg(value_name = "TOPIC")]
    topic: Option<String>,

    /// Only messages with this key (stream id); repeatable.
    #[arg(long = "key", value_name = "STREAM_ID")]
    keys: Vec<String>,

    /// Read from the oldest message kept instead of only new ones.
    #[arg(long)]
    from_beginning: bool,

    /// Exit once every --key stream (or, without --key, one stream) has sent its end event.
    #[arg(long)]
    until_end: bool,

    /// Exit after this many printed messages.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,

    /// Exit when no message arrived for this long.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    idle_timeout: Option<Duration>,

    /// Consumer group (default: a fresh one, so every tail sees every message).
    #[arg(long)]
    group: Option<String>,

    #[command(flatten)]
    kafka: KafkaArgs,
}

/// A message as one JSON object: where it came from, its headers, and its
/// decoded metadata (payload bytes are counted, not printed).
pub fn describe(msg: &InMessage) -> Value {
    let headers: serde_json::Map<String, Value> = msg
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::String(String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect();
    let mut out = json!({
        "topic": msg.topic,
        "partition": msg.partition,
        "offset": msg.offset,
        "timestamp_ms": msg.timestamp_ms,
        "key": msg.key_str(),
        "headers": headers,
    });
    if msg.payload.starts_with(mouthmap_contracts::ENVELOPE_MAGIC) {
        match mouthmap_contracts::decode_envelope::<Value>(&msg.payload) {
            Ok((meta, payload)) => {
                out["meta"] = meta;
                out["payload_bytes"] = json!(payload.len());
            }
            Err(e) => out["error"] = json!(e.to_string()),
        }
    } else {
        match serde_json::from_slice::<Value>(&msg.payload) {
            Ok(v) => out["value"] = v,
            Err(_) => out["value_text"] = json!(String::from_utf8_lossy(&msg.payload)),
        }
    }
    out
}

pub async fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| args.kafka.frames_topic.clone());
    let settings = args.kafka.settings("mouthmap-tail")?;
    let group = args.group.clone().unwrap_or_else(|| {
        format!(
            "mouthmap-tail-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        )
    });
    let start = if args.from_beginning {
        StartAt::Earliest
    } else {
        StartAt::Latest
    };
    let consumer = consumer(&settings, &group, &[&topic], start)?;
    let mut shutdown = shutdown_signal();
    let mut waiting: HashSet<String> = args.keys.iter().cloned().collect();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        let idle = args
            .idle_timeout
            .unwrap_or(Duration::from_secs(365 * 24 * 3600));
        let received = tokio::select! {
            _ = shutdown.changed() => break,
            r = tokio::time::timeout(idle, consumer.recv()) => match r {
                Ok(r) => r,
                Err(_) => {
                    eprintln!("no message for {}; exiting", humantime::format_duration(idle));
                    break;
                }
            },
        };
        let borrowed = match received {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "consume failed");
                continue;
            }
        };
        let msg = InMessage::from_borrowed(&borrowed);
        consumer.store_offset_from_message(&borrowed)?;
        let key = msg.key_str().unwrap_or_default().to_string();
        if !args.keys.is_empty() && !args.keys.contains(&key) {
            continue;
        }
        let line = describe(&msg);
        {
            let mut out = stdout.lock();
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
            out.flush()?;
        }
        printed += 1;
        if args.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
        let is_end = line["meta"]["event"] == "end" || line["value"]["kind"] == "final";
        if args.until_end && is_end {
            waiting.remove(&key);
            if waiting.is_empty() {
                break;
            }
        }
    }
    consumer.unsubscribe();
    Ok(ExitCode::SUCCESS)
}
