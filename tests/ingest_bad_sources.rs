//! One ingest process, two good streams and two bad sources: the good ones
//! complete, the bad ones end with a clear error event and log line.

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

    let (good1, good2, badfile, nobody) = (
        unique("good1"),
        unique("good2"),
        unique("badfile"),
        unique("nobody"),
    );
    let out = mouthmap(&brokers, &topic)
        .arg("ingest")
        .arg(format!("{good1}={}", grid_clip("bbaf2n.mp4").display()))
        .arg(format!("{good2}={}", grid_clip("bbaf4p.mp4").display()))
        .arg(format!("{badfile}={}", fake.display()))
        .arg(format!("{nobody}={}", nginx.url("key-nobody-publishes")))
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
        &[&good1, &good2, &badfile, &nobody],
        Duration::from_secs(60),
    )
    .await;
    assert_complete(&streams[&good1], 75);
    assert_complete(&streams[&good2], 75);

    for (id, expect) in [(&badfile, "not a video"), (&nobody, "no video within 2s")] {
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
