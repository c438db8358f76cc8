//! The Kafka edge of the preprocess service: `frames` messages in, `mouths`
//! messages out, through [`Preprocessor`].

use mouthmap_bus::kafka::{Handler, Incoming};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::{ErrorKind, HandleError, OutMessage, telemetry};
use mouthmap_contracts::{Event, FrameEvent, MouthEvent, StreamQuality};
use mouthmap_feature_store::writer::FeatureWriter;
use mouthmap_feature_store::{Row, Value};
use tokio::sync::oneshot;

use crate::stage::{Preprocessor, StageError};

/// The feature view the preprocessor writes.
pub const STREAM_QUALITY: &str = "stream_quality";

/// [`Handler`] for the consume loop.
pub struct PreprocessHandler {
    pub stage: Preprocessor,
    pub mouths_topic: String,
    pub metrics: StageMetrics,
    /// Where the stream's quality goes as frames go by (the feature store).
    pub features: Option<FeatureWriter>,
    /// A stream with no event for this long has its tracker dropped.
    pub idle_timeout: std::time::Duration,
}

/// The `stream_quality` feature row of a stream.
pub fn quality_row(q: &StreamQuality) -> Row {
    let mut row = Row::new();
    row.insert("frames".into(), Value::Int(q.frames as i64));
    row.insert("face_share".into(), Value::Float(q.face_share as f64));
    row.insert("brightness".into(), Value::Float(q.mean_brightness as f64));
    row.insert("sharpness".into(), Value::Float(q.mean_sharpness as f64));
    row.insert(
        "mouth_box_width".into(),
        Value::Float(q.mean_box_width as f64),
    );
    row.insert("no_face".into(), Value::Bool(q.no_face));
    row
}

/// How long a stream's end waits for its whole-stream quality to be
/// stored before it goes downstream anyway (Redis slow or down: the
/// transcripts then say what the lookup found, and nothing else waits).
pub const END_QUALITY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Offers the stream quality after each of `out`'s events to the feature
/// store (a full writer queue is counted as a feature-write error). An
/// end's quality comes back as a receiver that hears when it is stored:
/// pass them to [`quality_stored`] before sending the end on, so the
/// stream's final transcript reads the quality of all its frames.
pub fn offer_quality(
    stage: &Preprocessor,
    writer: &FeatureWriter,
    out: &[(MouthEvent, Vec<u8>)],
    metrics: &StageMetrics,
) -> Vec<oneshot::Receiver<bool>> {
    let mut ends = Vec::new();
    for (ev, _) in out {
        let id = ev.stream_id();
        let queued = match ev {
            MouthEvent::Chunk(c) => stage
                .stream_quality(&c.stream_id)
                .map(|q| writer.offer(STREAM_QUALITY, id, quality_row(&q))),
            MouthEvent::End(e) => {
                let acked = writer.offer_acked(STREAM_QUALITY, id, quality_row(&e.quality));
                let queued = acked.is_some();
                ends.extend(acked);
                Some(queued)
            }
            MouthEvent::Start(_) => None,
        };
        if queued == Some(false) {
            metrics.error(ErrorKind::FeatureWrite);
        }
    }
    ends
}

/// Waits until the ends' qualities from [`offer_quality`] are stored, at
/// most [`END_QUALITY_WAIT`] in all; a failed or late write is counted as a
/// feature-write error and the end goes on.
pub async fn quality_stored(ends: Vec<oneshot::Receiver<bool>>, metrics: &StageMetrics) {
    if ends.is_empty() {
        return;
    }
    let all = answers(ends);
    match tokio::time::timeout(END_QUALITY_WAIT, all).await {
        Ok(written) if written.iter().all(|w| *w) => {}
        _ => {
            metrics.error(ErrorKind::FeatureWrite);
            tracing::debug!("a stream's last quality was not stored in time; its end goes on");
        }
    }
}

/// Every receiver's answer (false for a writer that went away).
async fn answers(ends: Vec<oneshot::Receiver<bool>>) -> Vec<bool> {
    let mut out = Vec::with_capacity(ends.len());
    for end in ends {
        out.push(end.await.unwrap_or(false));
    }
    out
}

impl From<StageError> for HandleError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Contract(c) => c.into(),
            e @ (StageError::TooSmall { .. }
            | StageError::TooLarge { .. }
            | StageError::ChunkTooLarge { .. }
            | StageError::Jpeg { .. }) => HandleError::dead_letter(ErrorKind::Content, e),
            e @ StageError::Detector(_) => HandleError::fatal(ErrorKind::Detector, e),
        }
    }
}

impl PreprocessHandler {
    fn process(
        &mut self,
        input: Incoming<'_, FrameEvent>,
    ) -> Result<(Vec<OutMessage>, Vec<oneshot::Receiver<bool>>), HandleError> {
        let event = input.event;
        let span = tracing::info_span!(
            "preprocess.chunk",
            stream_id = event.stream_id(),
            event = event.name()
        );
        telemetry::continue_trace(&span, &input.msg.headers);
        let _entered = span.enter();
        let out = self.stage.handle(event, input.payload)?;
        self.metrics.set_active(self.stage.active_streams() as i64);
        let ends = match &self.features {
            Some(writer) => offer_quality(&self.stage, writer, &out, &self.metrics),
            None => Vec::new(),
        };
        let trace = telemetry::inject(&span);
        let out = out
            .into_iter()
            .map(|(ev, crops)| {
                OutMessage::event(&self.mouths_topic, &ev, &crops).headers(trace.clone())
            })
            .collect();
        Ok((out, ends))
    }
}

impl Handler for PreprocessHandler {
    type Input = FrameEvent;

    async fn handle(
        &mut self,
        input: Incoming<'_, FrameEvent>,
    ) -> Result<Vec<OutMessage>, HandleError> {
        let (out, ends) = tokio::task::block_in_place(|| self.process(input))?;
        quality_stored(ends, &self.metrics).await;
        Ok(out)
    }

    async fn on_tick(&mut self) -> Result<Vec<OutMessage>, HandleError> {
        for id in self.stage.expire_idle(self.idle_timeout) {
            tracing::warn!(stream_id = %id, "no event within the idle timeout; stream state dropped");
        }
        self.metrics.set_active(self.stage.active_streams() as i64);
        Ok(Vec::new())
    }
}
