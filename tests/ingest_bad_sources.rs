//! One ingest process, good streams and bad sources at once: the good ones
//! (a GRID clip, a 4K video) complete; a file that is not a video, one in a
//! codec nothing here decodes, an empty file, a file cut short and an RTMP
//! key nobody publishes each end with a clear error event and log line.

mod common;

use std::time::Duration;

use common::*;
use mouthmap_contracts::{EndReason, FrameEvent};

#[tokio::test(flavor = "multi_thread")]
async fn good_streams_complete_while_bad_sources_fail_clearly() {
    if !available(&[Need::Broker, Need::NginxRtmp]) {
        return;
    }
    let brokers = brokers();
    let topic = unique("frames");
    let nginx = Nginx::start(free_port());
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("notes.mp4");
    std::fs::write(&fake, "these are meeting notes, not a video\n".repeat(50)).unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    // The clip with its index first, cut in half: the first half decodes.
    let whole = dir.path().join("whole.mp4");
    ffmpeg(&[
        "-i",
        &grid_clip("bbaf2n.mp4").display().to_string(),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        &whole.display().to_string(),
    ]);
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    // The same clip with its video's codec renamed to one nobody decodes.
    let stsd = bytes.windows(4).position(|w| w == b"stsd").unwrap();
    let avc1 = stsd + bytes[stsd..].windows(4).position(|w| w == b"avc1").unwrap();
    let mut unknown = bytes.clone();
    unknown[avc1..avc1 + 4].copy_from_slice(b"zzz9");
    let codec = dir.path().join("zzz9.mp4");
    std::fs::write(&codec, unknown).unwrap();
    let uhd = dir.path().join("4k.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=3840x2160:rate=25",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        &uhd.display().to_string(),
    ]);

    let (good1, good2, badfile, nobody) = (
        unique("good1"),
        unique("good2"),
        unique("badfile"),
        unique("nobody"),
    );
    let (uhd_id, cut_id, codec_id, empty_id) = (
        unique("uhd"),
        unique("cut"),
        unique("codec"),
        unique("empty"),
    );
    let out = mouthmap(&brokers, &topic)
        .arg("ingest")
        .arg(format!("{good1}={}", grid_clip("bbaf2n.mp4").display()))
        .arg(format!("{good2}={}", grid_clip("bbaf4p.mp4").display()))
        .arg(format!("{badfile}={}", fake.display()))
        .arg(format!("{nobody}={}", nginx.url("key-nobody-publishes")))
        .arg(format!("{uhd_id}={}", uhd.display()))
        .arg(format!("{cut_id}={}", cut.display()))
        .arg(format!("{codec_id}={}", codec.display()))
        .arg(format!("{empty_id}={}", empty.display()))
        .args([
            "--connect-timeout",
            "2s",
            "--retries",
            "1",
            "--retry-backoff",
            "200ms",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failed streams make exit status 1; stderr:\n{stderr}"
    );

    let streams = collect_streams(
        &brokers,
        &topic,
        &[
            &good1, &good2, &badfile, &nobody, &uhd_id, &cut_id, &codec_id, &empty_id,
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_complete(&streams[&good1], 75);
    assert_complete(&streams[&good2], 75);
    // 4K frames are scaled to the 640-pixel default before they travel.
    assert_complete(&streams[&uhd_id], 25);
    for s in &streams[&uhd_id] {
        if let FrameEvent::Chunk(c) = &s.event {
            assert_eq!((c.width, c.height), (640, 360), "4K scaled down");
        }
    }
    // A file cut short: its frames travel, and its end says what happened.
    let seen = &streams[&cut_id];
    let FrameEvent::End(end) = &seen.last().unwrap().event else {
        panic!("the cut file's stream ends")
    };
    assert!(
        (30..70).contains(&end.frames) && seen.len() > 2,
        "the frames before the cut were read: {end:?}"
    );
    assert_eq!(end.reason, EndReason::Error);
    let error = end.error.as_deref().unwrap_or_default();
    assert!(error.contains("cut short or damaged"), "{error}");
    assert!(stderr.contains(error), "the log says it too");

    for (id, expect) in [
        (&badfile, "not a video"),
        (&nobody, "no video within 2s"),
        (&codec_id, "Missing decoder: video/x-gst-fourcc-zzz9"),
        (&empty_id, "Stream contains no data"),
    ] {
        let seen = &streams[id];
        assert_eq!(seen.len(), 2, "{id}: only start and end, no frames");
        assert!(matches!(seen[0].event, FrameEvent::Start(_)));
        let FrameEvent::End(end) = &seen[1].event else {
            panic!("{id}: second event must be end")
        };
        assert_eq!(end.reason, EndReason::Error);
        assert_eq!(end.frames, 0);
        let error = end.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(expect),
            "{id}: error {error:?} should say {expect:?}"
        );
        let logged = stderr.lines().any(|l| {
            l.contains("stream ended with an error")
                && l.contains(id.as_str())
                && l.contains(expect)
        });
        assert!(logged, "{id}: no clear log line; stderr:\n{stderr}");
        assert!(
            stderr.contains(&format!("stream {id}: ")),
            "{id}: summary line missing"
        );
    }
    let nobody_err = match &streams[&nobody][1].event {
        FrameEvent::End(e) => e.error.clone().unwrap(),
        _ => unreachable!(),
    };
    assert!(
        nobody_err.contains("gave up after 1 reconnection"),
        "{nobody_err}"
    );
}

/// Runs ffmpeg quietly, overwriting its output; panics if it fails.
fn ffmpeg(args: &[&str]) {
    let ok = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg {args:?}");
}
