//! Faults on the real broker: a stage killed with SIGKILL mid-stream and
//! started again two seconds later under the same instance id (as a
//! supervisor or a StatefulSet would), while a stream of joined GRID
//! sentences runs in real time. The promise (docs/reliability.md): partials,
//! exactly one final, last, and its text within one word of the same stream
//! without the fault. One set of services serves every fault.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::pipeline::*;
use common::*;
use mouthmap_bus::kafka::InMessage;

/// One fault at a time: each runs streams in real time on this machine's
/// few cores, and two at once would measure the machine, not the fault.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Four validation sentences, 12 s: the RTMP faults cut about one
/// sentence out of the middle, and the last one is whole after it.
const JOINED_RTMP: [&str; 4] = ["bbie8n", "bras6n", "bgauzp", "bwim4n"];

/// Validation sentences (never trained on), joined into one 9 s stream.
const JOINED: [&str; 3] = ["bbie8n", "bras6n", "bgauzp"];

/// The pipeline's consuming services, each in a fixed group under a fixed
/// instance id, with known metrics ports.
struct Services {
    t: Topics,
    brokers: String,
    groups: HashMap<&'static str, String>,
    /// By replica name: the role, then `-N` for replicas after the first.
    ports: HashMap<String, u16>,
    running: HashMap<String, Proc>,
    /// More arguments for every replica of a role.
    extra: HashMap<&'static str, Vec<String>>,
    /// Each replica under its own instance id (static membership), as
    /// `scripts/stack` runs them; off for the broker restart (see there).
    static_membership: bool,
}

impl Services {
    fn up_with(brokers: String, static_membership: bool) -> Self {
        let mut s = Services {
            t: Topics::new(),
            brokers,
            groups: ["preprocess", "infer", "decode"]
                .into_iter()
                .map(|r| (r, unique(r)))
                .collect(),
            ports: HashMap::new(),
            running: HashMap::new(),
            extra: HashMap::new(),
            static_membership,
        };
        for role in ["preprocess", "infer", "decode"] {
            s.start(role);
        }
        tokio::task::block_in_place(|| {
            for role in ["preprocess", "infer", "decode"] {
                s.wait_ready(role);
            }
        });
        s
    }

    fn start(&mut self, role: &'static str) {
        self.start_replica(role, 0);
    }

    /// Starts replica `n` of `role` under its own instance id; returns its name.
    fn start_replica(&mut self, role: &'static str, n: u32) -> String {
        let name = if n == 0 {
            role.to_string()
        } else {
            format!("{role}-{n}")
        };
        let port = free_port();
        let mut cmd = self.t.command(&self.brokers);
        cmd.arg(role)
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--group", &self.groups[role]]);
        if self.static_membership {
            cmd.args(["--instance-id", &format!("fault-{n}")]);
        }
        match role {
            "infer" => {
                cmd.arg("--model").arg(model());
            }
            "decode" => {
                // Longer than a replica's way back into its group can take
                // on the local broker (seen: over 30 s once), so a stream
                // waiting for a restarted stage is not closed as timed out.
                cmd.args(["--feature-store", "false", "--idle-timeout", "150s"]);
            }
            _ => {
                cmd.args(["--feature-store", "false"]);
            }
        }
        if let Some(extra) = self.extra.get(role) {
            cmd.args(extra);
        }
        self.running
            .insert(name.clone(), Proc::spawn(role, &mut cmd));
        self.ports.insert(name.clone(), port);
        name
    }

