//! Several versions of a model served by one inferencer at once, picked
//! per stream on the real broker and Redis: a canary route splits new
//! streams by a hash of their id, a stream's own `model` feature wins,
//! every window and the final of a stream name the one version that read
//! it, and a rollback sends new streams back to the live version.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::pipeline::*;
use common::*;
use mouthmap_bus::kafka::InMessage;
use mouthmap_contracts::{LogitsEvent, Transcript};
use mouthmap_inferencer::routing::bucket;

/// Puts `file` into the repository at `repo` as version `v` of `lipnet`.
fn add_version(repo: &Path, v: &str, file: &Path) {
    let d = repo.join("lipnet").join(v);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::symlink(file, d.join("model.onnx")).unwrap();
}

/// A repository of `lipnet` with these files as versions 1, 2, ...
fn repository_of(files: &[PathBuf]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, file) in files.iter().enumerate() {
        add_version(dir.path(), &(i + 1).to_string(), file);
    }
    dir
}

/// A model repository with the reference model as versions 1 and 2 of
/// `lipnet` (the same weights: the test is about who reads what).
fn repository() -> tempfile::TempDir {
    repository_of(&[model(), model()])
}

/// A test model of `tests/data/models/`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
}

/// The value of the first series of `metrics` whose line starts with `series`.
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

