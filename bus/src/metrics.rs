//! Prometheus metrics with the same names in every stage, labelled by stage.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mouthmap_events_received_total` | counter | `stage`, `topic` |
//! | `mouthmap_events_sent_total` | counter | `stage` |
//! | `mouthmap_errors_total` | counter | `stage`, `kind` ([`ErrorKind`]: `contract`, `content`, `model`, ...) |
//! | `mouthmap_processing_seconds` | histogram | `stage` |
//! | `mouthmap_active_streams` | gauge | `stage` |
//! | `mouthmap_batch_seconds` | histogram | `stage` (stages that batch: one run of a batch) |
//! | `mouthmap_batch_size` | histogram | `stage` (items in one batch run) |
//! | `mouthmap_feature_lookup_seconds` | histogram | `stage` (one feature-store lookup, cache included, deadline included) |
//! | `mouthmap_frames_lost_total` | counter | `stage` (frames whose message could not be delivered after every retry) |
//! | `mouthmap_dead_letters_total` | counter | `stage`, `kind` (messages sent to the dead-letter topic) |
//! | `mouthmap_transcript_latency_seconds` | histogram | `stage`, `kind` (`partial`, `final`: from the ingest of the newest frame a transcript covers to its publication) |
//! | `mouthmap_consumer_lag` | gauge | `stage`, `topic`, `partition` (messages behind the partition's end, for the partitions this replica holds; from librdkafka's statistics every 5 s) |
//! | `mouthmap_model_windows_total` | counter | `stage`, `model`, `version` (windows a model version read) |
//! | `mouthmap_model_batch_seconds` | histogram | `stage`, `model`, `version` (one batch run of that version) |
//! | `mouthmap_model_batch_size` | histogram | `stage`, `model`, `version` (windows in one batch run) |
//! | `mouthmap_model_errors_total` | counter | `stage`, `model`, `version` (runs of that version that failed) |
//! | `mouthmap_model_transcripts_total` | counter | `stage`, `model`, `version`, `kind` (transcripts of streams that version read) |
//! | `mouthmap_model_rollbacks_total` | counter | `stage`, `model`, `version` (automatic rollbacks of that canary version) |
//! | `mouthmap_shadow_word_error_rate` | histogram | `stage`, `model`, `version` (a shadow version's final against the live final of the same stream; 0 is full agreement) |
//! | `mouthmap_model_streams_total` | counter | `stage`, `model`, `version`, `reason` (streams given to that version: `feature`, `canary`, `live`, `default`) |
//!
//! The `mouthmap_model_*` families compare model versions served side by
//! side (the dashboard's "Models" row); `version` is the version string in
//! the model's metadata.
//!
//! `mouthmap_processing_seconds` is always per event, observed by the
//! consume loop; a stage that batches reports its batch runs apart, so the two
//! never mix.

use std::sync::OnceLock;
use std::time::Duration;

use axum::{Router, routing::get};

use crate::error::ErrorKind;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