    /// The replica's readiness report.
    fn readyz(&self, name: &str) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/readyz", self.ports[name]);
        reqwest::blocking::get(&url)
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("{name} answers /readyz: {e}"))
    }

    /// Waits up to 60 s until the number of partitions each named replica
    /// reports holding satisfies `holds`, all at once; panics with their
    /// readiness reports and `what` otherwise.
    fn wait_partitions(&self, names: &[&str], holds: impl Fn(usize) -> bool, what: &str) {
        if let Err(reports) = self.partitions_within(names, holds, Duration::from_secs(60)) {
            panic!("{what} within 60 s: {reports:?}");
        }
    }

    /// Polls until the number of partitions each named replica reports
    /// holding satisfies `holds`, all at once; their last readiness reports
    /// when `wait` runs out first.
    fn partitions_within(
        &self,
        names: &[&str],
        holds: impl Fn(usize) -> bool,
        wait: Duration,
    ) -> Result<(), Vec<serde_json::Value>> {
        let until = Instant::now() + wait;
        loop {
            let reports: Vec<serde_json::Value> = names.iter().map(|n| self.readyz(n)).collect();
            if reports.iter().all(|r| holds(partitions_held(r))) {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(reports);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Events the replica has read from its input topic.
    fn received(&self, name: &str) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.ports[name]);
        let text = reqwest::blocking::get(&url)
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("{name} answers /metrics: {e}"));
        text.lines()
            .filter(|l| l.starts_with("mouthmap_events_received_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until the service says it is ready (broker reachable, group joined).
    fn wait_ready(&self, name: &str) {
        let url = format!("http://127.0.0.1:{}/readyz", self.ports[name]);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < until, "{name} not ready within 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kill(&mut self, name: &str) {
        let mut p = self.running.remove(name).expect("running");
        p.child.kill().unwrap();
        p.child.wait().unwrap();
    }
}

/// A broker of the test's own (the group rejoins a test watches happen on
/// a fresh coordinator, not one the whole suite's groups went through) and
/// the services on it, each holding partitions before the test begins. A
/// fresh Tansu 0.6 broker on a loaded machine has now and then stalled for
/// a minute as its first groups joined (seen in CI: no partitions for 66 s,
/// then one group never settled): then the pipeline is started again once
/// on another fresh broker, so the fault a test injects is the only one.
fn own_pipeline(static_membership: bool) -> (OwnBroker, Services) {
    for attempt in 1.. {
        let broker = OwnBroker::new();
        let s = Services::up_with(broker.brokers(), static_membership);
        let names = ["preprocess", "infer", "decode"];
        let held = tokio::task::block_in_place(|| {
            s.partitions_within(&names, |n| n > 0, Duration::from_secs(40))
        });
        let Err(reports) = held else {
            return (broker, s);
        };
        assert!(
            attempt < 2,
            "the services on a fresh broker held no partitions within 40 s, twice: {reports:?}"
        );
        eprintln!(
            "the services on a fresh broker held no partitions within 40 s; starting again on another: {reports:?}"
        );
    }
    unreachable!()
}

/// What every fault test starts from: a broker of its own, the joined
/// clips' video, and the consuming services ready on it.
struct Fixture {
    _broker: OwnBroker,
    _dir: tempfile::TempDir,
    video: std::path::PathBuf,
    s: Services,
}

impl Fixture {
    fn up() -> Self {
        Self::up_with(&JOINED)
    }

    fn up_with(clips: &[&str]) -> Self {
        Self::up_on(clips, true)
    }

    fn up_on(clips: &[&str], static_membership: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let video = join_clips(dir.path(), clips);
        let (broker, s) = own_pipeline(static_membership);
        Fixture {
            _broker: broker,
            _dir: dir,
            video,
            s,
        }
    }
}

/// Partials, exactly one final, last, and the stream's own end (not a
/// timeout). Returns the final's text.
fn final_text(msgs: &[InMessage], id: &str, what: &str) -> String {
    let f = one_final(&transcripts_for(msgs, id), what);
    assert!(
        !f.timed_out,
        "{what}: the final is the stream's end, not a timeout"
    );
    f.text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_killed_mid_stream_and_restarted_loses_nothing() {
    if !available(&[Need::Broker]) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let Fixture {
        _broker,
        _dir,
        video,
        mut s,
    } = Fixture::up();
    let reference = reference_text(&s, &video).await;
    for role in ["infer", "decode", "preprocess"] {
        let id = unique(&format!("kill-{role}"));
        let mut i = file_streams(&s, &video, std::slice::from_ref(&id));
        tokio::time::sleep(Duration::from_secs(3)).await;
        s.kill(role);
        tokio::time::sleep(Duration::from_secs(2)).await;
        s.start(role);
        assert!(tokio::task::block_in_place(|| i.wait(Duration::from_secs(60))).success());
        each_reads_as(&s, &[id], &reference, &format!("{role} killed")).await;
    }
}

/// The decoder killed right after it sent a stream's final, before its
/// offsets were committed (the commit interval stretched to make sure):
/// restarted, it reads the stream again, and sees its final on the topic
/// already: still exactly one final.
#[tokio::test(flavor = "multi_thread")]
async fn a_decoder_killed_just_after_a_final_does_not_send_it_twice() {
    if !available(&[Need::Broker]) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let (_broker, mut s) = own_pipeline(true);
    let slow_commit = ["--kafka-option", "auto.commit.interval.ms=30000"];
    s.extra.insert(
        "decode",
        slow_commit.iter().map(|a| a.to_string()).collect(),
    );
    s.kill("decode");
    s.start("decode");
    tokio::task::block_in_place(|| s.wait_ready("decode"));

    let id = unique("final-then-kill");
    let mut i = Proc::spawn(
        "ingest",
        s.t.command(&s.brokers)
            .arg("ingest")
            .arg(format!("{id}={}", grid_clip("bbie8n.mp4").display())),
    );
    let msgs = read_until(&s.brokers, &s.t.transcripts, |m| finals_for(m, &id) >= 1).await;
    s.kill("decode");
    assert!(tokio::task::block_in_place(|| i.wait(Duration::from_secs(60))).success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.start("decode");
    tokio::task::block_in_place(|| s.wait_ready("decode"));
    // Its offsets were not committed: it reads the stream again (its
    // partials come again) ...
    read_until(&s.brokers, &s.t.transcripts, |m| m.len() > msgs.len()).await;
    // ... but not its final.
    let second = tokio::time::timeout(
        Duration::from_secs(15),
        read_until(&s.brokers, &s.t.transcripts, |m| finals_for(m, &id) >= 2),
    )
    .await;
    assert!(second.is_err(), "one final, after a restart too");
}

/// The broker stopped for 10 s mid-stream under the whole pipeline and
/// started again with its storage: every service reconnects, and what the
/// broker failed to take while it went down and came back is sent again by
/// a renewed producer (ingest and every stage: Tansu 0.6 forgets an
/// idempotent producer's identity on restart, see docs/reliability.md). The
/// stream reads as without the fault, with one final.
///
/// Failed before the stages sent again (2026-12-01): preprocess stopped
/// with "Unknown broker error" on its first send after the restart and no
/// transcript came within 150 s.
///
/// The services run without static membership here: on Tansu 0.6 a static
/// member can deadlock its group across a broker restart (2 of 6 runs,
/// 2026-12-02: after the restart the broker answered a heartbeat "unknown
/// member", the member rejoined under a new member id and waited for ever
/// for the group's leader, its own old id; librdkafka's `debug=cgrp` log in
/// docs/reliability.md). Dynamic members rode it out in 5 of 5 runs. Apache
/// Kafka has no such defect; what this test checks is the stages' sending
/// again and their offsets, the same either way.
#[tokio::test(flavor = "multi_thread")]
async fn the_whole_pipeline_rides_out_a_broker_restart() {
    if !available(&[Need::Broker]) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let Fixture {
        _broker: mut broker,
        _dir,
        video,
        s,
    } = Fixture::up_on(&JOINED, false);
    let reference = reference_text(&s, &video).await;
    let id = unique("broker-restart");
    let mut i = file_streams(&s, &video, std::slice::from_ref(&id));
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| broker.stop());
    tokio::time::sleep(Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| broker.start());
    assert!(tokio::task::block_in_place(|| i.wait(Duration::from_secs(150))).success());
    each_reads_as(&s, &[id], &reference, "broker restarted").await;
}

/// Streams of `video` in real time from one ingest process, one per id.
fn file_streams(s: &Services, video: &std::path::Path, ids: &[String]) -> Proc {
    let mut cmd = s.t.command(&s.brokers);
    cmd.args(["ingest", "--realtime"]);
    for id in ids {
        cmd.arg(format!("{id}={}", video.display()));
    }
    Proc::spawn("ingest", &mut cmd)
}

/// The text of `video` streamed without a fault, to compare with.
async fn reference_text(s: &Services, video: &std::path::Path) -> String {
    let base = unique("base");
    let mut i = file_streams(s, video, std::slice::from_ref(&base));
    let msgs = read_until(&s.brokers, &s.t.transcripts, |m| finals_for(m, &base) >= 1).await;
    assert!(tokio::task::block_in_place(|| i.wait(Duration::from_secs(60))).success());
    let reference = final_text(&msgs, &base, "without a fault");
    assert!(
        reference.split_whitespace().count() >= JOINED.len() * 6 - 2,
        "the reference reads the sentences: {reference:?}"
    );
    reference
}

/// Each stream's one final (once a second one had the time to show up, if
/// one were coming) is its own end, within one word of `reference`.
async fn each_reads_as(s: &Services, ids: &[String], reference: &str, what: &str) {
    let all = |m: &[InMessage]| ids.iter().all(|id| finals_for(m, id) >= 1);
    let msgs = read_until(&s.brokers, &s.t.transcripts, all).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let msgs = read_until(&s.brokers, &s.t.transcripts, |m| {
        m.len() >= msgs.len() && all(m)
    })
    .await;
    for id in ids {
        let text = final_text(&msgs, id, what);
        assert!(
            word_errors(&text, reference) <= 1,
            "{what}: {id}: {text:?} vs {reference:?}"
        );
    }
}

/// A consumer group rebalance under load: a second infer replica joins
/// while three streams run. It takes partitions over, rebuilds the streams
/// on them from their held-back offsets, and every stream reads as without it.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_added_mid_stream_takes_partitions_and_loses_nothing() {
    if !available(&[Need::Broker]) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let Fixture {
        _broker,
        _dir,
        video,
        mut s,
    } = Fixture::up();
    let reference = reference_text(&s, &video).await;

    let ids: Vec<String> = (0..3).map(|i| unique(&format!("rebalance{i}"))).collect();
    let mut i = file_streams(&s, &video, &ids);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let added = s.start_replica("infer", 1);
    tokio::task::block_in_place(|| s.wait_ready(&added));
    assert!(tokio::task::block_in_place(|| i.wait(Duration::from_secs(60))).success());
    each_reads_as(&s, &ids, &reference, "a replica added").await;
    for name in ["infer", added.as_str()] {
        let report = tokio::task::block_in_place(|| s.readyz(name));
        assert!(
            partitions_held(&report) > 0,
            "{name} holds partitions: {report}"
        );
    }
}

/// Two infer replicas; the one carrying more is killed mid-stream and comes
/// back under its identity (on the local broker, a member that died keeps
/// its partitions until then; on Apache Kafka the survivor would take them
/// after the session timeout): the streams it carried complete, as without
/// the fault. Both replicas must hold partitions again before the streams
/// are read, so a replica that did not get its partitions back says so.
#[tokio::test(flavor = "multi_thread")]
async fn of_two_replicas_the_one_killed_comes_back_and_its_streams_complete() {
    if !available(&[Need::Broker]) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let Fixture {
        _broker,
        _dir,
        video,
        mut s,
    } = Fixture::up();
    let second = s.start_replica("infer", 1);
    tokio::task::block_in_place(|| s.wait_ready(&second));
    let reference = reference_text(&s, &video).await;

    let ids: Vec<String> = (0..3).map(|i| unique(&format!("replica{i}"))).collect();
    let before = tokio::task::block_in_place(|| [s.received("infer"), s.received(&second)]);
    let mut i = file_streams(&s, &video, &ids);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = tokio::task::block_in_place(|| [s.received("infer"), s.received(&second)]);
    let carried = [now[0] - before[0], now[1] - before[1]];
    let (victim, n) = if carried[0] >= carried[1] {
        ("infer".to_string(), 0)
    } else {
        (second.clone(), 1)
    };
    assert!(
        carried[n] > 0,
        "the replica killed carried streams: {carried:?}"
    );
    s.kill(&victim);
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.start_replica("infer", n as u32);
    assert!(tokio::task::block_in_place(|| i.wait(Duration::from_secs(60))).success());
    // Both replicas hold partitions again (the one back took its own).
    tokio::task::block_in_place(|| {
        s.wait_partitions(
            &["infer", &second],
            |n| n > 0,
            "both replicas hold partitions",
        )
    });
    each_reads_as(&s, &ids, &reference, "one of two replicas killed").await;
}

/// The only infer replica killed for good and replaced by one under a new
/// instance id (a pod rescheduled with another name). On the local broker
/// the dead member stays in the group as its leader, so the newcomer's join
/// never completes (Tansu 0.6 evicts no static member); after
/// `REJOIN_AFTER` without an assignment the newcomer joins again without
/// static membership, which makes the broker drop the silent member, and
/// takes every partition. On Apache Kafka the dead member is evicted after
/// the session timeout and the first join completes. Either way the stream
/// reads as without the fault.
///
/// Failed before the rejoin (2026-12-02): the newcomer held no partitions
/// and no transcript came.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_dead_for_good_is_replaced_under_a_new_identity() {
    if !available(&[Need::Broker]) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let Fixture {
        _broker,
        _dir,
        video,
        mut s,
    } = Fixture::up();
    let reference = reference_text(&s, &video).await;
    s.kill("infer");
    let newcomer = s.start_replica("infer", 7);
    tokio::task::block_in_place(|| s.wait_ready(&newcomer));
    let id = unique("replaced");
    let mut i = file_streams(&s, &video, std::slice::from_ref(&id));
    assert!(tokio::task::block_in_place(|| i.wait(Duration::from_secs(60))).success());
    each_reads_as(&s, &[id], &reference, "a replica replaced").await;
    // The broker drops the newcomer's own earlier (static) identity a
    // session timeout after it left, which is one more rebalance: polled.
    tokio::task::block_in_place(|| {
        s.wait_partitions(
            &[&newcomer],
            |n| n == 3,
            "the newcomer holds every partition",
        )
    });
}

/// The broker stopped for 10 s mid-stream and started again with its
/// storage: ingest waits for it (the producer's retries outlast the gap),
/// and the stream arrives whole, in order, with no frame lost.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_rides_out_a_broker_restart() {
    if !available(&[Need::Broker]) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut broker = OwnBroker::new();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().unwrap();
    let video = join_clips(dir.path(), &JOINED);
    let topic = unique("frames");
    let id = unique("broker-gap");
    let mut ingest = Proc::spawn(
        "ingest",
        mouthmap(&brokers, &topic)
            .args(["ingest", "--realtime"])
            .arg(format!("{id}={}", video.display())),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.start();
    let status = tokio::task::block_in_place(|| ingest.wait(Duration::from_secs(120)));
    assert!(status.success(), "ingest delivered everything: {status}");
    let streams = collect_streams(&brokers, &topic, &[&id], Duration::from_secs(60)).await;
    assert_complete(&streams[&id], 225);
}

/// The first (or last) `n` words of `a` are those of `b`: at most
/// `max_wrong` wrong against `b`'s first (last) `n - 1` to `n + 1` words,
/// whichever is closest. Two readings of the same stream differ a little
/// (windows form as frames arrive, and a gap shifts every window after it
/// against the sentences): each may miss or change a word, and one word more
/// or less in either shifts the span (a CI run read "bin white at four now"
/// after the fault and "white in m four now" without it, for "bin white at m
/// four now").
fn same_words(a: &str, b: &str, n: usize, from_end: bool, max_wrong: usize, what: &str) {
    let pick = |t: &str, n: usize| {
        let w: Vec<&str> = t.split_whitespace().collect();
        let w = if from_end {
            &w[w.len().saturating_sub(n)..]
        } else {
            &w[..n.min(w.len())]
        };
        w.join(" ")
    };
    let pa = pick(a, n);
    let (errors, pb) = (n.saturating_sub(1)..=n + 1)
        .map(|m| {
            let pb = pick(b, m);
            (word_errors(&pa, &pb), pb)
        })
        .min_by_key(|(e, _)| *e)
        .expect("three spans");
    assert!(
        errors <= max_wrong,
        "{what}: {pa:?} vs {pb:?}: {errors} words wrong (at most {max_wrong})"
    );
}

/// nginx-rtmp in front of an ingest on a fixed API port (so an ingest
/// started again gets nginx's callbacks), feeding `s`'s topics; with the
/// text of the joined clips published without a fault.
struct RtmpEntry {
    nginx: Nginx,
    api: u16,
    ingest: Option<Proc>,
    reference: String,
}

impl RtmpEntry {
    async fn up(s: &Services, video: &std::path::Path) -> Self {
        let api = free_port();
        let mut e = RtmpEntry {
            nginx: Nginx::start(api),
            api,
            ingest: None,
            reference: String::new(),
        };
        e.start_ingest(s);
        let base = unique("rtmp-base");
        let mut p = ffmpeg_publish(video, &e.nginx.url(&base));
        assert!(tokio::task::block_in_place(|| p.wait(Duration::from_secs(60))).success());
        let msgs = read_until(&s.brokers, &s.t.transcripts, |m| finals_for(m, &base) >= 1).await;
        e.reference = final_text(&msgs, &base, "without a fault");
        e
    }

    fn start_ingest(&mut self, s: &Services) {
        self.ingest = Some(Proc::spawn(
            "ingest",
            s.t.command(&s.brokers)
                .args(["ingest", "--listen"])
                .arg(format!("127.0.0.1:{}", self.api))
                .arg("--rtmp-url")
                .arg(format!("rtmp://127.0.0.1:{}", self.nginx.port)),
        ));
        wait_port(self.api, Duration::from_secs(30));
    }

    /// The stream's one final, once a second one had the time to show up
    /// if one were coming: not a timeout, one gap of about the outage, the
    /// words before and after it as without the fault, and fewer of them.
    async fn check(&self, s: &Services, id: &str, what: &str) {
        let msgs = read_until(&s.brokers, &s.t.transcripts, |m| finals_for(m, id) >= 1).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let msgs = read_until(&s.brokers, &s.t.transcripts, |m| {
            m.len() >= msgs.len() && finals_for(m, id) >= 1
        })
        .await;
        let f = one_final(&transcripts_for(&msgs, id), what);
        assert!(!f.timed_out, "{what}: the stream ended with its publisher");
        assert_eq!(f.gaps.len(), 1, "{what}: one gap: {:?}", f.gaps);
        let gap = f.gaps[0];
        assert!(
            (500..8000).contains(&gap.missing_ms),
            "{what}: the gap is the outage: {gap:?}"
        );
        let reference = &self.reference;
        // The first sentence ends about when the fault comes: its last word
        // may fall in the gap.
        same_words(&f.text, reference, 4, false, 2, &format!("{what}: before"));
        // The last sentence, 5 s after the gap: read as without it, within
        // what a gap's shift of the windows changes. Measured over 30 gaps
        // (1.6-3.6 s, cut at 2.5-3.5 s) spliced out of these clips and read
        // by `mouthmap transcribe`: the last five words differed from the
        // uncut reading by 0 (17), 1 (8) or 2 (5) words; a CI run over RTMP
        // once by 3. A stream that lost what followed the gap, or started
        // again from its beginning, differs by 4 or 5.
        same_words(&f.text, reference, 5, true, 3, &format!("{what}: after"));
        assert!(
            f.text.split_whitespace().count() < reference.split_whitespace().count(),
            "{what}: the outage's words are missing, not invented: {:?} vs {reference:?}",
            f.text
        );
    }
}

/// nginx-rtmp restarted mid-stream while its publisher comes back under
/// the same key, as OBS reconnects: one stream, one final (not an error,
/// not two), what came before and after the outage read as without it, and
/// the outage named in the final as a gap.
#[tokio::test(flavor = "multi_thread")]
async fn an_rtmp_server_restarted_under_a_reconnecting_publisher_is_one_stream_with_its_gap() {
    if !available(&[Need::Broker, Need::NginxRtmp]) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let Fixture {
        _broker,
        _dir,
        video,
        s,
    } = Fixture::up_with(&JOINED_RTMP);
    let mut entry = RtmpEntry::up(&s, &video).await;

    let id = unique("rtmp-restart");
    let t0 = Instant::now();
    let mut first = ffmpeg_publish(&video, &entry.nginx.url(&id));
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| entry.nginx.stop());
    let status = tokio::task::block_in_place(|| first.wait(Duration::from_secs(20)));
    assert!(!status.success(), "the publisher lost its server");
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| entry.nginx.start_again());
    let back_at = t0.elapsed().as_secs_f64();
    let mut second = ffmpeg_publish_from(&video, &entry.nginx.url(&id), back_at);
    assert!(
        tokio::task::block_in_place(|| second.wait(Duration::from_secs(60))).success(),
        "the publisher published the rest"
    );
    entry.check(&s, &id, "nginx restarted").await;
}

/// Ingest killed (SIGKILL) mid-stream and started again 2 s later, while
/// its publisher goes on: nginx-rtmp reports the publisher to the new
/// ingest (`on_update`), which reads where the stream left off back from
/// the topic and goes on with it: one stream, one final, the time ingest
/// was away named as a gap.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_killed_under_a_live_publisher_takes_its_stream_back() {
    if !available(&[Need::Broker, Need::NginxRtmp]) {
        return;
    }
    let _serial = ONE_AT_A_TIME.lock().await;
    let Fixture {
        _broker,
        _dir,
        video,
        s,
    } = Fixture::up_with(&JOINED_RTMP);
    let mut entry = RtmpEntry::up(&s, &video).await;

    let id = unique("ingest-killed");
    let mut publisher = ffmpeg_publish(&video, &entry.nginx.url(&id));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ingest = entry.ingest.take().unwrap();
    ingest.child.kill().unwrap();
    ingest.child.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| entry.start_ingest(&s));
    assert!(
        tokio::task::block_in_place(|| publisher.wait(Duration::from_secs(60))).success(),
        "the publisher never noticed"
    );
    entry.check(&s, &id, "ingest killed").await;
}
