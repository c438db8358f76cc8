//! What the whole-pipeline benchmarks share: paths, the 30 s video of
//! validation clips, the processes they start and what those use.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub const CLIPS: [&str; 10] = [
    "bbie8n", "bgauzp", "bgbh4n", "bras6n", "brbt3a", "brwt5s", "bwanzp", "bwim4n", "bwwh2n",
    "bwwh4p",
];

pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shared() -> PathBuf {
    std::env::var_os("MOUTHMAP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"))
}

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

/// Ten validation clips back to back: one 30 s video.
pub fn long_video(dir: &Path) -> PathBuf {
    let video = dir.join("validation-30s.mp4");
    if video.exists() {
        return video;
    }
    let list = dir.join("validation-30s.txt");
    let lines: String = CLIPS
        .iter()
        .map(|c| {
            format!(
                "file '{}'\n",
                shared().join(format!("data/grid/s1/{c}.mp4")).display()
            )
        })
        .collect();
    std::fs::write(&list, lines).unwrap();
    let ok = Command::new("ffmpeg")
        .args([
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
        .args(["-c", "copy"])
        .arg(&video)
        .status()
        .expect("ffmpeg");
    assert!(ok.success(), "ffmpeg could not join the clips");
    video
}

pub struct Service {
    pub role: String,
    pub child: Child,
    pub log: PathBuf,
}

/// (peak resident memory in MiB, CPU seconds) of a live process.
pub fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
    (hwm_kb / 1024.0, (ticks(11) + ticks(12)) / 100.0)
}

/// Pids of running processes named `name` (the broker, Redis).
pub fn pids_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// CPU seconds used so far by the processes named `name`.
pub fn cpu_of(name: &str) -> f64 {
    pids_named(name).into_iter().map(|p| usage(p).1).sum()
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Resident memory now (VmRSS) of a live process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first sample of metric `name` (any labels) in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}
