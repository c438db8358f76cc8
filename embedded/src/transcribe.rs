//! One source through every stage in one process.

use std::sync::Arc;

use mouthmap_contracts::{EndReason, FrameEvent, Transcript, TranscriptKind};
use mouthmap_decoder::stage::{DecodeError, Decoder};
use mouthmap_inferencer::stage::{InferError, Inferencer};
use mouthmap_ingest::source::Source;
use mouthmap_ingest::stream::{Emitter, StreamControl, StreamSettings, run_stream};
use mouthmap_preprocessor::stage::{Preprocessor, StageError};

/// Why a transcription failed.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error("preprocess: {0}")]
    Preprocess(#[from] StageError),
    #[error("infer: {0}")]
    Infer(#[from] InferError),
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("writing a transcript: {0}")]
    Sink(#[from] std::io::Error),
    #[error("{0}")]
    Source(String),
    #[error("expected one final transcript, got {0}")]
    Finals(usize),
}

/// The three stages after ingest.
pub struct Stages {
    pub preprocess: Preprocessor,
    pub infer: Inferencer,
    pub decode: Decoder,
}

struct Chain<'a> {
    stages: Stages,
    sink: &'a mut (dyn FnMut(&Transcript) -> std::io::Result<()> + Send),
    finals: Vec<Transcript>,
    error: Option<TranscribeError>,
}

impl Chain<'_> {
    fn feed(&mut self, event: FrameEvent, payload: &[u8]) -> Result<(), TranscribeError> {
        let s = &mut self.stages;
        for (mouth, crops) in s.preprocess.handle(&event, payload)? {
            for out in s.infer.handle(&mouth, &crops, &[])? {
                for t in s.decode.handle(&out.event, &out.payload)? {
                    (self.sink)(&t)?;
                    if t.kind == TranscriptKind::Final {
                        self.finals.push(t);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Emitter for Chain<'_> {
    fn emit(&mut self, event: FrameEvent, payload: Vec<u8>, _span: tracing::Span) -> bool {
        match self.feed(event, &payload) {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

/// Runs `source` through ingest (as `settings` capture it) and `stages`,
/// handing every transcript to `sink` as it forms; returns the stream's one
/// final transcript.
pub fn transcribe(
    source: &Source,
    settings: &StreamSettings,
    stages: Stages,
    sink: &mut (dyn FnMut(&Transcript) -> std::io::Result<()> + Send),
) -> Result<Transcript, TranscribeError> {
    let mut chain = Chain {
        stages,
        sink,
        finals: Vec::new(),
        error: None,
    };
    let id = source.default_stream_id();
    let end = run_stream(
        &id,
        source,
        settings,
        &Arc::new(StreamControl::default()),
        &mut chain,
    );
    if let Some(e) = chain.error {
        return Err(e);
    }
    if end.reason == EndReason::Error {
        return Err(TranscribeError::Source(
            end.error.unwrap_or_else(|| "the source failed".into()),
        ));
    }
    match chain.finals.len() {
        1 => Ok(chain.finals.pop().expect("one final")),
        n => Err(TranscribeError::Finals(n)),
    }
}
