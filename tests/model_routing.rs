//! Several versions of a model served by one inferencer at once, picked
//! per stream on the real broker and Redis: a canary route splits new
//! streams by a hash of their id, a stream's own `model` feature wins,
//! every window and the final of a stream name the one version that read
//! it, and a rollback sends new streams back to the live version.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pipeline::*;
use common::*;
use mouthmap_bus::kafka::InMessage;
use mouthmap_contracts::{LogitsEvent, Transcript};
use mouthmap_inferencer::routing::bucket;

/// A model repository with the reference model as versions 1 and 2 of
/// `lipnet` (the same weights: the test is about who reads what).
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for v in ["1", "2"] {
        let d = dir.path().join("lipnet").join(v);
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::symlink(model(), d.join("model.onnx")).unwrap();
    }
    dir
}

/// `mouthmap models ARGS` against the test's repository and Redis.
fn models(repo: &Path, redis: &Redis, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_mouthmap"))
        .env("MOUTHMAP_REDIS_URL", redis.url())
        .arg("models")
        .arg("--models-dir")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "models {args:?}: {text}");
    text
}

/// `n` fresh stream ids whose bucket is under 50 (`canary`) or not.
fn ids(prefix: &str, n: usize, canary: bool) -> Vec<String> {
    (0..)
        .map(|_| unique(prefix))
        .filter(|id| (bucket(id) < 50) == canary)
        .take(n)
        .collect()
}

/// The versions that read each stream's windows, and its final's version.
fn versions(logits: &[InMessage], transcripts: &[InMessage], id: &str) -> (Vec<u64>, u64) {
    let mut seen: Vec<u64> = logits
        .iter()
        .filter(|m| m.key_str() == Some(id))
        .filter_map(|m| match m.decode::<LogitsEvent>() {
            Ok((LogitsEvent::Window(w), _)) => Some(w.served_version),
            _ => None,
        })
        .collect();
    assert!(!seen.is_empty(), "{id} has windows");
    seen.dedup();
    let finals: Vec<Transcript> = transcripts
        .iter()
        .filter(|m| m.key_str() == Some(id) && m.header("mm-event") == Some("final"))
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(finals.len(), 1, "{id}: one final");
    assert_eq!(finals[0].model, "lipnet", "{id}");
    (seen, finals[0].version)
}

/// Streams the clip under each id, all at once, and waits for their finals.
async fn stream_all(t: &Topics, brokers: &str, ids: &[String]) -> (Vec<InMessage>, Vec<InMessage>) {
    let clip = grid_clip("bbie8n.mp4");
    let mut cmd = t.command(brokers);
    cmd.arg("ingest");
    for id in ids {
        cmd.arg(format!("{id}={}", clip.display()));
    }
    let status = tokio::task::block_in_place(|| cmd.status()).unwrap();
    assert!(status.success());
    let transcripts = read_until(brokers, &t.transcripts, |m| {
        ids.iter().all(|id| finals_for(m, id) >= 1)
    })
    .await;
    let logits = read_until(brokers, &t.logits, |m| {
        ids.iter().all(|id| {
            m.iter()
                .any(|x| x.key_str() == Some(id) && x.header("mm-event") == Some("end"))
        })
    })
    .await;
    (logits, transcripts)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_splits_new_streams_a_feature_wins_and_rollback_returns_them() {
    if !available(&[Need::Broker, Need::Redis]) {
        return;
    }
    let brokers = brokers();
    let redis = Redis::start();
    let t = Topics::new();
    t.create(&brokers).await;
    let repo = repository();

    let shown = models(
        repo.path(),
        &redis,
        &[
            "route",
            "lipnet",
            "--live",
            "1",
            "--canary",
            "2",
            "--percent",
            "50",
        ],
    );
    assert!(
        shown.contains(
            "lipnet: version 1 reads new streams; canary version 2 reads 50% of new streams"
        ),
        "{shown}"
    );
    let _pre = t.service(&brokers, "preprocess", &["--feature-store", "false"]);
    let repo_dir = repo.path().to_str().unwrap();
    let _inf = Proc::spawn(
        "infer",
        t.command(&brokers)
            .env("MOUTHMAP_REDIS_URL", redis.url())
            .arg("infer")
            .args(["--metrics-listen", "127.0.0.1:0", "--group"])
            .arg(unique("infer"))
            .args(["--models-dir", repo_dir, "--model", "lipnet:1"]),
    );
    let _dec = t.service(&brokers, "decode", &["--feature-store", "false"]);

    // Eight streams, four on each side of the split, and one on the canary
    // side whose own feature asks for version 1.
    let canary = ids("canary", 4, true);
    let live = ids("live", 4, false);
    let pinned = ids("pinned", 1, true).remove(0);
    let o = t
        .command(&brokers)
        .env("MOUTHMAP_REDIS_URL", redis.url())
        .args(["features", "set", "stream", &pinned, "model=lipnet:1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let all: Vec<String> = canary
        .iter()
        .chain(&live)
        .chain(std::iter::once(&pinned))
        .cloned()
        .collect();
    let (logits, transcripts) = stream_all(&t, &brokers, &all).await;
    let mut by_version: BTreeMap<u64, usize> = BTreeMap::new();
    for id in &all {
        let (windows, final_version) = versions(&logits, &transcripts, id);
        let want = if canary.contains(id) { 2 } else { 1 };
        assert_eq!(windows, [want], "{id}: every window read by version {want}");
        assert_eq!(final_version, want, "{id}: its final names version {want}");
        *by_version.entry(want).or_default() += 1;
    }
    assert_eq!(by_version, BTreeMap::from([(1, 5), (2, 4)]));

    // Rolled back: new streams on the canary side read the live version,
    // once infer has read the route again (every 2 s).
    let shown = models(
        repo.path(),
        &redis,
        &["rollback", "lipnet", "--reason", "test"],
    );
    assert!(
        shown.contains("canary version 2 at 0%") && shown.contains("rollback: test"),
        "{shown}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = ids("after", 3, true);
    let (logits, transcripts) = stream_all(&t, &brokers, &after).await;
    for id in &after {
        assert_eq!(versions(&logits, &transcripts, id), (vec![1], 1), "{id}");
    }
}
