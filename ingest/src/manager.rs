//! The set of streams one ingest process runs, each on its own thread.

use mouthmap_contracts::clock::now_ms;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mouthmap_bus::metrics::StageMetrics;
use mouthmap_contracts::{FrameEvent, SourceKind, StreamEnd, validate_stream_id};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::publish::Outgoing;
use crate::source::Source;
use crate::stream::{Emitter, StopMode, StreamControl, StreamSettings, run_stream};

/// How many ended streams the manager remembers for `list`.
const RECENT: usize = 100;

/// Why a stream could not be started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartError {
    #[error("{0}")]
    BadId(String),
    #[error("stream {0:?} is already running")]
    Duplicate(String),
    #[error("ingest is shutting down")]
    ShuttingDown,
    #[error(
        "ingest runs {max} streams already, its limit (--max-streams); try again later or on another replica"
    )]
    TooMany { max: usize },
    #[error("cannot start a thread for the stream: {0}")]
    Spawn(String),
}

/// A stream as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub id: String,
    pub source: String,
    pub kind: SourceKind,
    pub started_at_ms: i64,
    pub frames: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<StreamEnd>,
}

struct Entry {
    status: StreamStatus,
    control: Arc<StreamControl>,
    published: bool,
}

/// How one stream runs, beside the process's [`StreamSettings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Pace a file in real time, or not (else the process's setting).
    pub realtime: Option<bool>,
    /// The stream's end is announced by its publisher: see
    /// [`StreamSettings::published`].
    pub published: bool,
    /// Go on from where an earlier ingest process left the stream.
    pub resume: Option<crate::stream::ResumePoint>,
}

struct Inner {
    active: Mutex<HashMap<String, Entry>>,
    ended: Mutex<VecDeque<StreamStatus>>,
    count: watch::Sender<usize>,
    out: Mutex<Option<mpsc::Sender<Outgoing>>>,
    settings: StreamSettings,
    metrics: StageMetrics,
    /// Streams run at once at most (one OS thread each).
    max_streams: usize,
}

/// Starts, stops and lists streams. Cheap to clone.
#[derive(Clone)]
pub struct StreamManager {
    inner: Arc<Inner>,
}

struct ChannelEmitter {
    tx: mpsc::Sender<Outgoing>,
    playing: Option<oneshot::Sender<()>>,
}

impl Emitter for ChannelEmitter {
    fn emit(&mut self, event: FrameEvent, payload: Vec<u8>, span: tracing::Span) -> bool {
        self.tx
            .blocking_send(Outgoing {
                event,
                payload,
                span,
                created: Instant::now(),
            })
            .is_ok()
    }

    fn playing(&mut self) {
        if let Some(tx) = self.playing.take() {
            let _ = tx.send(());
        }
    }
}

