//! The Kafka edge of the infer service: `mouths` in, `logits` out.

use std::collections::{HashMap, VecDeque};

use mouthmap_bus::idle::IdleClock;
use mouthmap_bus::kafka::{Handler, Incoming};
use mouthmap_bus::metrics::StageMetrics;
use mouthmap_bus::{ErrorKind, HandleError, InMessage, OutMessage, telemetry};
use mouthmap_contracts::{Event, MouthEvent, headers};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use mouthmap_feature_store::{OnlineStore, Value};

use crate::model::{Device, Model};
use crate::repository::Repository;
use crate::routing::{self, Guard, Reason, Route};
use crate::stage::{InferError, Inferencer, Produced, Served};

/// The view holding each model's route (`mouthmap models route`).
pub const ROUTE_VIEW: &str = "model_route";

/// Decides which served version reads each new stream (see [`routing`]),
/// from the feature store: the stream's `model` feature and the model's
/// route, read within a deadline (past it, or with no store, the default
/// version reads the stream). Routes are cached for [`ROUTE_MAX_AGE`].
pub struct ModelRouter {
    store: Option<OnlineStore>,
    deadline: std::time::Duration,
    route: Option<Route>,
    route_read: Option<std::time::Instant>,
    /// The automatic rollback guard (None: off).
    pub guard: Option<Guard>,
}

/// How long a route read from the store is used before it is read again.
pub const ROUTE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

impl ModelRouter {
    pub fn new(store: Option<OnlineStore>, deadline: std::time::Duration) -> Self {
        Self {
            store,
            deadline,
            route: None,
            route_read: None,
            guard: None,
        }
    }

    /// The automatic rollback: when the route's canary reads streams and the
    /// guard finds it worse than the live version, its share goes to 0% in
    /// the feature store (every replica then reads it), with the reason.
    pub async fn check_guard(&mut self, served: &[Served], metrics: &StageMetrics) {
        let (Some(guard), Some(store), Some(route)) = (
            self.guard.as_mut(),
            self.store.as_ref(),
            self.route.as_mut(),
        ) else {
            return;
        };
        let Some(canary) = route.canary.filter(|_| route.percent > 0) else {
            return;
        };
        let live = route.live.unwrap_or(served[0].version);
        let Some(why) = guard.verdict(live, canary) else {
            return;
        };
        let name = served[0].name.clone();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let row: mouthmap_feature_store::Row = [
            ("percent".to_string(), Value::Int(0)),
            ("changed_at_ms".to_string(), Value::Int(now_ms)),
            (
                "reason".to_string(),
                Value::Str(format!("automatic rollback: {why}")),
            ),
        ]
        .into_iter()
        .collect();
        match tokio::time::timeout(self.deadline * 5, store.write(ROUTE_VIEW, &name, &row)).await {
            Ok(Ok(())) => {
                tracing::warn!(model = %name, canary, live, %why, "automatic rollback: the canary's share is now 0%");
                metrics.model_rollback(&name, &canary.to_string());
                route.percent = 0;
                guard.forget(canary);
            }
            Ok(Err(e)) => {
                tracing::warn!(model = %name, error = %e, "automatic rollback due but the route cannot be written; trying again")
            }
            Err(_) => {
                tracing::warn!(model = %name, "automatic rollback due but the route write is past its deadline; trying again")
            }
        }
    }

    /// The route a `model_route` row describes.
    pub fn route_of(row: &mouthmap_feature_store::Row) -> Route {
        let int = |k: &str| match row.get(k) {
            Some(Value::Int(v)) if *v > 0 => Some(*v as u64),
            _ => None,
        };
        Route {
            live: int("live"),
            canary: int("canary"),
            percent: match row.get("percent") {
                Some(Value::Int(p)) => (*p).clamp(0, 100) as u8,
                _ => 0,
            },
        }
    }

