//! Prometheus metrics, with etcd's names where etcd has the metric (so
//! existing dashboards and alerts work) and `cairn_*` names for the rest.
//!
//! One process runs one member, so the registry is process-wide.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

pub struct Metrics {
    pub registry: Registry,
    // etcd_server_*
    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub leader_changes: IntCounter,
    pub proposals_committed: IntGauge,
    pub proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub slow_apply: IntCounter,
    pub health_success: IntCounter,
    pub health_failures: IntCounter,
    pub quota_backend_bytes: IntGauge,
    pub server_version: IntGaugeVec,
    pub cluster_version: IntGaugeVec,
    pub server_id: IntGaugeVec,
    // etcd_disk_*
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub defrag_duration: Histogram,
    // etcd_mvcc_* / etcd_debugging_*
    pub db_total_size: IntGauge,
    pub db_in_use_size: IntGauge,
    pub watcher_total: IntGauge,
    pub keys_total: IntGauge,
    pub current_revision: IntGauge,
    pub compact_revision: IntGauge,
    /// etcd 3.4 exports the db size under both names; older dashboards and
    /// kube-prometheus' recording rules read the debugging one.
    pub debugging_db_total_size: IntGauge,
    pub mvcc_range: IntCounter,
    pub mvcc_put: IntCounter,
    pub mvcc_delete: IntCounter,
    pub mvcc_txn: IntCounter,
    // etcd_network_*
    pub peer_rtt: HistogramVec,
    pub peer_sent_failures: IntCounterVec,
    /// 1 while a peer is reachable: Cairn's message stream to it is up
    /// (the one carrying heartbeats and votes; the append stream is not
    /// counted).
    pub active_peers: IntGaugeVec,
    pub disconnected_peers: IntCounterVec,
    pub peer_sent_bytes: IntCounterVec,
    pub peer_received_bytes: IntCounterVec,
    pub client_grpc_sent_bytes: IntCounter,
    pub client_grpc_received_bytes: IntCounter,
    // gRPC (go-grpc-prometheus names)
    pub grpc_started: IntCounterVec,
    pub grpc_handled: IntCounterVec,
    /// Only observed with `--metrics=extensive`, as etcd; registered (and so
    /// listed) only then too.
    pub grpc_handling_seconds: HistogramVec,
    // cairn_*
    pub raft_ready_entries: Histogram,
    pub apply_batch_entries: Histogram,
    pub config_reload_successful: IntGauge,
    pub config_reload_success_timestamp: IntGauge,
    pub config_reloads: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub tls_handshake_failures: IntCounterVec,
    pub peer_clock_difference: prometheus::GaugeVec,
    pub alarms: IntGaugeVec,
}

fn seconds_buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, count).unwrap_or_default()
}