struct Families {
    registry: Registry,
    received: IntCounterVec,
    sent: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    active: IntGaugeVec,
    batch_seconds: HistogramVec,
    batch_size: HistogramVec,
    lookup: HistogramVec,
    frames_lost: IntCounterVec,
    dead_letters: IntCounterVec,
    transcript_latency: HistogramVec,
    consumer_lag: IntGaugeVec,
    model_windows: IntCounterVec,
    model_batch_seconds: HistogramVec,
    model_batch_size: HistogramVec,
    model_errors: IntCounterVec,
    model_transcripts: IntCounterVec,
    model_streams: IntCounterVec,
    model_rollbacks: IntCounterVec,
    shadow_wer: HistogramVec,
}

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(|| {
        let registry = Registry::new();
        let received = IntCounterVec::new(
            Opts::new(
                "mouthmap_events_received_total",
                "Events received, by stage and topic",
            ),
            &["stage", "topic"],
        )
        .expect("valid metric");
        let sent = IntCounterVec::new(
            Opts::new(
                "mouthmap_events_sent_total",
                "Events sent downstream, by stage",
            ),
            &["stage"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new("mouthmap_errors_total", "Errors, by stage and kind"),
            &["stage", "kind"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "mouthmap_processing_seconds",
                "Time to process one event, by stage",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            &["stage"],
        )
        .expect("valid metric");
        let active = IntGaugeVec::new(
            Opts::new("mouthmap_active_streams", "Streams in progress, by stage"),
            &["stage"],
        )
        .expect("valid metric");
        let batch_seconds = HistogramVec::new(
            HistogramOpts::new("mouthmap_batch_seconds", "Time of one batch run, by stage")
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            &["stage"],
        )
        .expect("valid metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new("mouthmap_batch_size", "Items in one batch run, by stage")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 9).expect("valid buckets")),
            &["stage"],
        )
        .expect("valid metric");
        let lookup = HistogramVec::new(
            HistogramOpts::new(
                "mouthmap_feature_lookup_seconds",
                "Time of one feature-store lookup (cache and deadline included), by stage",
            )
            .buckets(prometheus::exponential_buckets(0.000125, 2.0, 14).expect("valid buckets")),
            &["stage"],
        )
        .expect("valid metric");
        let frames_lost = IntCounterVec::new(
            Opts::new(
                "mouthmap_frames_lost_total",
                "Frames whose message could not be delivered after every retry, by stage",
            ),
            &["stage"],
        )
        .expect("valid metric");
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "mouthmap_dead_letters_total",
                "Messages sent to the dead-letter topic, by stage and error kind",
            ),
            &["stage", "kind"],
        )
        .expect("valid metric");
        let transcript_latency = HistogramVec::new(
            HistogramOpts::new(
                "mouthmap_transcript_latency_seconds",
                "From the ingest of the newest frame a transcript covers to its publication, by kind",
            )
            .buckets(prometheus::exponential_buckets(0.05, 2.0, 10).expect("valid buckets")),
            &["stage", "kind"],
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "mouthmap_consumer_lag",
                "Messages behind the end of each partition this replica holds",
            ),
            &["stage", "topic", "partition"],
        )
        .expect("valid metric");
        let by_model = ["stage", "model", "version"];
        let model_windows = IntCounterVec::new(
            Opts::new(
                "mouthmap_model_windows_total",
                "Windows a model version read, by stage, model and version",
            ),
            &by_model,
        )
        .expect("valid metric");
        let model_batch_seconds = HistogramVec::new(
            HistogramOpts::new(
                "mouthmap_model_batch_seconds",
                "Time of one batch run of a model version",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            &by_model,
        )
        .expect("valid metric");
        let model_batch_size = HistogramVec::new(
            HistogramOpts::new(
                "mouthmap_model_batch_size",
                "Windows in one batch run of a model version",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 9).expect("valid buckets")),
            &by_model,
        )
        .expect("valid metric");
        let model_errors = IntCounterVec::new(
            Opts::new(
                "mouthmap_model_errors_total",
                "Runs of a model version that failed",
            ),
            &by_model,
        )
        .expect("valid metric");
        let model_transcripts = IntCounterVec::new(
            Opts::new(
                "mouthmap_model_transcripts_total",
                "Transcripts of streams a model version read, by kind",
            ),
            &["stage", "model", "version", "kind"],
        )
        .expect("valid metric");
        let model_streams = IntCounterVec::new(
            Opts::new(
                "mouthmap_model_streams_total",
                "Streams given to a model version, by why (feature, canary, live, default)",
            ),
            &["stage", "model", "version", "reason"],
        )
        .expect("valid metric");
        let model_rollbacks = IntCounterVec::new(
            Opts::new(
                "mouthmap_model_rollbacks_total",
                "Automatic rollbacks of a canary version",
            ),
            &by_model,
        )
        .expect("valid metric");
        for c in [
            &model_rollbacks,
            &model_windows,
            &model_errors,
            &model_transcripts,
            &model_streams,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        let shadow_wer = HistogramVec::new(
            HistogramOpts::new(
                "mouthmap_shadow_word_error_rate",
                "A shadow version's final against the live final of the same stream (word error rate; 0: the same words)",
            )
            .buckets(vec![0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]),
            &by_model,
        )
        .expect("valid metric");
        for h in [&model_batch_seconds, &model_batch_size, &shadow_wer] {
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(consumer_lag.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(transcript_latency.clone()))
            .expect("unique metric");
        for c in [&received, &sent, &errors, &frames_lost, &dead_letters] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        for h in [&latency, &batch_seconds, &batch_size, &lookup] {
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(active.clone()))
            .expect("unique metric");
        Families {
            registry,
            received,
            sent,
            errors,
            latency,
            active,
            batch_seconds,
            batch_size,
            lookup,
            frames_lost,
            dead_letters,
            transcript_latency,
            consumer_lag,
            model_windows,
            model_batch_seconds,
            model_batch_size,
            model_errors,
            model_transcripts,
            model_streams,
            model_rollbacks,
            shadow_wer,
        }
    })
}

