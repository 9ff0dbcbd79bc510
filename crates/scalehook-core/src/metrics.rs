//! Metrics: counters and per-pool gauges kept in process, rendered as Prometheus text
//! (local server, Azure) or written as CloudWatch Embedded Metric Format lines (AWS).

use crate::report::{DeliveryReport, Outcome};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The CloudWatch namespace of scalehook's EMF metrics.
pub const EMF_NAMESPACE: &str = "Scalehook";

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    deliveries: BTreeMap<Outcome, u64>,
    signature_failures: u64,
    unroutable_jobs: u64,
    /// (pool, action) -> count
    scale_actions: BTreeMap<(String, &'static str), u64>,
    /// (pool, kind) -> count, kind = ledger|fleet|timeout
    cloud_api_errors: BTreeMap<(String, &'static str), u64>,
    pools: BTreeMap<String, PoolGauges>,
    reconcile_runs: u64,
    reconcile_failures: u64,
}

/// The latest known figures of one pool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolGauges {
    pub desired: u32,
    pub queued: u32,
    pub running: u32,
    /// 1 when the pool is at its max with jobs still queued.
    pub at_max_with_queue: u32,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one delivery by its report.
    pub fn observe(&self, report: &DeliveryReport) {
        let mut m = self.lock();
        *m.deliveries.entry(report.outcome).or_default() += 1;
        if report.outcome == Outcome::Unauthorized {
            m.signature_failures += 1;
        }
        if report.outcome.is_cloud_error() {
            let pool = report.pool.clone().unwrap_or_default();
            *m.cloud_api_errors
                .entry((pool, cloud_kind(report.outcome)))
                .or_default() += 1;
        }
        if let (Some(pool), Some(action)) = (&report.pool, report.decision) {
            if action != "hold" {
                *m.scale_actions.entry((pool.clone(), action)).or_default() += 1;
            }
        }
    }

    pub fn unroutable_job(&self) {
        self.lock().unroutable_jobs += 1;
    }

    pub fn reconciled(&self, ok: bool) {
        let mut m = self.lock();
        m.reconcile_runs += 1;
        if !ok {
            m.reconcile_failures += 1;
        }
    }

    pub fn cloud_error(&self, pool: &str, outcome: Outcome) {
        *self
            .lock()
            .cloud_api_errors
            .entry((pool.to_string(), cloud_kind(outcome)))
            .or_default() += 1;
    }

    pub fn scale_action(&self, pool: &str, action: &'static str) {
        if action != "hold" {
            *self
                .lock()
                .scale_actions
                .entry((pool.to_string(), action))
                .or_default() += 1;
        }
    }

    pub fn set_pool(&self, pool: &str, gauges: PoolGauges) {
        self.lock().pools.insert(pool.to_string(), gauges);
    }

    pub fn pool(&self, pool: &str) -> Option<PoolGauges> {
        self.lock().pools.get(pool).copied()
    }

    pub fn deliveries(&self, outcome: Outcome) -> u64 {
        self.lock().deliveries.get(&outcome).copied().unwrap_or(0)
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn render_prometheus(&self) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(2048);
        header(
            &mut out,
            "scalehook_deliveries_total",
            "counter",
            "Webhook deliveries by outcome.",
        );
        for o in Outcome::ALL {
            let n = m.deliveries.get(&o).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "scalehook_deliveries_total{{outcome=\"{}\"}} {n}",
                o.as_str()
            );
        }
        header(
            &mut out,
            "scalehook_signature_failures_total",
            "counter",
            "Deliveries rejected for a missing or bad signature.",
        );
        let _ = writeln!(
            out,
            "scalehook_signature_failures_total {}",
            m.signature_failures
        );
        header(
            &mut out,
            "scalehook_unroutable_jobs_total",
            "counter",
            "Jobs whose labels no pool has.",
        );
        let _ = writeln!(out, "scalehook_unroutable_jobs_total {}", m.unroutable_jobs);
        header(
            &mut out,
            "scalehook_scale_actions_total",
            "counter",
            "Capacity changes by pool and action.",
        );
        for ((pool, action), n) in &m.scale_actions {
            let _ = writeln!(
                out,
                "scalehook_scale_actions_total{{pool=\"{}\",action=\"{action}\"}} {n}",
                escape(pool)
            );
        }
        header(
            &mut out,
            "scalehook_cloud_api_errors_total",
            "counter",
            "Failed ledger or fleet calls by pool and kind.",
        );
        for ((pool, kind), n) in &m.cloud_api_errors {
            let _ = writeln!(
                out,
                "scalehook_cloud_api_errors_total{{pool=\"{}\",kind=\"{kind}\"}} {n}",
                escape(pool)
            );
        }
        header(
            &mut out,
            "scalehook_reconcile_runs_total",
            "counter",
            "Reconcile passes run.",
        );
        let _ = writeln!(out, "scalehook_reconcile_runs_total {}", m.reconcile_runs);
        header(
            &mut out,
            "scalehook_reconcile_failures_total",
            "counter",
            "Reconcile passes with at least one failed pool.",
        );
        let _ = writeln!(
            out,
            "scalehook_reconcile_failures_total {}",
            m.reconcile_failures
        );
        type Gauge = (&'static str, &'static str, fn(&PoolGauges) -> u32);
        let gauges: [Gauge; 4] = [
            (
                "scalehook_pool_desired_capacity",
                "Desired capacity (instances) by pool.",
                |g| g.desired,
            ),
            ("scalehook_pool_queued_jobs", "Queued jobs by pool.", |g| {
                g.queued
            }),
            (
                "scalehook_pool_running_jobs",
                "Running jobs by pool.",
                |g| g.running,
            ),
            (
                "scalehook_pool_at_max_with_queue",
                "1 when a pool is at max capacity with jobs queued.",
                |g| g.at_max_with_queue,
            ),
        ];
        for (name, help, get) in gauges {
            header(&mut out, name, "gauge", help);
            for (pool, g) in &m.pools {
                let _ = writeln!(out, "{name}{{pool=\"{}\"}} {}", escape(pool), get(g));
            }
        }
        out
    }
}

