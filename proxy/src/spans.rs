//! Traces: with `[tracing] otlp` set, a span per request (server kind) and, for a request sent
//! upstream, a child span of that exchange (client kind), exported in batches over OTLP/HTTP
//! (protobuf) by the OpenTelemetry SDK; the upstream is sent a `traceparent` naming the child
//! span, so the server's own spans hang below it. Without `otlp`, nothing here runs on the
//! request path (one atomic load) and a client's `traceparent` passes through unchanged.
//!
//! The spans are built once the request is answered, from what its access-log record holds
//! (`served::Served`), with explicit start and end times: every fact a span carries (route,
//! MCP method, cache outcome and tier, upstream, attempts, prefetch) is known only then, and
//! the request path neither opens nor enters a `tracing` span (`tracing-opentelemetry` would
//! do both on every request, and carry a span across Pingora's phases).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use mcp_edge_policies::config::TracingConfig;
use mcp_edge_policies::trace_context::TraceParent;
use opentelemetry::trace::{
    Span, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use mcp_edge_policies::method::Method;

use crate::served::Served;

/// Spans waiting for export; past this, new ones are dropped (memory stays bounded whatever
/// the collector does).
const MAX_QUEUED: usize = 8_192;
/// Longest wait for the collector per batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter in use, and what it was made from.
struct Exporting {
    config: TracingConfig,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static EXPORTING: ArcSwapOption<Exporting> = ArcSwapOption::const_empty();
/// Whether spans are made: read on every request, so a plain flag beside `EXPORTING`.
static ON: AtomicBool = AtomicBool::new(false);
/// Serialises reconfigurations (start, reloads).
static CONFIGURING: Mutex<()> = Mutex::new(());

/// Exports spans as `config` says from now on (at start and on each reload): an unchanged
/// configuration keeps its exporter; a replaced one is flushed and shut down in the background.
pub fn configure(config: &TracingConfig) -> Result<(), String> {
    let _one_at_a_time = CONFIGURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Unchanged: the same exporter's configuration, or none wanted and none running.
    let wanted = config.otlp.is_some().then_some(config);
    if EXPORTING.load().as_ref().map(|e| &e.config) == wanted {
        return Ok(());
    }
    let exporting = match &config.otlp {
        Some(url) => Some(Arc::new(exporter(config, url)?)),
        None => None,
    };
    ON.store(exporting.is_some(), Ordering::Relaxed);
    if let Some(old) = EXPORTING.swap(exporting) {
        retire(old);
    }
    Ok(())
}

/// Flushes what is queued (at a clean stop).
pub fn flush() {
    if let Some(exporting) = EXPORTING.load_full() {
        let _ = exporting.provider.force_flush();
    }
}

fn exporter(config: &TracingConfig, url: &str) -> Result<Exporting, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    // Built on a thread of its own: the blocking HTTP client runs its own small runtime,
    // which may be neither made nor dropped inside one of Pingora's. No redirects: spans go
    // to the collector configured, not wherever it points.
    let client = std::thread::spawn(move || {
        reqwest::blocking::Client::builder().timeout(EXPORT_TIMEOUT).redirect(reqwest::redirect::Policy::none()).build()
    })
    .join()
    .map_err(|_| "the OTLP HTTP client could not be made".to_string())?
    .map_err(|e| format!("the OTLP HTTP client could not be made: {e}"))?;
    let client = BoundedClient(client);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("tracing.otlp {url:?}: {e}"))?;
    let batches = BatchConfigBuilder::default().with_max_queue_size(MAX_QUEUED).build();
    let exporter = Counted { inner: exporter, url: url.to_string(), failing: AtomicBool::new(false) };
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batches).build();
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build();
    let tracer = provider.tracer("mcp-edge");
    Ok(Exporting { config: config.clone(), provider, tracer })
}

/// The OTLP exporter, counting what it sends (`mcp_spans_total`) and saying when the
/// collector starts failing and when it is back (one line each way, not one per batch).
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    url: String,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        let metrics = &crate::metrics::METRICS.spans;
        match &result {
            Ok(()) => {
                metrics.with_label_values(&["exported"]).inc_by(spans);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(collector = %self.url, "the OTLP collector takes spans again");
                }
            }
            Err(e) => {
                metrics.with_label_values(&["failed"]).inc_by(spans);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(collector = %self.url, error = %e, "spans could not be exported; they are dropped until the OTLP collector takes them");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The collector's answers are read up to [`MAX_ANSWER`] bytes (an OTLP answer is a few bytes):
/// the SDK's own client reads a body whole, so a collector could make mcp-edge hold gigabytes.
#[derive(Debug)]
struct BoundedClient(reqwest::blocking::Client);

/// The most of a collector's answer read.
const MAX_ANSWER: u64 = 64 * 1024;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BoundedClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        use std::io::Read;
        let response = self.0.execute(request.try_into()?)?.error_for_status()?;
        let status = response.status();
        let mut body = Vec::new();
        response.take(MAX_ANSWER).read_to_end(&mut body)?;
        Ok(http::Response::builder().status(status).body(bytes::Bytes::from(body))?)
    }
}

