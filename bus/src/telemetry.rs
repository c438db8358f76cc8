//! Logs, traces and trace-context propagation.
//!
//! * Logs go to stderr through `tracing`, as text or JSON lines.
//! * Every process runs an OpenTelemetry tracer, so every span has a trace id
//!   and every produced message a `traceparent` header. Spans are exported
//!   over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, for example
//!   `http://localhost:4318` for Jaeger's OTLP receiver.
//! * [`inject`] writes a span's context into Kafka headers; [`extract`] reads
//!   it back on the consuming side, so one chunk's trace crosses services.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Errors setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("could not build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Flushes and shuts the tracer down when dropped. Keep it alive in `main`
/// and drop it outside any async runtime.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.exporting
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("telemetry: flushing spans failed: {e}");
        }
        let _ = self.provider.shutdown();
    }
}

/// True when the environment names an OTLP endpoint.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Installs the global logger and tracer for `service` (for example
/// `mouthmap-ingest`). `filter` uses `RUST_LOG` syntax (`info`,
/// `mouthmap=debug,rdkafka=warn`).
pub fn init(
    service: &str,
    filter: &str,
    format: LogFormat,
) -> Result<TelemetryGuard, TelemetryError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter {
        filter: filter.to_string(),
        reason: e.to_string(),
    })?;
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let exporting = otlp_configured();
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mouthmap"))
        .with_filter(EnvFilter::new("info"));
    let fmt_layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt_layer.with_filter(env_filter))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard {
        provider,
        exporting,
    })
}

struct VecInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for VecInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.push((key.to_string(), value));
        }
    }
}

/// The W3C trace-context headers (`traceparent`, and `tracestate` when set)
/// of `span`. Empty when the span is disabled.
pub fn inject(span: &tracing::Span) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut VecInjector(&mut out));
    }
    out
}

struct HeaderExtractor<'a>(&'a [(String, Vec<u8>)]);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The remote parent context carried by message headers (empty when absent).
pub fn extract(headers: &[(String, Vec<u8>)]) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes `span` a child of the trace carried by `headers`, if any.
pub fn continue_trace(span: &tracing::Span, headers: &[(String, Vec<u8>)]) {
    let cx = extract(headers);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The 32-hex-digit trace id inside a `traceparent` value.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_a_w3c_parent_and_finds_its_trace_id() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = vec![("traceparent".to_string(), tp.as_bytes().to_vec())];
        let cx = extract(&headers);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace_id_of(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id_of("garbage"), None);
        assert!(!extract(&[]).span().span_context().is_valid());
    }
}