fn cloud_kind(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::LedgerError => "ledger",
        Outcome::Timeout => "timeout",
        _ => "fleet",
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One CloudWatch Embedded Metric Format line for a delivery: the delivery's log fields
/// plus its metrics, so on Lambda the log line and the metrics are the same line.
pub fn emf_line(report: &DeliveryReport, timestamp_ms: u64) -> String {
    let mut root = match serde_json::to_value(report) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let mut directives = Vec::new();
    let outcome = report.outcome.as_str();
    root.insert("Outcome".into(), outcome.into());
    root.insert("Deliveries".into(), 1.into());
    root.insert(
        "SignatureFailures".into(),
        u32::from(report.outcome == Outcome::Unauthorized).into(),
    );
    root.insert(
        "CloudApiErrors".into(),
        u32::from(report.outcome.is_cloud_error()).into(),
    );
    root.insert(
        "LatencyMs".into(),
        (report.latency_us as f64 / 1000.0).into(),
    );
    directives.push(serde_json::json!({
        "Namespace": EMF_NAMESPACE,
        "Dimensions": [["Outcome"], []],
        "Metrics": [
            {"Name": "Deliveries", "Unit": "Count"},
            {"Name": "SignatureFailures", "Unit": "Count"},
            {"Name": "CloudApiErrors", "Unit": "Count"},
            {"Name": "LatencyMs", "Unit": "Milliseconds"}
        ]
    }));
    if let Some(pool) = &report.pool {
        root.insert("Pool".into(), pool.clone().into());
        let mut pool_metrics = Vec::new();
        let mut put = |name: &str, value: Option<u32>, unit: &str| {
            if let Some(v) = value {
                root.insert(name.into(), v.into());
                pool_metrics.push(serde_json::json!({"Name": name, "Unit": unit}));
            }
        };
        put("DesiredCapacity", report.capacity_after, "Count");
        put("QueuedJobs", report.queued, "Count");
        put("RunningJobs", report.running, "Count");
        let scaled = report.decision.map(|d| u32::from(d != "hold"));
        put("ScaleActions", scaled, "Count");
        if !pool_metrics.is_empty() {
            directives.push(serde_json::json!({
                "Namespace": EMF_NAMESPACE,
                "Dimensions": [["Pool"]],
                "Metrics": pool_metrics
            }));
        }
    }
    root.insert(
        "_aws".into(),
        serde_json::json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}),
    );
    serde_json::Value::Object(root).to_string()
}