/// Shuts a replaced exporter down (sending what it holds) on a thread of its own, off the
/// reload's way and outside any runtime.
fn retire(old: Arc<Exporting>) {
    std::thread::spawn(move || {
        let _ = old.provider.shutdown();
    });
}

/// A request's place in a trace (made only while spans are exported).
#[derive(Debug)]
pub struct Trace {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// The span of its exchange with the upstream, named in the upstream's `traceparent`.
    upstream_span_id: [u8; 8],
    /// The client's span, from its `traceparent`.
    parent: Option<[u8; 8]>,
    sampled: bool,
}

impl Trace {
    /// The trace of a request that sent `traceparent` (if any): a child of the client's span,
    /// sampled as the client says, or a new trace, sampled by `sample_ratio`. `None` while no
    /// spans are exported.
    pub fn begin(traceparent: Option<&[u8]>) -> Option<Box<Trace>> {
        if !ON.load(Ordering::Relaxed) {
            return None;
        }
        let span_id = span_id();
        let upstream_span_id = span_id_other_than(span_id);
        Some(Box::new(match traceparent.and_then(TraceParent::parse) {
            Some(client) => Trace {
                trace_id: client.trace_id,
                span_id,
                upstream_span_id,
                parent: Some(client.parent_id),
                sampled: client.sampled(),
            },
            None => {
                let trace_id = trace_id();
                let ratio = EXPORTING.load().as_ref().map_or(0.0, |e| e.config.sample_ratio);
                let sampled = sampled_at(&trace_id, ratio);
                Trace { trace_id, span_id, upstream_span_id, parent: None, sampled }
            }
        }))
    }

    /// The client's trace context was not taken (none, malformed or sent twice): a new trace,
    /// whose upstream must not be sent the client's `tracestate` (W3C: it belongs to the
    /// trace it came with).
    pub fn is_new(&self) -> bool {
        self.parent.is_none()
    }

    /// The `traceparent` sent upstream: this trace, the upstream exchange's span as parent.
    pub fn upstream_traceparent(&self) -> [u8; mcp_edge_policies::trace_context::LENGTH] {
        TraceParent { trace_id: self.trace_id, parent_id: self.upstream_span_id, flags: u8::from(self.sampled) }
            .render()
    }
}

/// Whether a new trace is sampled at `ratio`: by its id's low bits (as OpenTelemetry's
/// trace-id-ratio sampler does), so every node sampling at one ratio agrees.
fn sampled_at(trace_id: &[u8; 16], ratio: f64) -> bool {
    let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes")) >> 8;
    (low as f64) < ratio * (1u64 << 56) as f64
}

/// Ids unique within a process and across processes (a random start, then a bijective mix of
/// a counter), made without a system call.
fn next_id() -> u64 {
    static START: LazyLock<u64> = LazyLock::new(|| {
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        u64::from_le_bytes(seed)
    });
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    crate::request_id::mix(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(*START))
}

fn span_id() -> [u8; 8] {
    span_id_other_than([0; 8])
}

/// A span id, never zero (invalid) nor `other`.
fn span_id_other_than(other: [u8; 8]) -> [u8; 8] {
    loop {
        let id = next_id().to_be_bytes();
        if id != [0; 8] && id != other {
            return id;
        }
    }
}

fn trace_id() -> [u8; 16] {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&next_id().to_be_bytes());
    id[8..].copy_from_slice(&span_id());
    id
}

