//! Traces of CRI calls, exported over OTLP/gRPC (docs/operations.md).
//!
//! Each call's span (server.rs) becomes an OpenTelemetry span with the pod
//! and container ids as attributes. When the call carries a W3C
//! `traceparent` (kubelet sends one when its own tracing is on: KEP-2831,
//! kubernetes/enhancements keps/sig-instrumentation/2831-kubelet-tracing,
//! puts an otelgrpc interceptor on its CRI client), that span is its parent, so a
//! pod start reads as one trace from kubelet through pierd. With no
//! endpoint configured nothing of this is installed.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{TracingConfig, TracingProtocol};
use crate::error::StartError;

/// The exporter and its background batcher; flushed on [`Tracer::shutdown`].
pub struct Tracer {
    provider: SdkTracerProvider,
}

impl Tracer {
    /// Builds the exporter for `config`, or `None` when tracing is off. Must
    /// run inside the Tokio runtime that will carry the exports.
    pub fn start(config: &TracingConfig) -> Result<Option<Self>, StartError> {
        if config.endpoint.is_empty() {
            return Ok(None);
        }
        let exporter = match config.protocol {
            TracingProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&config.endpoint)
                .build()
                .map_err(|e| StartError::Tracing(format!("{}: {e}", config.endpoint)))?,
        };
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_rate)));
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("pierd")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        Ok(Some(Self { provider }))
    }

    /// The layer that turns tracing spans into exported spans.
    pub fn layer(
        &self,
    ) -> impl tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync {
        let tracer = self.provider.tracer("pierd");
        tracing_opentelemetry::layer().with_tracer(tracer)
    }

    /// Sends what is still batched; spans of calls still running are lost.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing traces at shutdown");
        }
    }
}

/// Makes the trace context in `headers` (a `traceparent`, and `tracestate`
/// with it) the parent of `span`. Headers without one leave it a root.
pub fn adopt_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    if let Err(e) = span.set_parent(context) {
        tracing::debug!(error = ?e, "cannot adopt the caller's trace");
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