impl StreamManager {
    /// A manager that runs at most `max_streams` streams at once.
    pub fn new(
        settings: StreamSettings,
        out: mpsc::Sender<Outgoing>,
        metrics: StageMetrics,
        max_streams: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                active: Mutex::new(HashMap::new()),
                ended: Mutex::new(VecDeque::new()),
                count: watch::channel(0).0,
                out: Mutex::new(Some(out)),
                settings,
                metrics,
                max_streams: max_streams.max(1),
            }),
        }
    }

    /// Starts a stream on its own thread. The receiver fires once its
    /// pipeline is playing (or the stream ended before that).
    pub fn start(
        &self,
        id: Option<String>,
        source: Source,
        options: StartOptions,
    ) -> Result<(StreamStatus, oneshot::Receiver<()>), StartError> {
        let id = id.unwrap_or_else(|| source.default_stream_id());
        validate_stream_id(&id).map_err(|e| StartError::BadId(e.to_string()))?;
        let tx = self
            .inner
            .out
            .lock()
            .expect("out lock")
            .clone()
            .ok_or(StartError::ShuttingDown)?;
        let mut settings = self.inner.settings;
        if let Some(rt) = options.realtime {
            settings.capture.realtime = rt;
        }
        settings.published = options.published;
        settings.resume = options.resume;
        let control = Arc::new(StreamControl::default());
        let status = StreamStatus {
            id: id.clone(),
            source: source.redacted(),
            kind: source.kind,
            started_at_ms: now_ms(),
            frames: 0,
            end: None,
        };
        {
            let mut active = self.inner.active.lock().expect("active lock");
            if active.contains_key(&id) {
                return Err(StartError::Duplicate(id));
            }
            if active.len() >= self.inner.max_streams {
                return Err(StartError::TooMany {
                    max: self.inner.max_streams,
                });
            }
            active.insert(
                id.clone(),
                Entry {
                    status: status.clone(),
                    control: control.clone(),
                    published: options.published,
                },
            );
            self.changed(active.len());
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let inner = self.inner.clone();
        let thread_id = id.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ingest-{}", id.chars().take(8).collect::<String>()))
            .spawn(move || {
                let mut emitter = ChannelEmitter {
                    tx,
                    playing: Some(ready_tx),
                };
                let end = run_stream(&thread_id, &source, &settings, &control, &mut emitter);
                if end.error.is_some() {
                    inner.metrics.error(mouthmap_bus::ErrorKind::Source);
                }
                let mut active = inner.active.lock().expect("active lock");
                if let Some(entry) = active.remove(&thread_id) {
                    let mut status = entry.status;
                    status.frames = end.frames;
                    status.end = Some(end);
                    let mut ended = inner.ended.lock().expect("ended lock");
                    ended.push_back(status);
                    while ended.len() > RECENT {
                        ended.pop_front();
                    }
                }
                inner.metrics.set_active(active.len() as i64);
                inner.count.send_replace(active.len());
            });
        if let Err(e) = spawned {
            // Not registered after all: nothing waits for a thread that never ran.
            let mut active = self.inner.active.lock().expect("active lock");
            active.remove(&id);
            self.changed(active.len());
            return Err(StartError::Spawn(e.to_string()));
        }
        Ok((status, ready_rx))
    }

    fn changed(&self, n: usize) {
        self.inner.metrics.set_active(n as i64);
        self.inner.count.send_replace(n);
    }

    /// Asks a stream to stop. False when no such stream runs.
    pub fn stop(&self, id: &str, mode: StopMode) -> bool {
        match self.inner.active.lock().expect("active lock").get(id) {
            Some(e) => {
                e.control.request_stop(mode);
                true
            }
            None => false,
        }
    }

    /// A publisher published under `id` again. When a published stream (one
    /// whose end its publisher announces) runs under that id and was not
    /// asked to stop, it is the same stream, reconnected: the stream's pull
    /// tries again at once, and this returns true.
    pub fn published_again(&self, id: &str) -> bool {
        let active = self.inner.active.lock().expect("active lock");
        match active.get(id) {
            Some(e) if e.published && e.control.stop_mode().is_none() => {
                e.control.source_back();
                true
            }
            _ => false,
        }
    }

    /// Running streams, then the most recent ended ones (newest first).
    pub fn list(&self) -> (Vec<StreamStatus>, Vec<StreamStatus>) {
        let mut active: Vec<StreamStatus> = self
            .inner
            .active
            .lock()
            .expect("active lock")
            .values()
            .map(|e| StreamStatus {
                frames: e.control.frames(),
                ..e.status.clone()
            })
            .collect();
        active.sort_by(|a, b| a.id.cmp(&b.id));
        let ended = self
            .inner
            .ended
            .lock()
            .expect("ended lock")
            .iter()
            .rev()
            .cloned()
            .collect();
        (active, ended)
    }

    /// The status of one stream, running or recently ended.
    pub fn get(&self, id: &str) -> Option<StreamStatus> {
        let (active, ended) = self.list();
        active.into_iter().chain(ended).find(|s| s.id == id)
    }

    /// Waits until no stream runs.
    pub async fn wait_idle(&self) {
        let mut rx = self.inner.count.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Stops every stream with `mode`, refuses new ones, waits for all to end
    /// and releases the channel so the publisher can finish.
    pub async fn shutdown(&self, mode: StopMode) {
        self.inner.out.lock().expect("out lock").take();
        for e in self.inner.active.lock().expect("active lock").values() {
            e.control.request_stop(mode);
        }
        self.wait_idle().await;
    }
}