    /// The served version (an index into `served`; 0 is the default) that
    /// reads `stream_id`, and why.
    pub async fn choose(&mut self, stream_id: &str, served: &[Served]) -> (usize, Reason) {
        let name = served[0].name.clone();
        let mut feature = None;
        if let Some(store) = &self.store {
            let fresh = self.route_read.is_some_and(|t| t.elapsed() < ROUTE_MAX_AGE);
            let mut lookups = vec![("stream_settings", stream_id)];
            if !fresh {
                lookups.push((ROUTE_VIEW, name.as_str()));
            }
            match tokio::time::timeout(self.deadline, store.read(&lookups)).await {
                Ok(Ok(rows)) => {
                    feature = rows[0].as_ref().and_then(|r| match r.get("model") {
                        Some(Value::Str(m)) => Some(m.clone()),
                        _ => None,
                    });
                    if !fresh {
                        self.route = rows[1].as_ref().map(Self::route_of);
                        self.route_read = Some(std::time::Instant::now());
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(stream_id, error = %e, "model routing: feature store lookup failed; the cached route or the default version reads the stream")
                }
                Err(_) => {
                    tracing::warn!(stream_id, deadline = ?self.deadline, "model routing: feature store lookup past its deadline; the cached route or the default version reads the stream")
                }
            }
        }
        // A retired version (gone from the repository) matches no name: no
        // new stream goes to it.
        let keys: Vec<(String, u64)> = served
            .iter()
            .map(|s| {
                let name = if s.retired { "" } else { s.name.as_str() };
                (name.to_string(), s.version)
            })
            .collect();
        let (index, reason) =
            routing::choose(&keys, 0, stream_id, feature.as_deref(), self.route.as_ref());
        if let Some(f) = &feature
            && reason != Reason::Feature
        {
            tracing::warn!(stream_id, feature = %f, "the stream's model feature names no served version; routed instead");
        }
        (index, reason)
    }
}

/// Hot reload: the model repository is looked at every `every`; a version
/// of the served model that appears is loaded, checked against the contract
/// first (one that fails is refused, logged and counted, and the versions
/// already served go on), and one that disappears is retired (no new
/// stream goes to it; the streams it reads finish on it).
pub struct Reloader {
    repository: Repository,
    name: String,
    device: Device,
    threads: usize,
    every: std::time::Duration,
    last: std::time::Instant,
    /// Versions refused, with their file's modification time: a refused
    /// version is tried again only once its file changes.
    refused: HashMap<u64, Option<std::time::SystemTime>>,
}

impl Reloader {
    pub fn new(
        repository: Repository,
        name: impl Into<String>,
        device: Device,
        threads: usize,
        every: std::time::Duration,
    ) -> Self {
        Self {
            repository,
            name: name.into(),
            device,
            threads,
            every,
            last: std::time::Instant::now(),
            refused: HashMap::new(),
        }
    }
}

/// [`Handler`] for the consume loop.
pub struct InferHandler {
    pub stage: Inferencer,
    pub logits_topic: String,
    pub metrics: StageMetrics,
    /// A stream whose partition's event time moved this far past its own
    /// newest (see [`IdleClock`]) has its buffer dropped.
    pub idle_timeout: std::time::Duration,
    /// Event time per partition and per stream.
    pub clock: IdleClock,
    /// Where each stream's chunks came from, oldest first, while the stage
    /// still needs their frames: the offsets that must not be committed.
    pub inputs: InputLog,
    /// Picks the version that reads each stream, when several are served.
    pub router: ModelRouter,
    /// Serves versions added to the repository while running (None: the
    /// versions loaded at startup only).
    pub reloader: Option<Reloader>,
}

/// Per stream, the input messages whose frames the stage still holds:
/// `(first frame index, topic, partition, offset)`, oldest first.
#[derive(Debug, Default)]
pub struct InputLog {
    streams: HashMap<String, VecDeque<(u64, String, i32, i64)>>,
}

impl InputLog {
    /// A chunk of `stream_id` starting at frame `first` came from `msg`.
    fn record(&mut self, stream_id: &str, first: u64, msg: &InMessage) {
        self.streams
            .entry(stream_id.to_string())
            .or_default()
            .push_back((first, msg.topic.clone(), msg.partition, msg.offset));
    }

    /// Forgets the chunks of `stream_id` wholly before frame `needed` (None:
    /// the stage holds nothing of the stream any more).
    fn prune(&mut self, stream_id: &str, needed: Option<u64>) {
        let Some(needed) = needed else {
            self.streams.remove(stream_id);
            return;
        };
        if let Some(chunks) = self.streams.get_mut(stream_id) {
            while chunks.len() >= 2 && chunks[1].0 <= needed {
                chunks.pop_front();
            }
        }
    }