/// Polls the route of `lipnet` until the canary's share is 0% (30 s at
/// most); returns what `models route` showed.
fn wait_rolled_back(repo: &Path, redis: &Redis) -> String {
    tokio::task::block_in_place(|| {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let shown = models(repo, redis, &["route", "lipnet"]);
            if shown.contains("canary version 2 at 0%") {
                return shown;
            }
            assert!(
                std::time::Instant::now() < until,
                "rolled back within 30 s: {shown}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    })
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

/// The infer service over `repo` (its `lipnet:1` named), on the test's
/// Redis, with its metrics on `port`.
fn infer(t: &Topics, brokers: &str, redis: &Redis, repo: &Path, port: u16, extra: &[&str]) -> Proc {
    Proc::spawn(
        "infer",
        t.command(brokers)
            .env("MOUTHMAP_REDIS_URL", redis.url())
            .arg("infer")
            .args(["--metrics-listen", &format!("127.0.0.1:{port}"), "--group"])
            .arg(unique("infer"))
            .arg("--models-dir")
            .arg(repo)
            .args(["--model", "lipnet:1"])
            .args(extra),
    )
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
    stream_video(t, brokers, ids, &grid_clip("bbie8n.mp4")).await
}

/// Streams `clip` under each id, all at once, and waits for their finals.
async fn stream_video(
    t: &Topics,
    brokers: &str,
    ids: &[String],
    clip: &Path,
) -> (Vec<InMessage>, Vec<InMessage>) {
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
    let _inf = infer(&t, &brokers, &redis, repo.path(), free_port(), &[]);
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

/// Hot reload while a stream runs: version 2 and a broken version 3 are
/// dropped into the repository and the route sends every new stream to
/// version 2. Version 2 is loaded without a restart and reads the next
/// stream; version 3 is refused (counted), and the stream that was running
/// finishes on version 1 with exactly one final.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_dropped_in_while_a_stream_runs_serves_new_streams_and_a_broken_one_is_refused() {
    if !available(&[Need::Broker, Need::Redis]) {
        return;
    }
    let brokers = brokers();
    let redis = Redis::start();
    let t = Topics::new();
    t.create(&brokers).await;
    let repo = repository_of(&[model()]);
    let port = free_port();
    let _pre = t.service(&brokers, "preprocess", &["--feature-store", "false"]);
    let _inf = infer(
        &t,
        &brokers,
        &redis,
        repo.path(),
        port,
        &["--reload-every", "1s"],
    );
    let _dec = t.service(&brokers, "decode", &["--feature-store", "false"]);

    let dir = tempfile::tempdir().unwrap();
    let video = join_clips(dir.path(), &["bbie8n", "bras6n", "bgauzp"]);
    let running = unique("running");
    let mut ingest = Proc::spawn(
        "ingest",
        t.command(&brokers)
            .args(["ingest", "--realtime"])
            .arg(format!("{running}={}", video.display())),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    add_version(repo.path(), "2", &model());
    let broken = fixture("tiny-many-problems.onnx");
    add_version(repo.path(), "3", &broken);
    models(
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
            "100",
        ],
    );

    // Loaded without a restart (its series appear), the broken one refused.
    let metrics = tokio::task::block_in_place(|| {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
                .and_then(|r| r.text())
                .unwrap_or_default();
            // Both versions are scanned in one pass of the repository but
            // one after the other: wait for version 2's series and version
            // 3's refusal, whichever a scrape sees first.
            let refused = metric(
                &text,
                "mouthmap_errors_total{kind=\"model\",stage=\"infer\"}",
            )
            .unwrap_or(0.0);
            if refused >= 1.0
                && text.contains(
                    "mouthmap_model_windows_total{model=\"lipnet\",stage=\"infer\",version=\"2\"}",
                )
            {
                return text;
            }
            assert!(
                std::time::Instant::now() < until,
                "version 2 loaded and version 3 refused (counted) within 30 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    assert!(
        !metrics.contains("version=\"3\""),
        "version 3 is not served"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let next = vec![unique("next")];
    let (logits, transcripts) = stream_all(&t, &brokers, &next).await;
    assert_eq!(versions(&logits, &transcripts, &next[0]), (vec![2], 2));

    assert!(tokio::task::block_in_place(|| ingest.wait(Duration::from_secs(60))).success());
    let transcripts = read_until(&brokers, &t.transcripts, |m| finals_for(m, &running) >= 1).await;
    let logits = read_until(&brokers, &t.logits, |m| {
        m.iter()
            .any(|x| x.key_str() == Some(running.as_str()) && x.header("mm-event") == Some("end"))
    })
    .await;
    assert_eq!(versions(&logits, &transcripts, &running), (vec![1], 1));
}

/// The automatic rollback guard on a canary made worse on purpose: the live
/// version is the tiny contract model (well under a millisecond a window),
/// the canary the reference model (tens of milliseconds). Once the guard has
/// seen enough windows of each, it sets the canary's share to 0% in the
/// feature store with its reason, counts it, and new streams on the canary
/// side read the live version.
#[tokio::test(flavor = "multi_thread")]
async fn the_guard_rolls_back_a_canary_slower_than_the_live_version() {
    if !available(&[Need::Broker, Need::Redis]) {
        return;
    }
    let brokers = brokers();
    let redis = Redis::start();
    let t = Topics::new();
    t.create(&brokers).await;
    let repo = repository_of(&[fixture("tiny-contract.onnx"), model()]);
    models(
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
    let port = free_port();
    let _pre = t.service(&brokers, "preprocess", &["--feature-store", "false"]);
    let _inf = infer(
        &t,
        &brokers,
        &redis,
        repo.path(),
        port,
        &["--guard-min-windows", "10"],
    );
    let _dec = t.service(&brokers, "decode", &["--feature-store", "false"]);

    // Six streams of three joined sentences (7 windows each), three on each side.
    let dir = tempfile::tempdir().unwrap();
    let video = join_clips(dir.path(), &["bbie8n", "bras6n", "bgauzp"]);
    let all: Vec<String> = ids("slow", 3, true)
        .into_iter()
        .chain(ids("fast", 3, false))
        .collect();
    let mut cmd = t.command(&brokers);
    cmd.arg("ingest");
    for id in &all {
        cmd.arg(format!("{id}={}", video.display()));
    }
    assert!(
        tokio::task::block_in_place(|| cmd.status())
            .unwrap()
            .success()
    );
    read_until(&brokers, &t.transcripts, |m| {
        all.iter().all(|id| finals_for(m, id) >= 1)
    })
    .await;

    let shown = wait_rolled_back(repo.path(), &redis);
    assert!(
        shown.contains("automatic rollback: canary version 2 p95"),
        "{shown}"
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "mouthmap_model_rollbacks_total{model=\"lipnet\",stage=\"infer\",version=\"2\"} 1"
        ),
        "{metrics}"
    );
    let after = ids("after", 2, true);
    let (logits, transcripts) = stream_all(&t, &brokers, &after).await;
    for id in &after {
        assert_eq!(versions(&logits, &transcripts, id).0, vec![1], "{id}");
    }
}

/// A shadow version reads every window beside the live one: users get the
/// live version's transcripts as without it, the shadow's transcripts go to
/// a topic of their own, and the decoder reports how far each stream's
/// shadow final is from its live final, per shadow version. The shadow here
/// is the tiny contract model, whose letters are not words: far apart.
#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_version_reads_every_stream_apart_and_its_agreement_is_measured() {
    if !available(&[Need::Broker, Need::Redis]) {
        return;
    }
    let brokers = brokers();
    let redis = Redis::start();
    let t = Topics::new();
    t.create(&brokers).await;
    let shadow_topic = unique("transcripts-shadow");
    let repo = repository_of(&[model(), fixture("tiny-contract.onnx")]);
    let _pre = t.service(&brokers, "preprocess", &["--feature-store", "false"]);
    let _inf = infer(
        &t,
        &brokers,
        &redis,
        repo.path(),
        free_port(),
        &["--shadow", "2"],
    );
    let port = free_port();
    let _dec = Proc::spawn(
        "decode",
        t.command(&brokers)
            .arg("decode")
            .args(["--metrics-listen", &format!("127.0.0.1:{port}"), "--group"])
            .arg(unique("decode"))
            .args(["--feature-store", "false", "--shadow-topic", &shadow_topic]),
    );
    let ids = vec![unique("shadowed"), unique("shadowed")];
    let (_logits, transcripts) = stream_all(&t, &brokers, &ids).await;
    let shadows = read_until(&brokers, &shadow_topic, |m| {
        ids.iter().all(|id| finals_for(m, id) >= 1)
    })
    .await;
    for id in &ids {
        let live = transcripts_final(&transcripts, id);
        let shadow = transcripts_final(&shadows, id);
        assert_eq!((live.version, shadow.version), (1, 2), "{id}");
        assert!(
            word_errors(&live.text, "bin blue in e eight now") <= 1,
            "users read the live version: {}",
            live.text
        );
        assert_ne!(shadow.text, live.text, "{id}");
        assert_eq!(
            finals_for(&transcripts, id),
            1,
            "no shadow final among the users' transcripts"
        );
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = metric(
        &metrics,
        "mouthmap_shadow_word_error_rate_count{model=\"lipnet\",stage=\"decode\",version=\"2\"}",
    );
    assert_eq!(count, Some(2.0), "{metrics}");
    let sum = metric(
        &metrics,
        "mouthmap_shadow_word_error_rate_sum{model=\"lipnet\",stage=\"decode\",version=\"2\"}",
    )
    .unwrap();
    assert!(
        sum / 2.0 > 0.5,
        "the tiny model's letters are far from the sentence: {sum}"
    );
}

/// The one final of `id` among `msgs`.
fn transcripts_final(msgs: &[InMessage], id: &str) -> Transcript {
    let finals: Vec<Transcript> = msgs
        .iter()
        .filter(|m| m.key_str() == Some(id) && m.header("mm-event") == Some("final"))
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(finals.len(), 1, "{id}: one final");
    finals.into_iter().next().unwrap()
}

/// A canary that fails under load (a window at a time runs, batches of two
/// or more fail): its failed windows are read by the live version instead,
/// so every stream still gets its one final, and the guard rolls the canary
/// back on its failure rate.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_canary_loses_nothing_and_the_guard_rolls_it_back() {
    if !available(&[Need::Broker, Need::Redis]) {
        return;
    }
    let brokers = brokers();
    let redis = Redis::start();
    let t = Topics::new();
    t.create(&brokers).await;
    let repo = repository_of(&[model(), fixture("tiny-fails-in-batches.onnx")]);
    models(
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
            "100",
        ],
    );
    let port = free_port();
    let _pre = t.service(&brokers, "preprocess", &["--feature-store", "false"]);
    // Every new stream goes to the canary, and windows run two at a time
    // (a lone window waits up to 2 s for another), so the canary fails.
    let _inf = infer(
        &t,
        &brokers,
        &redis,
        repo.path(),
        port,
        &[
            "--guard-min-windows",
            "4",
            "--max-batch",
            "2",
            "--max-queue-delay",
            "2s",
        ],
    );
    let _dec = t.service(&brokers, "decode", &["--feature-store", "false"]);

    // Three joined sentences: seven windows a stream, so windows pair up
    // mid-stream (a stream's end runs what is queued, alone or not).
    let dir = tempfile::tempdir().unwrap();
    let video = join_clips(dir.path(), &["bbie8n", "bras6n", "bgauzp"]);
    let all: Vec<String> = (0..4).map(|_| unique("failing")).collect();
    let (logits, transcripts) = stream_video(&t, &brokers, &all, &video).await;
    // Nothing lost: every stream has its windows and exactly one final
    // (`versions` checks both), read by the live version where the canary failed.
    let mut fell_back = 0;
    for id in &all {
        let (windows, _) = versions(&logits, &transcripts, id);
        if windows.contains(&1) {
            fell_back += 1;
        }
    }
    assert!(
        fell_back >= 2,
        "the live version read the canary's failed windows"
    );
    let shown = wait_rolled_back(repo.path(), &redis);
    assert!(
        shown.contains("automatic rollback: canary version 2 failed"),
        "{shown}"
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failed = metric(
        &metrics,
        "mouthmap_model_errors_total{model=\"lipnet\",stage=\"infer\",version=\"2\"}",
    )
    .unwrap_or(0.0);
    assert!(
        failed >= 1.0,
        "the failed runs are counted against version 2: {metrics}"
    );
}
