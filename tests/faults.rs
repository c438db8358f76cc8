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

/// Validation sentences (never trained on), joined into one 9 s stream.
const JOINED: [&str; 3] = ["bbie8n", "bras6n", "bgauzp"];

/// The pipeline's consuming services, each in a fixed group under a fixed
/// instance id, with known metrics ports.
struct Services {
    t: Topics,
    brokers: String,
    groups: HashMap<&'static str, String>,
    ports: HashMap<&'static str, u16>,
    running: HashMap<&'static str, Proc>,
}

impl Services {
    /// The consuming services, started and ready, on `brokers`.
    fn up(brokers: String) -> Self {
        let mut s = Services {
            t: Topics::new(),
            brokers,
            groups: ["preprocess", "infer", "decode"]
                .into_iter()
                .map(|r| (r, unique(r)))
                .collect(),
            ports: HashMap::new(),
            running: HashMap::new(),
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
        let port = free_port();
        let mut cmd = self.t.command(&self.brokers);
        cmd.arg(role)
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(["--group", &self.groups[role]])
            .args(["--instance-id", "fault-0"]);
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
        self.running.insert(role, Proc::spawn(role, &mut cmd));
        self.ports.insert(role, port);
    }

    /// Waits until the service says it is ready (broker reachable, group joined).
    fn wait_ready(&self, role: &str) {
        let url = format!("http://127.0.0.1:{}/readyz", self.ports[role]);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if reqwest::blocking::get(&url).is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < until, "{role} not ready within 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kill(&mut self, role: &str) {
        let mut p = self.running.remove(role).expect("running");
        p.child.kill().unwrap();
        p.child.wait().unwrap();
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
    // A broker of the test's own: the group rejoins it watches happen on a
    // fresh coordinator, not one that the whole suite's groups went through.
    let broker = OwnBroker::new();
    let dir = tempfile::tempdir().unwrap();
    let video = join_clips(dir.path(), &JOINED);
    let mut s = Services::up(broker.brokers());
    let ingest = |t: &Topics, brokers: &str, id: &str| {
        Proc::spawn(
            "ingest",
            t.command(brokers)
                .args(["ingest", "--realtime"])
                .arg(format!("{id}={}", video.display())),
        )
    };

    // Without a fault, for the text to compare with.
    let base = unique("base");
    let mut i = ingest(&s.t, &s.brokers, &base);
    let msgs = read_until(&s.brokers, &s.t.transcripts, |m| finals_for(m, &base) >= 1).await;
    assert!(i.wait(Duration::from_secs(60)).success());
    let reference = final_text(&msgs, &base, "without a fault");
    let words = JOINED.len() * 6;
    assert!(
        reference.split_whitespace().count() >= words - 2,
        "the reference reads the sentences: {reference:?}"
    );

    for role in ["infer", "decode", "preprocess"] {
        let id = unique(&format!("kill-{role}"));
        let mut i = ingest(&s.t, &s.brokers, &id);
        tokio::time::sleep(Duration::from_secs(3)).await;
        s.kill(role);
        tokio::time::sleep(Duration::from_secs(2)).await;
        s.start(role);
        let msgs = read_until(&s.brokers, &s.t.transcripts, |m| finals_for(m, &id) >= 1).await;
        assert!(i.wait(Duration::from_secs(60)).success());
        // Give a duplicate final the time to show up, if one were coming.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let msgs = read_until(&s.brokers, &s.t.transcripts, |m| {
            m.len() >= msgs.len() && finals_for(m, &id) >= 1
        })
        .await;
        let text = final_text(&msgs, &id, &format!("{role} killed"));
        assert!(
            word_errors(&text, &reference) <= 1,
            "{role} killed: {text:?} vs {reference:?}"
        );
    }
}

/// The broker stopped for 10 s mid-stream and started again with its
/// storage: ingest waits for it (the producer's retries outlast the gap),
/// and the stream arrives whole, in order, with no frame lost.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_rides_out_a_broker_restart() {
    if !available(&[Need::Broker]) {
        return;
    }
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

/// The same number of words at the start (or the end) of two texts, with at
/// most one wrong.
fn same_words(a: &str, b: &str, n: usize, from_end: bool, what: &str) {
    let pick = |t: &str| {
        let w: Vec<&str> = t.split_whitespace().collect();
        let w = if from_end {
            &w[w.len().saturating_sub(n)..]
        } else {
            &w[..n.min(w.len())]
        };
        w.join(" ")
    };
    let (pa, pb) = (pick(a), pick(b));
    assert!(word_errors(&pa, &pb) <= 1, "{what}: {pa:?} vs {pb:?}");
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
        same_words(&f.text, reference, 6, false, &format!("{what}: before"));
        same_words(&f.text, reference, 6, true, &format!("{what}: after"));
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
    let broker = OwnBroker::new();
    let dir = tempfile::tempdir().unwrap();
    let video = join_clips(dir.path(), &JOINED);
    let s = Services::up(broker.brokers());
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
    let broker = OwnBroker::new();
    let dir = tempfile::tempdir().unwrap();
    let video = join_clips(dir.path(), &JOINED);
    let s = Services::up(broker.brokers());
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
