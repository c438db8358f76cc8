//! The gRPC door: `mouthmap.v1.Transcriber/Transcribe` (proto/mouthmap.proto),
//! beside grpc.health.v1 and server reflection.
//!
//! One call is one stream: a config message, then JPEG frames in; partials
//! and one final out. Frames are taken at the pace of their timestamps, so
//! HTTP/2 flow control slows a client that sends faster than real time
//! (nothing is buffered beyond the transport's window). A client that goes
//! away ends its stream at once; the pipeline finishes it and its final on
//! the `transcripts` topic is marked `cancelled`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mouthmap_bus::guard::Guard;
use mouthmap_contracts::{Transcript, TranscriptKind};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::hub::{Hub, HubEvent};
use crate::intake::{Admission, FrameSink, Intake};
use crate::upload;

/// The generated messages and service.
pub mod proto {
    tonic::include_proto!("mouthmap.v1");

    /// The proto's descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/mouthmap_descriptor.bin"));
}

use proto::transcriber_server::{Transcriber, TranscriberServer};
use proto::video_input::Input;
use proto::{TranscriptEvent, VideoInput};

/// The `Transcriber` service.
pub struct TranscriberService {
    pub hub: Hub,
    pub intake: Intake,
    pub guard: Arc<Guard>,
    pub features: Option<mouthmap_feature_store::online::OnlineStore>,
    /// How long after a stream's end its final may take.
    pub final_wait: Duration,
}

impl TranscriberService {
    pub fn into_server(self) -> TranscriberServer<Self> {
        TranscriberServer::new(self)
    }
}

/// A transcript as the API sends it.
pub fn event_of(t: &Transcript) -> TranscriptEvent {
    let mut e = TranscriptEvent {
        kind: 0,
        stream_id: t.stream_id.clone(),
        text: t.text.clone(),
        stable_prefix: t.stable_prefix.clone(),
        words: t
            .words
            .iter()
            .map(|w| proto::Word {
                word: w.word.clone(),
                start_ms: w.start_ms,
                end_ms: w.end_ms,
            })
            .collect(),
        confidence: t.confidence,
        model: t.model.clone(),
        model_version: t.model_version.clone(),
        latency_ms: t.latency_ms,
        covered_ms: t.covered_ms,
        no_face: t.no_face,
    };
    e.set_kind(match t.kind {
        TranscriptKind::Partial => proto::transcript_event::Kind::Partial,
        TranscriptKind::Final => proto::transcript_event::Kind::Final,
    });
    e
}

type Outbound = mpsc::Sender<Result<TranscriptEvent, Status>>;

#[tonic::async_trait]
impl Transcriber for TranscriberService {
    type TranscribeStream = ReceiverStream<Result<TranscriptEvent, Status>>;

    async fn transcribe(
        &self,
        request: Request<Streaming<VideoInput>>,
    ) -> Result<Response<Self::TranscribeStream>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !self.guard.token_ok(token) {
            return Err(Status::unauthenticated(
                "missing or wrong token: send the metadata `authorization: Bearer TOKEN`",
            ));
        }
        let admission = self
            .intake
            .admit()
            .map_err(|s| Status::resource_exhausted(s.to_string()))?;
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the call ended before its StreamConfig"))?;
        let Some(Input::Config(config)) = first.input else {
            return Err(Status::invalid_argument(
                "the first message must be a StreamConfig; frames come after it",
            ));
        };
        let given = (!config.stream_id.is_empty()).then_some(config.stream_id.as_str());
        let id = upload::stream_id(given).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !config.grammar.is_empty() {
            upload::set_grammar(self.features.as_ref(), &id, &config.grammar)
                .await
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
        }
        // Watch the hub before the first frame goes out: nothing is missed.
        let events = self.hub.subscribe();
        let (tx, rx) = mpsc::channel(16);
        let (ended_tx, ended_rx) = watch::channel(None);
        let sink = self.intake.frames(&id, &peer);
        tokio::spawn(frames_in(
            inbound,
            sink,
            !config.as_fast_as_possible,
            tx.clone(),
            ended_tx,
        ));
        tokio::spawn(transcripts_out(
            events,
            self.hub.clone(),
            id,
            tx,
            ended_rx,
            self.final_wait,
            admission,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Takes the caller's frames until it half-closes (the stream's end) or
/// goes away (cancelled); then ends the stream.
async fn frames_in(
    mut inbound: Streaming<VideoInput>,
    mut sink: FrameSink,
    paced: bool,
    out: Outbound,
    ended: watch::Sender<Option<Instant>>,
) {
    let cancelled = loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            _ = out.closed() => break true,
        };
        let frame = match msg {
            Ok(Some(VideoInput {
                input: Some(Input::Frame(f)),
            })) => f,
            Ok(Some(_)) => {
                let _ = out
                    .send(Err(Status::invalid_argument(
                        "a StreamConfig or an empty message after the first: send frames only",
                    )))
                    .await;
                break true;
            }
            Ok(None) => break false,
            Err(status) => {
                tracing::info!(code = ?status.code(), "gRPC caller went away");
                break true;
            }
        };
        if paced {
            let wait = sink.wait_for(frame.pts_us);
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = out.closed() => break true,
                }
            }
        }
        if let Err(e) = sink.push(frame.jpeg, frame.pts_us).await {
            let _ = out.send(Err(Status::invalid_argument(e.to_string()))).await;
            break true;
        }
    };
    if let Err(e) = sink.end(cancelled).await {
        tracing::warn!(error = %e, "could not end the gRPC stream");
    }
    let _ = ended.send(Some(Instant::now()));
}

/// Sends the stream's transcripts until its final.
async fn transcripts_out(
    mut events: broadcast::Receiver<HubEvent>,
    hub: Hub,
    id: String,
    out: Outbound,
    mut ended: watch::Receiver<Option<Instant>>,
    final_wait: Duration,
    _admission: Admission,
) {
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        let t = tokio::select! {
            e = events.recv() => match e {
                Ok(HubEvent::Transcript(t)) if t.stream_id == id => (*t).clone(),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => match hub.view(&id).and_then(|v| v.transcript) {
                    Some(t) => t,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = check.tick() => {
                let due = ended.borrow_and_update().is_some_and(|at| at.elapsed() > final_wait);
                if due {
                    let _ = out.send(Err(Status::deadline_exceeded(format!(
                        "no final transcript {final_wait:?} after the stream ended: the pipeline is behind or a stage is down"
                    )))).await;
                    return;
                }
                continue;
            }
        };
        let last = t.kind == TranscriptKind::Final;
        // A caller gone keeps nothing to send to; the stream still ends.
        if out.send(Ok(event_of(&t))).await.is_err() || last {
            return;
        }
    }
}