impl Metrics {
    #[allow(clippy::too_many_lines)] // a table: one registration per metric
    fn new() -> Metrics {
        let r = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
            // Names are static and unique; a failure here is a programming
            // error caught by the metrics test.
            let _ = r.register(Box::new(c.clone()));
            c
        }
        let gauge = |name: &str, help: &str| reg(&r, IntGauge::new(name, help).expect("metric"));
        let counter =
            |name: &str, help: &str| reg(&r, IntCounter::new(name, help).expect("metric"));
        let m = Metrics {
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            slow_apply: counter(
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            health_success: counter(
                "etcd_server_health_success",
                "The total number of successful health checks",
            ),
            health_failures: counter(
                "etcd_server_health_failures",
                "The total number of failed health checks",
            ),
            quota_backend_bytes: gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            server_version: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version."),
                    &["server_version"],
                )
                .expect("metric"),
            ),
            cluster_version: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("etcd_cluster_version", "Which version is running. 1 for 'cluster_version' label with current cluster version"),
                    &["cluster_version"],
                )
                .expect("metric"),
            ),
            server_id: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."),
                    &["server_id"],
                )
                .expect("metric"),
            ),
            wal_fsync: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "etcd_disk_wal_fsync_duration_seconds",
                        "The latency distributions of fsync called by WAL.",
                    )
                    .buckets(seconds_buckets(0.001, 2.0, 14)),
                )
                .expect("metric"),
            ),
            backend_commit: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "etcd_disk_backend_commit_duration_seconds",
                        "The latency distributions of commit called by backend.",
                    )
                    .buckets(seconds_buckets(0.001, 2.0, 14)),
                )
                .expect("metric"),
            ),
            defrag_duration: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "etcd_disk_backend_defrag_duration_seconds",
                        "The latency distribution of backend defragmentation.",
                    )
                    .buckets(seconds_buckets(0.1, 2.0, 13)),
                )
                .expect("metric"),
            ),
            db_total_size: gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            db_in_use_size: gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            watcher_total: gauge(
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            ),
            keys_total: gauge(
                "etcd_debugging_mvcc_keys_total",
                "Total number of keys.",
            ),
            current_revision: gauge(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
            ),
            compact_revision: gauge(
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            ),
            debugging_db_total_size: gauge(
                "etcd_debugging_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            mvcc_range: counter(
                "etcd_mvcc_range_total",
                "Total number of ranges seen by this member.",
            ),
            mvcc_put: counter(
                "etcd_mvcc_put_total",
                "Total number of puts seen by this member.",
            ),
            mvcc_delete: counter(
                "etcd_mvcc_delete_total",
                "Total number of deletes seen by this member.",
            ),
            mvcc_txn: counter(
                "etcd_mvcc_txn_total",
                "Total number of txns seen by this member.",
            ),
            peer_sent_bytes: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "etcd_network_peer_sent_bytes_total",
                        "The total number of bytes sent to peers.",
                    ),
                    &["To"],
                )
                .expect("metric"),
            ),
            peer_received_bytes: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "etcd_network_peer_received_bytes_total",
                        "The total number of bytes received from peers.",
                    ),
                    &["From"],
                )
                .expect("metric"),
            ),
            client_grpc_sent_bytes: counter(
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
            ),
            client_grpc_received_bytes: counter(
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
            ),
            grpc_handling_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                ),
                &["grpc_type", "grpc_service", "grpc_method"],
            )
            .expect("metric"),
            peer_rtt: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "etcd_network_peer_round_trip_time_seconds",
                        "Round-Trip-Time histogram between peers",
                    )
                    .buckets(seconds_buckets(0.0001, 2.0, 16)),
                    &["To"],
                )
                .expect("metric"),
            ),
            peer_sent_failures: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "etcd_network_peer_sent_failures_total",
                        "The total number of send failures from peers.",
                    ),
                    &["To"],
                )
                .expect("metric"),
            ),
            active_peers: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "etcd_network_active_peers",
                        "The current number of active peer connections.",
                    ),
                    &["Local", "Remote"],
                )
                .expect("metric"),
            ),
            disconnected_peers: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "etcd_network_disconnected_peers_total",
                        "The total number of disconnected peers.",
                    ),
                    &["Local", "Remote"],
                )
                .expect("metric"),
            ),
            grpc_started: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "grpc_server_started_total",
                        "Total number of RPCs started on the server.",
                    ),
                    &["grpc_type", "grpc_service", "grpc_method"],
                )
                .expect("metric"),
            ),
            grpc_handled: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "grpc_server_handled_total",
                        "Total number of RPCs completed on the server, regardless of success or failure.",
                    ),
                    &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
                )
                .expect("metric"),
            ),
            raft_ready_entries: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cairn_raft_ready_entries",
                        "Raft log entries persisted per Ready (one fsync each): the group-commit batch size.",
                    )
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 14).unwrap_or_default()),
                )
                .expect("metric"),
            ),
            apply_batch_entries: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cairn_apply_batch_entries",
                        "Committed entries applied per state-machine batch.",
                    )
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 14).unwrap_or_default()),
                )
                .expect("metric"),
            ),
            config_reload_successful: gauge(
                "cairn_config_last_reload_successful",
                "Whether the last configuration reload attempt succeeded (1) or failed (0).",
            ),
            config_reload_success_timestamp: gauge(
                "cairn_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load or reload.",
            ),
            config_reloads: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cairn_config_reloads_total",
                        "Configuration reload attempts, by trigger and result.",
                    ),
                    &["trigger", "result"],
                )
                .expect("metric"),
            ),
            tls_reloads: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cairn_tls_reloads_total",
                        "Rebuilds of a TLS configuration after its certificate, key or CA files changed, by side (client, peer) and result.",
                    ),
                    &["side", "result"],
                )
                .expect("metric"),
            ),
            tls_handshake_failures: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cairn_tls_handshake_failures_total",
                        "Incoming TLS handshakes that failed or timed out, by side (client, peer).",
                    ),
                    &["side"],
                )
                .expect("metric"),
            ),
            peer_clock_difference: reg(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "cairn_peer_clock_difference_seconds",
                        "Estimated difference between a peer's clock and this member's (peer minus local).",
                    ),
                    &["To"],
                )
                .expect("metric"),
            ),
            alarms: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "cairn_server_alarms",
                        "Active alarms by type (etcdctl alarm list), cluster-wide.",
                    ),
                    &["alarm_type"],
                )
                .expect("metric"),
            ),
            registry: r,
        };
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        let _ = m.registry.register(Box::new(pc));
        m
    }

    /// `--metrics=extensive`: registers the gRPC latency histogram (etcd
    /// exports it only then). Idempotent.
    pub fn enable_extensive(&self) {
        if EXTENSIVE.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let _ = self
            .registry
            .register(Box::new(self.grpc_handling_seconds.clone()));
    }

    /// Whether `--metrics=extensive` is on.
    pub fn extensive(&self) -> bool {
        EXTENSIVE.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
static EXTENSIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        METRICS.has_leader.set(1);
        METRICS
            .grpc_handled
            .with_label_values(&["unary", "etcdserverpb.KV", "Range", "OK"])
            .inc();
        METRICS.wal_fsync.observe(0.002);
        let text = METRICS.render();
        for name in [
            "etcd_server_has_leader 1",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1",
            "etcd_disk_wal_fsync_duration_seconds_bucket",
            "cairn_config_last_reload_successful",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        // 41 metrics we define, all registered.
        assert!(METRICS.registry.gather().len() >= 20);
    }
}
