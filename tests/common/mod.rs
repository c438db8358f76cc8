//! Helpers for the integration tests: the real broker, nginx-rtmp, ffmpeg and
//! the `mouthmap` binary, each started and cleaned up by the test.
#![allow(dead_code)]

pub mod otlp;
pub mod pipeline;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mouthmap_bus::kafka::{InMessage, KafkaSettings, StartAt, consumer};
use mouthmap_contracts::FrameEvent;
use rdkafka::consumer::Consumer;

/// A service an integration test needs beyond this repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The Kafka broker at MOUTHMAP_TEST_BROKERS (`scripts/stack up --infra`).
    Broker,
    /// `redis-server`, which the test starts on a port of its own.
    Redis,
    /// nginx with the RTMP module, which the test starts on a port of its own.
    NginxRtmp,
    /// Prometheus, which the test starts on a port of its own.
    Prometheus,
    /// The Python with Triton's client (its model-config protobuf) and the
    /// model converters: [`interop_python`].
    Interop,
    /// Headless Chromium (Debian's `chromium`) and puppeteer-core to drive
    /// it: [`browser_node`].
    Browser,
    /// The Python with grpcio for the client examples: [`examples_python`].
    Examples,
}

/// `.stack` (or MOUTHMAP_STACK_DIR): where `scripts/install-deps` puts
/// the test tools it installs.
pub fn stack_dir() -> PathBuf {
    std::env::var_os("MOUTHMAP_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".stack"))
}

/// The Python `scripts/install-deps` sets up for model interop (Triton's
/// model-config protobuf from `tritonclient`).
pub fn interop_python() -> PathBuf {
    stack_dir().join("interop-venv/bin/python")
}

/// The Python with the client examples' packages (grpcio).
pub fn examples_python() -> PathBuf {
    stack_dir().join("examples-venv/bin/python")
}

/// The folder whose `node_modules` holds puppeteer-core.
pub fn browser_node() -> PathBuf {
    stack_dir().join("browser-node")
}

fn missing(need: Need) -> Option<String> {
    let on_path = |bin: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            .unwrap_or(false)
    };
    match need {
        Need::Broker => {
            let b =
                std::env::var("MOUTHMAP_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
            let first = b.split(',').next().unwrap_or_default().to_string();
            let up = first.parse().is_ok_and(|addr| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
            });
            (!up).then(|| format!("the Kafka broker at {b} (`scripts/stack up --infra` starts one; MOUTHMAP_TEST_BROKERS names another)"))
        }
        Need::Redis => (!on_path("redis-server"))
            .then(|| "redis-server (`scripts/install-deps` installs it)".to_string()),
        Need::NginxRtmp => (!(on_path("nginx")
            && Path::new("/usr/lib/nginx/modules/ngx_rtmp_module.so").exists()))
        .then(|| "nginx with its RTMP module (`scripts/install-deps` installs them)".to_string()),
        Need::Prometheus => (!on_path("prometheus"))
            .then(|| "prometheus (`scripts/install-deps` installs it)".to_string()),
        Need::Browser => (!(on_path("chromium")
            && browser_node()
                .join("node_modules/puppeteer-core/package.json")
                .is_file()))
        .then(|| "chromium and puppeteer-core (`scripts/install-deps` installs them)".to_string()),
        Need::Examples => (!examples_python().is_file()).then(|| {
            format!(
                "{} (`scripts/install-deps` makes it)",
                examples_python().display()
            )
        }),
        Need::Interop => (!interop_python().is_file()).then(|| {
            format!(
                "{} (`scripts/install-deps` makes it)",
                interop_python().display()
            )
        }),
    }
}

/// True when everything in `needs` is there. Otherwise the test should
/// return at once: this prints why it was skipped, or, when the run
/// requires every service (`scripts/test` sets MOUTHMAP_REQUIRE_SERVICES=1,
/// and starts them), fails the test instead, so a full run never passes
/// with tests skipped.
pub fn available(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|&n| missing(n)).collect();
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let why = format!("{test} needs {}", missing.join(" and "));
    if std::env::var_os("MOUTHMAP_REQUIRE_SERVICES").is_some_and(|v| v != "0") {
        panic!("{why}; scripts/test starts every service a test needs");
    }
    eprintln!("SKIPPED {why}; run scripts/test, which starts them");
    false
}

