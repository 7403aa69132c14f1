//! Prometheus metrics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_duration: HistogramVec,
    pub order_events: IntCounterVec,
    pub stream_subscribers: IntGauge,
    pub stream_connections: IntGauge,
    pub stream_resyncs: IntCounter,
    pub stream_published_seq: IntGauge,
    pub stream_publish_delay: Histogram,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub version_conflicts: IntCounter,
    pub write_group_size: Histogram,
    pub positions: IntCounterVec,
    pub fence_transitions: IntCounterVec,
    pub eta_error: Histogram,
    pub alerts_raised: IntCounterVec,
    pub notices: IntCounterVec,
    pub plans: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn fast_buckets() -> Vec<f64> {
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("xianlu".into()), None).unwrap_or_default();
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(fast_buckets()),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let order_events = IntCounterVec::new(
            Opts::new("order_events_total", "Order events committed, by type and edge"),
            &["type", "from", "to"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let stream_subscribers =
            IntGauge::new("stream_subscribers", "Live push subscriptions").unwrap_or_else(|_| unreachable_metric());
        let stream_connections = IntGauge::new("stream_connections", "Open push WebSocket connections")
            .unwrap_or_else(|_| unreachable_metric());
        let stream_resyncs = IntCounter::new("stream_resyncs_total", "Subscribers told to resync after falling behind")
            .unwrap_or_else(|_| unreachable_metric());
        let stream_published_seq =
            IntGauge::new("stream_published_seq", "Newest stream sequence handed to subscribers")
                .unwrap_or_else(|_| unreachable_metric());
        let stream_publish_delay = Histogram::with_opts(
            HistogramOpts::new("stream_publish_delay_seconds", "From commit to hand-over to subscribers (push lag)")
                .buckets(fast_buckets()),
        )
        .unwrap_or_else(|_| unreachable_metric());
        let cache_hits =
            IntCounter::new("order_cache_hits_total", "Hot-order cache hits").unwrap_or_else(|_| unreachable_metric());
        let cache_misses = IntCounter::new("order_cache_misses_total", "Hot-order cache misses")
            .unwrap_or_else(|_| unreachable_metric());
        let version_conflicts =
            IntCounter::new("version_conflicts_total", "Commands refused because the order changed")
                .unwrap_or_else(|_| unreachable_metric());
        let write_group_size = Histogram::with_opts(
            HistogramOpts::new("order_write_group_size", "Order changes committed together in one transaction")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .unwrap_or_else(|_| unreachable_metric());
        let positions = IntCounterVec::new(
            Opts::new("courier_positions_total", "Position fixes received, by outcome"),
            &["outcome"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let fence_transitions = IntCounterVec::new(
            Opts::new("geofence_transitions_total", "Geofence arrivals and departures, by fence kind"),
            &["fence", "transition"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let eta_error = Histogram::with_opts(
            HistogramOpts::new("eta_error_seconds", "Absolute error of the first ETA made on the road, at arrival")
                .buckets(vec![30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0]),
        )
        .unwrap_or_else(|_| unreachable_metric());
        let alerts_raised = IntCounterVec::new(Opts::new("alerts_raised_total", "Alerts raised, by rule"), &["rule"])
            .unwrap_or_else(|_| unreachable_metric());
        let notices = IntCounterVec::new(
            Opts::new("customer_notices_total", "Arriving-soon notices, by channel and outcome"),
            &["channel", "outcome"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let plans =
            IntCounterVec::new(Opts::new("plans_total", "Route plans applied, by what asked for them"), &["trigger"])
                .unwrap_or_else(|_| unreachable_metric());
        for collector in [
            Box::new(http_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(order_events.clone()),
            Box::new(stream_subscribers.clone()),
            Box::new(stream_connections.clone()),
            Box::new(stream_resyncs.clone()),
            Box::new(stream_published_seq.clone()),
            Box::new(stream_publish_delay.clone()),
            Box::new(cache_hits.clone()),
            Box::new(cache_misses.clone()),
            Box::new(version_conflicts.clone()),
            Box::new(write_group_size.clone()),
            Box::new(positions.clone()),
            Box::new(fence_transitions.clone()),
            Box::new(eta_error.clone()),
            Box::new(alerts_raised.clone()),
            Box::new(notices.clone()),
            Box::new(plans.clone()),
        ] {
            let _ = registry.register(collector);
        }
        Metrics {
            registry,
            http_duration,
            order_events,
            stream_subscribers,
            stream_connections,
            stream_resyncs,
            stream_published_seq,
            stream_publish_delay,
            cache_hits,
            cache_misses,
            version_conflicts,
            write_group_size,
            positions,
            fence_transitions,
            eta_error,
            alerts_raised,
            notices,
            plans,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Metric definitions above are constants; constructing them cannot fail.
fn unreachable_metric<T>() -> T {
    panic!("static metric definition rejected by prometheus")
}