/// The metrics handle of one stage.
#[derive(Clone, Debug)]
pub struct StageMetrics {
    stage: String,
}

impl StageMetrics {
    pub fn new(stage: impl Into<String>) -> Self {
        let stage = stage.into();
        // Touch the families so the stage shows up with zeros from the
        // start: a dashboard or an alert that selects an error kind finds
        // a series at 0 instead of none.
        let f = families();
        f.sent.with_label_values(&[&stage]);
        f.active.with_label_values(&[&stage]);
        f.frames_lost.with_label_values(&[&stage]);
        for kind in ErrorKind::ALL {
            f.errors.with_label_values(&[&stage, kind.as_str()]);
            f.dead_letters.with_label_values(&[&stage, kind.as_str()]);
        }
        Self { stage }
    }

    pub fn received(&self, topic: &str) {
        families()
            .received
            .with_label_values(&[&self.stage, topic])
            .inc();
    }

    pub fn sent(&self) {
        self.sent_n(1);
    }

    pub fn sent_n(&self, n: u64) {
        families().sent.with_label_values(&[&self.stage]).inc_by(n);
    }

    pub fn error(&self, kind: ErrorKind) {
        families()
            .errors
            .with_label_values(&[&self.stage, kind.as_str()])
            .inc();
    }

    pub fn observe(&self, elapsed: Duration) {
        families()
            .latency
            .with_label_values(&[&self.stage])
            .observe(elapsed.as_secs_f64());
    }

    /// One batch run of `size` items that took `elapsed` (stages that batch).
    pub fn observe_batch(&self, elapsed: Duration, size: usize) {
        let f = families();
        f.batch_seconds
            .with_label_values(&[&self.stage])
            .observe(elapsed.as_secs_f64());
        f.batch_size
            .with_label_values(&[&self.stage])
            .observe(size as f64);
    }

    /// A model version is served: its series start at zero, so a
    /// dashboard comparing versions sees each from the start.
    pub fn model_served(&self, model: &str, version: &str) {
        let f = families();
        f.model_windows
            .with_label_values(&[&self.stage, model, version]);
        f.model_errors
            .with_label_values(&[&self.stage, model, version]);
    }

    /// One batch run of `size` windows by a model version, that took `elapsed`.
    pub fn observe_model_batch(&self, model: &str, version: &str, elapsed: Duration, size: usize) {
        let f = families();
        let labels = [self.stage.as_str(), model, version];
        f.model_windows
            .with_label_values(&labels)
            .inc_by(size as u64);
        f.model_batch_seconds
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
        f.model_batch_size
            .with_label_values(&labels)
            .observe(size as f64);
    }

    /// A run of a model version failed.
    pub fn model_error(&self, model: &str, version: &str) {
        families()
            .model_errors
            .with_label_values(&[&self.stage, model, version])
            .inc();
    }

    /// A shadow version's final compared with the live one: its word error rate.
    pub fn observe_shadow(&self, model: &str, version: &str, wer: f64) {
        families()
            .shadow_wer
            .with_label_values(&[&self.stage, model, version])
            .observe(wer);
    }

    /// The canary `version` of `model` was rolled back automatically.
    pub fn model_rollback(&self, model: &str, version: &str) {
        families()
            .model_rollbacks
            .with_label_values(&[&self.stage, model, version])
            .inc();
    }

    /// A stream was given to a model version, for `reason`.
    pub fn model_stream(&self, model: &str, version: &str, reason: &str) {
        families()
            .model_streams
            .with_label_values(&[&self.stage, model, version, reason])
            .inc();
    }

    /// A transcript (`partial` or `final`) of a stream a model version read.
    pub fn model_transcript(&self, model: &str, version: &str, kind: &str) {
        families()
            .model_transcripts
            .with_label_values(&[&self.stage, model, version, kind])
            .inc();
    }

    /// One feature-store lookup that took `elapsed`, answered or not.
    pub fn observe_lookup(&self, elapsed: Duration) {
        families()
            .lookup
            .with_label_values(&[&self.stage])
            .observe(elapsed.as_secs_f64());
    }

    /// Frames that could not be delivered after every retry.
    pub fn frames_lost(&self, n: u64) {
        families()
            .frames_lost
            .with_label_values(&[&self.stage])
            .inc_by(n);
    }

    /// A message sent to the dead-letter topic, for an error of `kind`.
    pub fn dead_letter(&self, kind: ErrorKind) {
        families()
            .dead_letters
            .with_label_values(&[&self.stage, kind.as_str()])
            .inc();
    }