/// One EMF line of a pool's gauges after a reconcile pass (including `AtMaxWithQueue`,
/// which the "pool stuck at max" alarm watches).
pub fn emf_pool_line(pool: &str, g: &PoolGauges, timestamp_ms: u64) -> String {
    serde_json::json!({
        "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
            "Namespace": EMF_NAMESPACE,
            "Dimensions": [["Pool"]],
            "Metrics": [
                {"Name": "DesiredCapacity", "Unit": "Count"},
                {"Name": "QueuedJobs", "Unit": "Count"},
                {"Name": "RunningJobs", "Unit": "Count"},
                {"Name": "AtMaxWithQueue", "Unit": "Count"}
            ]}]},
        "Pool": pool,
        "DesiredCapacity": g.desired,
        "QueuedJobs": g.queued,
        "RunningJobs": g.running,
        "AtMaxWithQueue": g.at_max_with_queue,
    })
    .to_string()
}

/// One EMF line for a reconcile pass: `ReconcileRuns` and `ReconcileFailures` (the
/// "reconcile failing" alarm), with the report as log fields.
pub fn emf_reconcile_line(report: &crate::service::ReconcileReport, timestamp_ms: u64) -> String {
    serde_json::json!({
        "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
            "Namespace": EMF_NAMESPACE,
            "Dimensions": [[]],
            "Metrics": [
                {"Name": "ReconcileRuns", "Unit": "Count"},
                {"Name": "ReconcileFailures", "Unit": "Count"},
                {"Name": "ExpiredJobs", "Unit": "Count"}
            ]}]},
        "message": "reconcile",
        "ReconcileRuns": 1,
        "ReconcileFailures": u32::from(!report.ok()),
        "ExpiredJobs": report.expired,
        "reconcile": report,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_counts_outcomes() {
        let m = Metrics::new();
        let mut r = DeliveryReport::new(Outcome::Unauthorized);
        m.observe(&r);
        r.outcome = Outcome::Handled;
        r.pool = Some("p".into());
        r.decision = Some("scale_out");
        m.observe(&r);
        m.set_pool(
            "p",
            PoolGauges {
                desired: 3,
                queued: 1,
                running: 2,
                at_max_with_queue: 0,
            },
        );
        let text = m.render_prometheus();
        assert!(text.contains("scalehook_deliveries_total{outcome=\"unauthorized\"} 1"));
        assert!(text.contains("scalehook_signature_failures_total 1"));
        assert!(text.contains("scalehook_scale_actions_total{pool=\"p\",action=\"scale_out\"} 1"));
        assert!(text.contains("scalehook_pool_desired_capacity{pool=\"p\"} 3"));
    }

    #[test]
    fn emf_line_is_one_valid_json_object() {
        let mut r = DeliveryReport::new(Outcome::Handled);
        r.pool = Some("p".into());
        r.capacity_after = Some(2);
        r.decision = Some("scale_out");
        let line = emf_line(&r, 1_700_000_000_000);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(v["DesiredCapacity"], 2);
        assert_eq!(v["Pool"], "p");
        assert_eq!(v["ScaleActions"], 1);
        // every metric named in a directive is a number at the root
        for d in v["_aws"]["CloudWatchMetrics"].as_array().expect("array") {
            for m in d["Metrics"].as_array().expect("metrics") {
                let name = m["Name"].as_str().expect("name");
                assert!(v[name].is_number(), "{name}");
            }
        }
    }
}