    /// The oldest offset on `topic`/`partition` that a stream still needs.
    fn oldest(&self, topic: &str, partition: i32) -> Option<i64> {
        self.streams
            .values()
            .filter_map(|c| c.front())
            .filter(|(_, t, p, _)| t == topic && *p == partition)
            .map(|(_, _, _, o)| *o)
            .min()
    }
}

impl From<InferError> for HandleError {
    fn from(e: InferError) -> Self {
        match e {
            InferError::Contract(c) => c.into(),
            e @ InferError::CropSize { .. } => HandleError::dead_letter(ErrorKind::Content, e),
            e @ (InferError::Model(_) | InferError::Geometry { .. }) => {
                HandleError::fatal(ErrorKind::Model, e)
            }
        }
    }
}

/// The trace context of a message, as the stage's tags carry it.
fn trace_tag(headers: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| k == headers::TRACEPARENT || k == headers::TRACESTATE)
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn as_bytes(tag: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    tag.iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect()
}

impl InferHandler {
    /// Turns stage output into messages; each continues the trace of the
    /// input that completed it. Every batch run gets a span linking the
    /// chunks whose frames it carried.
    fn publish(&mut self, out: Vec<Produced>) -> Vec<OutMessage> {
        for batch in self.stage.take_batches() {
            let span = tracing::info_span!(
                "infer.batch",
                windows = batch.windows,
                ms = batch.elapsed.as_secs_f64() * 1000.0
            );
            for tag in &batch.tags {
                let cx = telemetry::extract(&as_bytes(tag));
                use opentelemetry::trace::TraceContextExt;
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    span.add_link(sc);
                }
            }
            if batch.failed {
                self.metrics.model_error(&batch.model, &batch.version);
                if let Some(guard) = self.router.guard.as_mut() {
                    guard.record_failure(batch.served_version, batch.windows);
                }
                continue;
            }
            self.metrics.observe_batch(batch.elapsed, batch.windows);
            if let Some(guard) = self.router.guard.as_mut() {
                guard.record(batch.served_version, batch.elapsed, batch.windows);
            }
            self.metrics.observe_model_batch(
                &batch.model,
                &batch.version,
                batch.elapsed,
                batch.windows,
            );
        }
        self.metrics.set_active(self.stage.active_streams() as i64);
        out.into_iter()
            .map(|p| {
                let span = tracing::info_span!(
                    "infer.window",
                    stream_id = p.event.stream_id(),
                    event = p.event.name()
                );
                telemetry::continue_trace(&span, &as_bytes(&p.tag));
                OutMessage::event(&self.logits_topic, &p.event, &p.payload)
                    .headers(telemetry::inject(&span))
            })
            .collect()
    }
}

impl InferHandler {
    /// Hot reload, when due (see [`Reloader`]).
    fn reload(&mut self) {
        let Some(r) = self.reloader.as_mut() else {
            return;
        };
        if r.every.is_zero() || r.last.elapsed() < r.every {
            return;
        }
        r.last = std::time::Instant::now();
        let versions = match r.repository.versions(&r.name) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(model = %r.name, error = %e, "model repository unreadable; serving what is loaded");
                return;
            }
        };
        let gone: Vec<usize> = self
            .stage
            .served()
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.name == r.name && !s.retired && !versions.iter().any(|v| v.version == s.version)
            })
            .map(|(i, _)| i)
            .collect();
        for i in gone {
            self.stage.retire(i);
            let s = &self.stage.served()[i];
            if s.retired {
                tracing::warn!(model = %s.name, version = s.version, "model version left the repository: retired (its streams finish on it)");
            }
        }
        for v in versions {
            let known = self
                .stage
                .served()
                .iter()
                .any(|s| s.name == v.name && s.version == v.version);
            let modified = std::fs::metadata(v.model()).and_then(|m| m.modified()).ok();
            if known || r.refused.get(&v.version) == Some(&modified) {
                continue;
            }
            let loaded =
                tokio::task::block_in_place(|| Model::load(&v.model(), r.device, r.threads));
            let added = loaded.map_err(InferError::from).and_then(|model| {
                self.stage.add(Served {
                    name: v.name.clone(),
                    version: v.version,
                    model,
                    retired: false,
                })
            });
            match added {
                Ok(i) => {
                    let s = &self.stage.served()[i];
                    tracing::info!(model = %s.name, version = s.version, model_version = %s.model.info().version, "model version loaded while serving");
                    self.metrics.model_served(&s.name, &s.version_label());
                    r.refused.remove(&v.version);
                }
                Err(e) => {
                    tracing::error!(model = %v.name, version = v.version, error = %e, "model version refused; the versions served go on");
                    self.metrics.error(ErrorKind::Model);
                    r.refused.insert(v.version, modified);
                }
            }
        }
    }

    /// A model run that failed counts against its version.
    fn count_model_error(&mut self) {
        if let Some((model, version)) = self.stage.take_failed() {
            self.metrics.model_error(&model, &version);
        }
    }

    /// Forgets the inputs of every stream whose frames the stage dropped.
    fn prune_all(&mut self) {
        let ids: Vec<String> = self.inputs.streams.keys().cloned().collect();
        for id in ids {
            let needed = self.stage.oldest_needed(&id);
            self.inputs.prune(&id, needed);
        }
    }
}

