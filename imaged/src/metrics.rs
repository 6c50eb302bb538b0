//! Prometheus metrics: request counts and latencies per route, bytes served and received,
//! publishes and garbage collection, exposed at `GET /metrics` in the text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request: the route template (not the raw path, to bound cardinality) and the
/// status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `/v1/objects/{digest}`, …; `unmatched` for requests no route took.
    pub route: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template.
    pub route: &'static str,
}

/// The routes requests are counted under: the templates `app` registers.
pub const ROUTES: &[&str] = &[
    "/healthz",
    "/metrics",
    "/v1/gc",
    "/v1/objects/missing",
    "/v1/objects/batch",
    "/v1/objects/upload",
    "/v1/objects/{digest}",
    "/v1/generations",
    "/v1/generations/{image}/{number}",
    "/v1/generations/{image}/{number}/keep",
    "/v1/channels/{*name}",
    "/v1/history/{*name}",
    "/v1/promote",
    "/v1/rollback",
    "/v1/tuf",
    "/v1/tuf/keys/{role}",
    "/v1/tuf/root",
    "/v1/tuf/roles/{*role}",
    "/tuf/{file}",
    "/tuf/targets/{*path}",
    "/v1/policies/{*name}",
    "/v1/generations/{image}/{number}/evidence",
    "/v1/generations/{image}/{number}/approvals",
    "/v1/generations/{image}/{number}/gate",
    "/v1/affected",
    "/v1/users",
    "/v1/users/{name}",
    "/v1/fleet/enroll-tokens",
    "/v1/fleet/enroll",
    "/v1/fleet/session",
    "/v1/fleet/desired",
    "/v1/fleet/events",
    "/v1/fleet/reports",
    "/v1/fleet/endpoints",
    "/v1/fleet/endpoints/{id}",
    "/v1/fleet/endpoints/{id}/labels",
    "/v1/fleet/groups",
    "/v1/fleet/groups/{name}",
    "/v1/fleet/compliance",
    "/v1/audit",
    "/v1/rollouts",
    "/v1/rollouts/{id}",
    "/v1/rollouts/{id}/{action}",
    "/v1/withdraw",
    "/v1/fleet/endpoints/{id}/pin",
    "/v1/fleet/endpoints/{id}/hold",
    "/v1/fleet/groups/{name}/pin",
    "/v1/packs/{digest}",
    "/v1/layouts/{manifest}",
];

/// The label of a matched route template (`unmatched` when no route took the request).
pub fn route_label(matched: Option<&str>) -> &'static str {
    matched.and_then(|m| ROUTES.iter().find(|r| **r == m)).copied().unwrap_or("unmatched")
}

/// The label of a method: the common ones by name, the rest as `other`.
pub fn method_label(m: &axum::http::Method) -> &'static str {
    match *m {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::POST => "POST",
        axum::http::Method::DELETE => "DELETE",
        _ => "other",
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~13 s.
    Histogram::new(exponential_buckets(0.00005, 4.0, 10))
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to answer, by route (until the response head; streamed bodies continue after).
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Framed object bytes sent by object GETs and batch fetches.
    pub object_bytes_sent: Counter,
    /// Objects stored by uploads (new ones only).
    pub objects_received: Counter,
    /// Framed bytes of those objects.
    pub object_bytes_received: Counter,
    /// Uploaded objects refused because they did not verify.
    pub objects_refused: Counter,
    /// Generations published.
    pub publishes: Counter,
    /// Channel versions written.
    pub channel_moves: Counter,
    /// Garbage collection runs that deleted (not dry runs).
    pub gc_runs: Counter,
    /// Objects deleted by garbage collection.
    pub gc_objects_removed: Counter,
    /// Bytes freed by garbage collection.
    pub gc_bytes_freed: Counter,
    /// Generations published now (set at each scrape).
    pub generations: Gauge,
    /// The read-through cache of a `[storage]` bucket.
    pub bucket_cache: crate::backend::CacheCounters,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("imaged");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            object_bytes_sent: Counter::default(),
            objects_received: Counter::default(),
            object_bytes_received: Counter::default(),
            objects_refused: Counter::default(),
            publishes: Counter::default(),
            channel_moves: Counter::default(),
            gc_runs: Counter::default(),
            gc_objects_removed: Counter::default(),
            gc_bytes_freed: Counter::default(),
            generations: Gauge::default(),
            bucket_cache: Default::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests answered", m.requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer an HTTP request", m.latency.clone());
        registry.register("object_sent_bytes", "Framed object bytes sent", m.object_bytes_sent.clone());
        registry.register("objects_received", "New objects stored by uploads", m.objects_received.clone());
        registry.register("object_received_bytes", "Framed bytes of new uploaded objects", m.object_bytes_received.clone());
        registry.register("objects_refused", "Uploaded objects refused because they did not verify", m.objects_refused.clone());
        registry.register("publishes", "Generations published", m.publishes.clone());
        registry.register("channel_moves", "Channel versions written", m.channel_moves.clone());
        registry.register("gc_runs", "Garbage collections that deleted", m.gc_runs.clone());
        registry.register("gc_objects_removed", "Objects deleted by garbage collection", m.gc_objects_removed.clone());
        registry.register("gc_freed_bytes", "Bytes freed by garbage collection", m.gc_bytes_freed.clone());
        registry.register("generations", "Generations published now", m.generations.clone());
        registry.register("bucket_cache_hits", "Blocks of serving packs and layouts read from the bucket cache", m.bucket_cache.hits.clone());
        registry.register("bucket_cache_fetches", "Blocks fetched from the bucket (one ranged GET each)", m.bucket_cache.fetches.clone());
        registry.register("bucket_cache_evictions", "Blocks evicted from the bucket cache", m.bucket_cache.evictions.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
