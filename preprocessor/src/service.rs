//! The Kafka edge of the preprocess service: `frames` messages in, `mouths`
//! messages out, through [`Preprocessor`].

use mouthmap_bus::kafka::{Handler, Incoming};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::{ErrorKind, HandleError, OutMessage, telemetry};
use mouthmap_contracts::{Event, FrameEvent, MouthEvent, StreamQuality};
use mouthmap_feature_store::writer::FeatureWriter;
use mouthmap_feature_store::{Row, Value};

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

/// Offers the stream quality after each of `out`'s events to the feature
/// store (a full writer queue is counted as a feature-write error).
pub fn offer_quality(
    stage: &Preprocessor,
    writer: &FeatureWriter,
    out: &[(MouthEvent, Vec<u8>)],
    metrics: &StageMetrics,
) {
    for (ev, _) in out {
        let quality = match ev {
            MouthEvent::Chunk(c) => stage.stream_quality(&c.stream_id),
            MouthEvent::End(e) => Some(e.quality.clone()),
            MouthEvent::Start(_) => None,
        };
        if let Some(q) = quality
            && !writer.offer(STREAM_QUALITY, ev.stream_id(), quality_row(&q))
        {
            metrics.error(ErrorKind::FeatureWrite);
        }
    }
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
    fn process(&mut self, input: Incoming<'_, FrameEvent>) -> Result<Vec<OutMessage>, HandleError> {
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
        if let Some(writer) = &self.features {
            offer_quality(&self.stage, writer, &out, &self.metrics);
        }
        let trace = telemetry::inject(&span);
        Ok(out
            .into_iter()
            .map(|(ev, crops)| {
                OutMessage::event(&self.mouths_topic, &ev, &crops).headers(trace.clone())
            })
            .collect())
    }
}

impl Handler for PreprocessHandler {
    type Input = FrameEvent;

    async fn handle(
        &mut self,
        input: Incoming<'_, FrameEvent>,
    ) -> Result<Vec<OutMessage>, HandleError> {
        tokio::task::block_in_place(|| self.process(input))
    }

    async fn on_tick(&mut self) -> Result<Vec<OutMessage>, HandleError> {
        for id in self.stage.expire_idle(self.idle_timeout) {
            tracing::warn!(stream_id = %id, "no event within the idle timeout; stream state dropped");
        }
        self.metrics.set_active(self.stage.active_streams() as i64);
        Ok(Vec::new())
    }
}