impl Handler for InferHandler {
    type Input = MouthEvent;

    async fn handle(
        &mut self,
        input: Incoming<'_, MouthEvent>,
    ) -> Result<Vec<OutMessage>, HandleError> {
        if let MouthEvent::Chunk(c) = input.event
            && let Some(first) = c.frames.first()
        {
            self.inputs.record(&c.stream_id, first.index, input.msg);
        }
        // A new stream (or one this replica meets mid-way, after a
        // restart or a rebalance) is given the version that reads it.
        let id = input.event.stream_id();
        let new_here = match input.event {
            MouthEvent::Start(_) => true,
            MouthEvent::Chunk(_) => self.stage.model_of(id).is_none(),
            MouthEvent::End(_) => false,
        };
        if new_here && self.stage.served().len() > 1 {
            let (index, reason) = self.router.choose(id, self.stage.served()).await;
            let index = self.stage.assign(id, index);
            let s = &self.stage.served()[index];
            tracing::info!(stream_id = id, model = %s.name, version = s.version, reason = reason.as_str(), "model chosen for the stream");
            self.metrics
                .model_stream(&s.name, &s.version_label(), reason.as_str());
        }
        let m = input.msg;
        match input.event {
            MouthEvent::Start(s) => {
                self.clock
                    .saw(&s.stream_id, &m.topic, m.partition, s.started_at_ms)
            }
            MouthEvent::Chunk(c) => {
                if let Some(last) = c.frames.last() {
                    self.clock
                        .saw(&c.stream_id, &m.topic, m.partition, last.ingest_us / 1000);
                }
            }
            MouthEvent::End(e) => self.clock.forget(&e.end.stream_id),
        }
        let out = tokio::task::block_in_place(|| {
            let out = self
                .stage
                .handle(input.event, input.payload, &trace_tag(&input.msg.headers));
            self.count_model_error();
            let out = out?;
            Ok::<_, HandleError>(self.publish(out))
        });
        // Batches run for every stream: any stream's needs may have moved.
        self.prune_all();
        out
    }

    /// A stream's input is held back from its oldest chunk whose frames the
    /// stage still buffers or queues: a restarted (or newly assigned)
    /// replica reads the stream again from there and rebuilds the overlap
    /// its next window needs. Older input is committed.
    fn oldest_held(&self, topic: &str, partition: i32) -> Option<i64> {
        self.inputs.oldest(topic, partition)
    }

    async fn on_tick(&mut self) -> Result<Vec<OutMessage>, HandleError> {
        self.reload();
        self.router
            .check_guard(self.stage.served(), &self.metrics)
            .await;
        let idle = self.clock.idle(self.idle_timeout);
        for id in &idle {
            self.clock.forget(id);
        }
        for id in self.stage.drop_streams(&idle) {
            tracing::warn!(stream_id = %id, "no event within the idle timeout; stream buffer dropped");
        }
        let out = tokio::task::block_in_place(|| {
            let out = self.stage.tick();
            self.count_model_error();
            let out = out?;
            Ok::<_, HandleError>(self.publish(out))
        });
        self.prune_all();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(offset: i64) -> InMessage {
        InMessage {
            topic: "mouths".into(),
            partition: 2,
            offset,
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    #[test]
    fn input_is_held_from_the_oldest_chunk_still_needed() {
        let mut log = InputLog::default();
        // Chunks of 3 frames: 0-2 at offset 10, 3-5 at 11, 6-8 at 12.
        for (i, first) in [0u64, 3, 6].iter().enumerate() {
            log.record("a", *first, &msg(10 + i as i64));
        }
        log.record("b", 0, &msg(11));
        assert_eq!(log.oldest("mouths", 2), Some(10));
        assert_eq!(log.oldest("mouths", 1), None);
        // The stage still needs frame 4: the chunk starting at 3 and later.
        log.prune("a", Some(4));
        log.prune("b", None);
        assert_eq!(log.oldest("mouths", 2), Some(11));
        log.prune("a", Some(6));
        assert_eq!(log.oldest("mouths", 2), Some(12));
        log.prune("a", None);
        assert_eq!(log.oldest("mouths", 2), None);
    }
}
