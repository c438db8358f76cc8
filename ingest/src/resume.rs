//! Where a stream an earlier ingest process carried left off, read back
//! from the frames topic itself: a restarted ingest goes on with a live
//! publisher's stream under its id, from the next chunk and frame, without
//! a second start event, and reports the time it was away as a gap.

use std::time::Duration;

use mouthmap_bus::kafka::{KafkaSettings, ReplayError, read_tail};
use mouthmap_contracts::{FrameEvent, headers};

use crate::stream::ResumePoint;

/// How many of each partition's newest messages are searched for the
/// stream, first and then once more.
const TAIL: [i64; 2] = [128, 1024];

/// Why the topic could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {topic} back to resume stream {stream_id}: {source}")]
pub struct ResumeError {
    topic: String,
    stream_id: String,
    source: ReplayError<std::convert::Infallible>,
}

/// The last event of `stream_id` among each partition's newest messages:
/// Some(point) when the stream started and has not ended there, None when
/// it ended (or is not among them: a new stream).
pub async fn find(
    settings: &KafkaSettings,
    topic: &str,
    stream_id: &str,
) -> Result<Option<ResumePoint>, ResumeError> {
    for last in TAIL {
        let mut newest: Option<FrameEvent> = None;
        read_tail(settings, topic, last, Duration::from_secs(10), |m| {
            if m.key.as_deref() != Some(stream_id.as_bytes()) {
                return;
            }
            let schema = m.header(headers::SCHEMA);
            // A message ingest itself could not have written is no place to
            // go on from; the one before it is.
            if let Ok((event, _)) =
                mouthmap_contracts::decode::<FrameEvent>(&m.payload, m.key.as_deref(), schema)
            {
                newest = Some(event);
            }
        })
        .await
        .map_err(|source| ResumeError {
            topic: topic.to_string(),
            stream_id: stream_id.to_string(),
            source,
        })?;
        match newest {
            Some(FrameEvent::End(_)) => return Ok(None),
            Some(FrameEvent::Start(s)) => {
                return Ok(Some(ResumePoint {
                    next_seq: 0,
                    next_index: 0,
                    last_frame_us: s.started_at_ms.saturating_mul(1000),
                }));
            }
            Some(FrameEvent::Chunk(c)) => {
                let last = c.frames.last().expect("a checked chunk has frames");
                return Ok(Some(ResumePoint {
                    next_seq: c.seq + 1,
                    next_index: last.index + 1,
                    last_frame_us: last.ingest_us,
                }));
            }
            None => {}
        }
    }
    Ok(None)
}