/// The broker the tests use (`scripts/stack up --infra` starts one).
pub fn brokers() -> String {
    let b = std::env::var("MOUTHMAP_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = b.split(',').next().unwrap().to_string();
    assert!(
        std::net::TcpStream::connect_timeout(
            &first.parse().expect("host:port"),
            Duration::from_secs(2)
        )
        .is_ok(),
        "no Kafka broker at {b}: run `scripts/stack up --infra` (or scripts/test), or set MOUTHMAP_TEST_BROKERS"
    );
    b
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// `../shared` (or MOUTHMAP_SHARED).
pub fn shared() -> PathBuf {
    std::env::var_os("MOUTHMAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// A GRID clip of speaker 1 (H.264, 360x288, 75 frames).
pub fn grid_clip(name: &str) -> PathBuf {
    let p = shared().join("data/grid/s1").join(name);
    assert!(
        p.exists(),
        "missing GRID clip {}: set MOUTHMAP_SHARED",
        p.display()
    );
    p
}

/// The YuNet face detector in `../shared`.
pub fn face_model() -> PathBuf {
    shared().join("models/yunet/face_detection_yunet_2026may.onnx")
}

/// GRID clips of speaker 1 joined back to back (ffmpeg concat, no
/// re-encoding) into `dir/joined.mp4`: a continuous stream of sentences.
pub fn join_clips(dir: &Path, clips: &[&str]) -> PathBuf {
    concat_clips(dir, clips, "joined", &["-c", "copy"])
}

/// GRID clips of speaker 1 joined back to back by ffmpeg's concat demuxer
/// into `dir/NAME.mp4`, with `output` (ffmpeg's output arguments: `-c
/// copy`, or an encoding).
pub fn concat_clips(dir: &Path, clips: &[&str], name: &str, output: &[&str]) -> PathBuf {
    let list = dir.join(format!("{name}.txt"));
    std::fs::write(
        &list,
        clips
            .iter()
            .map(|c| format!("file '{}'\n", grid_clip(&format!("{c}.mp4")).display()))
            .collect::<String>(),
    )
    .unwrap();
    let video = dir.join(format!("{name}.mp4"));
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
        ])
        .arg(&list)
        .args(output)
        .arg(&video)
        .status()
        .unwrap();
    assert!(ok.success(), "ffmpeg could not join {clips:?}");
    video
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16, timeout: Duration) {
    let until = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "nothing listens on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many partitions of its group a service's readiness report
/// (`/readyz`) says it holds.
pub fn partitions_held(report: &serde_json::Value) -> usize {
    report["detail"]["partitions"]
        .as_array()
        .map_or(0, Vec::len)
}

/// The readiness report of the service whose metrics listen on `port`,
/// None while it does not answer ready.
pub async fn readyz(port: u16) -> Option<serde_json::Value> {
    reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .and_then(|r| r.error_for_status())
        .ok()?
        .json()
        .await
        .ok()
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.into(),
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait(Duration::from_secs(30))
    }

    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < until,
                "{} did not exit within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Tansu broker of the test's own on a free port, its storage in a folder
/// that survives [`OwnBroker::stop`] and [`OwnBroker::start`].
pub struct OwnBroker {
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl OwnBroker {
    pub fn new() -> Self {
        let mut b = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            proc: None,
        };
        b.start();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        self.proc = Some(Proc::spawn(
            "tansu",
            Command::new("tansu")
                .current_dir(self.dir.path())
                .args(["broker", "--kafka-cluster-id", "mouthmap-test"])
                .args(["--kafka-listener-url", &url])
                .args(["--kafka-advertised-listener-url", &url])
                .args(["--storage-engine", "sqlite://tansu.db"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
        wait_port(self.port, Duration::from_secs(30));
    }

    /// Stops the broker (SIGTERM), keeping its storage.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }
}

impl Default for OwnBroker {
    fn default() -> Self {
        Self::new()
    }
}

/// The `mouthmap` binary with the test's broker and topic names.
/// The API token the tests' ingest processes use.
pub const TEST_TOKEN: &str = "test-api-token";
/// The secret nginx adds to the callbacks it forwards (see [`Nginx`]).
pub const TEST_CALLBACK_SECRET: &str = "test-callback-secret";

pub fn mouthmap(brokers: &str, frames_topic: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mouthmap"));
    c.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("MOUTHMAP_API_TOKEN", TEST_TOKEN)
        .env("MOUTHMAP_RTMP_CALLBACK_SECRET", TEST_CALLBACK_SECRET)
        .env("MOUTHMAP_BROKERS", brokers)
        .env("MOUTHMAP_FRAMES_TOPIC", frames_topic)
        .env("MOUTHMAP_PARTITIONS", "3")
        // MOUTHMAP_TEST_LOG gives the services another log filter, e.g.
        // `info,librdkafka=debug` with MOUTHMAP_KAFKA_OPTIONS=debug=cgrp to
        // watch a consumer group's joins.
        .env(
            "MOUTHMAP_LOG",
            std::env::var("MOUTHMAP_TEST_LOG").unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .stdin(Stdio::null());
    c
}

/// nginx-rtmp from the project's template, on its own port, calling back
/// ingest's API at `ingest_port`.
pub struct Nginx {
    proc: Proc,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// nginx is stopped when dropped; its logs are printed when a test fails.
impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "nginx's logs ({}):\n{}",
                self.dir.path().display(),
                self.logs()
            );
        }
    }
}

impl Nginx {
    pub fn start(ingest_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let callback_port = free_port();
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/nginx-rtmp.conf.template"),
        )
        .unwrap();
        let d = dir.path().display().to_string();
        let conf = template
            .replace("@MODULE@", "/usr/lib/nginx/modules/ngx_rtmp_module.so")
            .replace("@PREFIX@", &d)
            .replace("@LOG_DIR@", &d)
            .replace("@RTMP_LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@CALLBACK_LISTEN@", &format!("127.0.0.1:{callback_port}"))
            .replace("@INGEST_HOSTPORT@", &format!("127.0.0.1:{ingest_port}"))
            .replace("@CALLBACK_SECRET@", TEST_CALLBACK_SECRET)
            .replace("@ALLOW_PUBLISH@", "allow publish 127.0.0.1;");
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let proc = Self::spawn(dir.path());
        wait_port(port, Duration::from_secs(10));
        Self { proc, port, dir }
    }

    fn spawn(dir: &Path) -> Proc {
        Proc::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .stdout(Stdio::null()),
        )
    }

    /// Stops nginx (SIGTERM, fast shutdown, its worker with it; SIGKILL
    /// would leave the worker running, orphaned) and waits for it.
    pub fn stop(&mut self) {
        if self.proc.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.proc.child.id().to_string())
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && self.proc.child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts a stopped nginx again, on the same ports, with the same settings.
    pub fn start_again(&mut self) {
        self.proc = Self::spawn(self.dir.path());
        wait_port(self.port, Duration::from_secs(10));
    }

    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    /// Everything nginx logged so far (error log and RTMP access log).
    pub fn logs(&self) -> String {
        ["nginx-error.log", "error.log", "nginx-rtmp-access.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Publishes `clip` to `url` in real time with ffmpeg, as OBS would.
pub fn ffmpeg_publish(clip: &Path, url: &str) -> Proc {
    ffmpeg_publish_from(clip, url, 0.0)
}

/// Publishes `clip` from `from_s` seconds in: a publisher that comes back
/// after an outage goes on with what is live then.
pub fn ffmpeg_publish_from(clip: &Path, url: &str, from_s: f64) -> Proc {
    Proc::spawn(
        "ffmpeg",
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re"])
            .args(["-ss", &format!("{from_s:.3}"), "-i"])
            .arg(clip)
            .args([
                "-an",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
            ])
            .args(["-g", "25", "-pix_fmt", "yuv420p", "-f", "flv", url])
            .stdin(Stdio::null()),
    )
}

/// One message as a test sees it.
pub struct Seen {
    pub event: FrameEvent,
    pub payload_len: usize,
    pub msg: InMessage,
}

/// Reads `topic` from the start until every stream in `keys` sent its end
/// event, or panics after `timeout`.
pub async fn collect_streams(
    brokers: &str,
    topic: &str,
    keys: &[&str],
    timeout: Duration,
) -> HashMap<String, Vec<Seen>> {
    let settings = KafkaSettings::new(brokers, "mouthmap-test");
    let c = consumer(
        &settings,
        &unique("test-reader"),
        &[topic],
        StartAt::Earliest,
    )
    .unwrap();
    let mut out: HashMap<String, Vec<Seen>> = HashMap::new();
    let mut ended: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while ended.len() < keys.len() {
        let m = tokio::time::timeout_at(deadline, c.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out: ended {ended:?} of {keys:?}; seen {:?}",
                    out.iter()
                        .map(|(k, v)| (k.clone(), v.len()))
                        .collect::<Vec<_>>()
                )
            })
            .unwrap();
        let msg = InMessage::from_borrowed(&m);
        let key = msg.key_str().unwrap_or_default().to_string();
        if !keys.contains(&key.as_str()) {
            continue;
        }
        let (event, payload) = msg
            .decode::<FrameEvent>()
            .expect("frames message follows the contract");
        let payload_len = payload.len();
        if matches!(event, FrameEvent::End(_)) {
            ended.push(key.clone());
        }
        out.entry(key).or_default().push(Seen {
            event,
            payload_len,
            msg,
        });
    }
    c.unsubscribe();
    out
}

/// Asserts a stream arrived whole: start, chunks whose frames are exactly
/// `0..frames` in order with contiguous chunk numbers, then an end of EOS.
pub fn assert_complete(seen: &[Seen], frames: u64) {
    assert!(
        matches!(seen.first().map(|s| &s.event), Some(FrameEvent::Start(_))),
        "first event must be start"
    );
    let mut next_frame = 0u64;
    let mut next_seq = 0u64;
    for s in &seen[1..seen.len() - 1] {
        let FrameEvent::Chunk(c) = &s.event else {
            panic!("only chunks between start and end, got {:?}", s.event)
        };
        assert_eq!(c.seq, next_seq, "chunk numbers are contiguous");
        next_seq += 1;
        for f in &c.frames {
            assert_eq!(f.index, next_frame, "frames arrive in order without gaps");
            next_frame += 1;
        }
        assert_eq!(s.payload_len, c.frame_ranges().last().unwrap().end);
        assert!(
            s.msg.payload.len() < 1_000_000,
            "every message stays under 1 MB"
        );
        assert_eq!(s.msg.header("mm-schema"), Some("frames/v1"));
        assert_eq!(s.msg.header("mm-event"), Some("chunk"));
    }
    let FrameEvent::End(end) = &seen.last().unwrap().event else {
        panic!("last event must be end")
    };
    assert_eq!(end.error, None, "stream ended cleanly");
    assert_eq!(
        end.reason,
        mouthmap_contracts::EndReason::Eos,
        "the stream ended at its source's end"
    );
    assert_eq!(next_frame, frames, "all {frames} frames arrived");
    assert_eq!(end.frames, frames);
    assert_eq!(end.chunks, next_seq);
}

/// Reads `topic` from the start until `done` holds for what was read; panics
/// after two minutes without a message, or four minutes in all (a topic that
/// keeps receiving other messages cannot make a test hang).
pub async fn read_until(
    brokers: &str,
    topic: &str,
    done: impl Fn(&[InMessage]) -> bool,
) -> Vec<InMessage> {
    let subscribe = || {
        consumer(
            &KafkaSettings::new(brokers, "t"),
            &unique("reader"),
            &[topic],
            StartAt::Earliest,
        )
        .unwrap()
    };
    let mut c = subscribe();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !done(&out) {
        assert!(
            Instant::now() < deadline,
            "read_until: still not done after 240 s on {topic} ({} messages read)",
            out.len()
        );
        match tokio::time::timeout(Duration::from_secs(120), c.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out on {topic} after {} messages", out.len()))
        {
            Ok(m) => out.push(InMessage::from_borrowed(&m)),
            // The topic may not exist yet (the services create it as they
            // start); a fresh subscription sees it once it does.
            Err(e) => {
                eprintln!("reading {topic}: {e}; subscribing again");
                tokio::time::sleep(Duration::from_millis(300)).await;
                if out.is_empty() {
                    c = subscribe();
                }
            }
        }
    }
    out
}

/// A Redis server of the test's own (`redis-server` from Debian), on its own
/// port, with an append-only file so a stop and start keeps its data.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

/// Waits until the Redis on `port` answers PING with PONG: listening is not
/// ready (while it loads its data it answers every command with LOADING).
fn wait_redis_ready(port: u16, timeout: Duration) {
    use std::io::{Read, Write};
    let until = Instant::now() + timeout;
    loop {
        let pong = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut c| {
            let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reply = [0u8; 64];
            c.write_all(b"PING\r\n").is_ok()
                && c.read(&mut reply)
                    .is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
        });
        if pong {
            return;
        }
        assert!(
            Instant::now() < until,
            "redis-server on :{port} did not answer PING with PONG within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Redis {
    pub fn start() -> Self {
        let mut r = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            proc: None,
        };
        r.resume();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again on the same port and data.
    pub fn resume(&mut self) {
        assert!(self.proc.is_none(), "redis already running");
        let proc = Proc::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port"])
                .arg(self.port.to_string())
                .arg("--dir")
                .arg(self.dir.path())
                .args(["--appendonly", "yes", "--save", "", "--loglevel", "warning"])
                .stdout(Stdio::null()),
        );
        // Listening is not enough: ready is answering PING.
        wait_redis_ready(self.port, Duration::from_secs(10));
        self.proc = Some(proc);
    }

    /// Stops it (SIGTERM: it writes its data first).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate();
        }
    }
}