    /// A transcript of `kind` (`partial`, `final`) published `latency`
    /// after the ingest of the newest frame it covers.
    pub fn observe_transcript_latency(&self, kind: &str, latency: Duration) {
        families()
            .transcript_latency
            .with_label_values(&[&self.stage, kind])
            .observe(latency.as_secs_f64());
    }

    pub fn set_active(&self, n: i64) {
        families().active.with_label_values(&[&self.stage]).set(n);
    }
}

/// The lag of one partition a replica of `stage` holds; None: it holds it
/// no more (its series goes).
pub fn set_consumer_lag(stage: &str, topic: &str, partition: i32, lag: Option<i64>) {
    let f = families();
    let p = partition.to_string();
    match lag {
        Some(lag) => f
            .consumer_lag
            .with_label_values(&[stage, topic, &p])
            .set(lag),
        None => {
            let _ = f.consumer_lag.remove_label_values(&[stage, topic, &p]);
        }
    }
}

/// All metrics in the Prometheus text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families().registry.gather(), &mut buf)
        .expect("text encoding cannot fail");
    String::from_utf8(buf).expect("prometheus text is UTF-8")
}

/// A router serving `GET /metrics`, to merge into a service's own API.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/metrics",
        get(|| async { ([("content-type", "text/plain; version=0.0.4")], render()) }),
    )
}

/// Serves `/metrics`, `/healthz` and `/readyz` on a bound listener until
/// `shutdown` fires (for stages without an API of their own). Bind first, so a taken port is a startup error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router::<()>().merge(crate::health::router()))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_text_format() {
        let m = StageMetrics::new("unit-test");
        m.received("frames");
        m.sent_n(3);
        m.error(ErrorKind::Contract);
        m.observe(Duration::from_millis(3));
        let text = render();
        assert!(
            text.contains("mouthmap_events_received_total{stage=\"unit-test\",topic=\"frames\"} 1")
        );
        assert!(text.contains("mouthmap_events_sent_total{stage=\"unit-test\"} 3"));
        assert!(text.contains("mouthmap_errors_total{kind=\"contract\",stage=\"unit-test\"} 1"));
        assert!(text.contains("mouthmap_processing_seconds_count{stage=\"unit-test\"} 1"));
    }

    #[test]
    fn model_versions_are_counted_apart() {
        let m = StageMetrics::new("unit-test-models");
        m.model_served("lipnet", "2.0.0");
        m.observe_model_batch("lipnet", "1.0.0", Duration::from_millis(30), 4);
        m.observe_model_batch("lipnet", "1.0.0", Duration::from_millis(30), 2);
        m.model_error("lipnet", "1.0.0");
        m.model_transcript("lipnet", "1.0.0", "final");
        let text = render();
        let l = |v: &str| format!("model=\"lipnet\",stage=\"unit-test-models\",version=\"{v}\"");
        for line in [
            format!("mouthmap_model_windows_total{{{}}} 6", l("1.0.0")),
            format!("mouthmap_model_windows_total{{{}}} 0", l("2.0.0")),
            format!("mouthmap_model_errors_total{{{}}} 0", l("2.0.0")),
            format!("mouthmap_model_errors_total{{{}}} 1", l("1.0.0")),
            format!("mouthmap_model_batch_seconds_count{{{}}} 2", l("1.0.0")),
            format!("mouthmap_model_batch_size_sum{{{}}} 6", l("1.0.0")),
            "mouthmap_model_transcripts_total{kind=\"final\",model=\"lipnet\",stage=\"unit-test-models\",version=\"1.0.0\"} 1".to_string(),
        ] {
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn batches_are_counted_apart_from_events() {
        let m = StageMetrics::new("unit-test-batch");
        m.observe(Duration::from_millis(1));
        m.observe_batch(Duration::from_millis(40), 6);
        let text = render();
        assert!(text.contains("mouthmap_processing_seconds_count{stage=\"unit-test-batch\"} 1"));
        assert!(text.contains("mouthmap_batch_seconds_count{stage=\"unit-test-batch\"} 1"));
        assert!(text.contains("mouthmap_batch_size_sum{stage=\"unit-test-batch\"} 6"));
        assert!(text.contains("mouthmap_batch_size_bucket{stage=\"unit-test-batch\",le=\"4\"} 0"));
        assert!(text.contains("mouthmap_batch_size_bucket{stage=\"unit-test-batch\",le=\"8\"} 1"));
    }
}