/// Exports the spans of an answered, sampled request, `elapsed` after it started.
pub fn export(served: &Served<'_>, trace: &Trace, elapsed: Duration) {
    if !trace.sampled {
        return;
    }
    let exporting = EXPORTING.load();
    let Some(exporting) = exporting.as_ref() else { return };
    let ended = SystemTime::now();
    let started = ended.checked_sub(elapsed).unwrap_or(ended);
    let trace_id = TraceId::from_bytes(trace.trace_id);
    let parent = match trace.parent {
        Some(parent) => {
            let client =
                SpanContext::new(trace_id, SpanId::from_bytes(parent), TraceFlags::SAMPLED, true, TraceState::NONE);
            Context::new().with_remote_span_context(client)
        }
        None => Context::new(),
    };
    let failed = served.status == 0 || served.status >= 500 || (served.error.is_some() && served.status >= 400);
    // Only what mcp-edge chose goes into the status: an error's text may quote what the client
    // sent (a URI, a tool name, a path), which the collector is not to be sent.
    let status = if failed { Status::error(format!("HTTP {}", served.status)) } else { Status::Unset };
    let asked = &served.asked;
    // A method outside MCP's fixed set is `other`, as in the metrics.
    let method = served.mcp_method.map(|method| Method::label(Some(method)));
    let name = match method {
        Some(method) => method.to_string(),
        None => format!("{} {}", known_http_method(asked.http_method), asked.route),
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", known_http_method(asked.http_method)),
        KeyValue::new("url.path", asked.path[..asked.path.floor_char_boundary(MAX_PATH)].to_string()),
        KeyValue::new("http.response.status_code", i64::from(served.status)),
        KeyValue::new("mcp_edge.route", asked.route.to_string()),
        KeyValue::new("mcp_edge.cache", served.cache),
        KeyValue::new("mcp_edge.request_id", asked.request_id.as_str().to_string()),
        KeyValue::new("http.request.body.size", served.bytes_in as i64),
        KeyValue::new("http.response.body.size", served.bytes_out as i64),
    ];
    if let Some(method) = method {
        attributes.push(KeyValue::new("mcp.method.name", method));
    }
    if let Some(tier) = served.tier {
        attributes.push(KeyValue::new("mcp_edge.cache.tier", tier));
    }
    if let Some(kind) = asked.prefetch {
        attributes.push(KeyValue::new("mcp_edge.prefetch", kind));
    }
    if let Some(client) = asked.client {
        attributes.push(KeyValue::new("client.address", client.to_string()));
    }
    let tracer = &exporting.tracer;
    let request = SpanBuilder::from_name(name)
        .with_trace_id(trace_id)
        .with_span_id(SpanId::from_bytes(trace.span_id))
        .with_kind(SpanKind::Server)
        .with_start_time(started)
        .with_end_time(ended)
        .with_attributes(attributes)
        .with_status(status.clone());
    tracer.build_with_context(request, &parent).end_with_timestamp(ended);
    if let (Some(upstream), Some(attempted)) = (served.upstream, &served.attempted) {
        let since = started + attempted.first_at.saturating_duration_since(served.started);
        let attributes = vec![
            KeyValue::new("mcp_edge.upstream", upstream.to_string()),
            KeyValue::new("mcp_edge.upstream.attempts", attempted.count as i64),
            KeyValue::new("http.response.status_code", i64::from(served.status)),
        ];
        let exchange = SpanBuilder::from_name(format!("upstream {}", asked.route))
            .with_trace_id(trace_id)
            .with_span_id(SpanId::from_bytes(trace.upstream_span_id))
            .with_kind(SpanKind::Client)
            .with_start_time(since)
            .with_end_time(ended)
            .with_attributes(attributes)
            .with_status(status);
        let request_span =
            SpanContext::new(trace_id, SpanId::from_bytes(trace.span_id), TraceFlags::SAMPLED, false, TraceState::NONE);
        let within = Context::new().with_remote_span_context(request_span);
        tracer.build_with_context(exchange, &within).end_with_timestamp(ended);
    }
}

/// A request's HTTP method as spans name it: one mcp-edge serves, else `_OTHER` (a refused
/// request's method is whatever token the client sent).
fn known_http_method(method: &str) -> &'static str {
    ["GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH", "CONNECT", "TRACE"]
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("_OTHER")
}

/// The longest path a span carries (a client chooses it; the queue holds thousands of spans).
const MAX_PATH: usize = 256;

/// When a request's first upstream attempt began, and how many it made.
#[derive(Debug, Clone, Copy)]
pub struct Attempted {
    pub first_at: Instant,
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_traces_are_sampled_at_the_ratio() {
        let sampled = |ratio| (0..10_000).filter(|_| sampled_at(&trace_id(), ratio)).count();
        assert_eq!(sampled(1.0), 10_000);
        assert_eq!(sampled(0.0), 0);
        let tenth = sampled(0.1);
        assert!((800..1_200).contains(&tenth), "{tenth}");
    }

    #[test]
    fn ids_are_distinct_and_never_zero() {
        let ids: std::collections::HashSet<[u8; 8]> = (0..10_000).map(|_| span_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&[0; 8]));
        let one = span_id();
        assert_ne!(span_id_other_than(one), one);
    }
}
