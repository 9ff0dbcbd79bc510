//! The CloudWatch Embedded Metric Format lines (Lambda: the log line and the metrics are the
//! same line) and the JSON state log line with the same figures (Azure's workbook).

use super::{Inner, Metrics, PoolGauges, EMF_NAMESPACE};
use crate::report::{DeliveryReport, Outcome, ReconcileReport};

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
        "RefusedDeliveries".into(),
        u32::from(report.refused.is_some()).into(),
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
            {"Name": "RefusedDeliveries", "Unit": "Count"},
            {"Name": "LatencyMs", "Unit": "Milliseconds"}
        ]
    }));
    if let Some(pool) = &report.pool {
        root.insert("Pool".into(), pool.clone().into());
        let mut pool_metrics = Vec::new();
        let mut put = |name: &str, value: Option<u64>, unit: &str| {
            if let Some(v) = value {
                root.insert(name.into(), v.into());
                pool_metrics.push(serde_json::json!({"Name": name, "Unit": unit}));
            }
        };
        put(
            "DesiredCapacity",
            report.capacity_after.map(u64::from),
            "Count",
        );
        put("QueuedJobs", report.queued.map(u64::from), "Count");
        put("RunningJobs", report.running.map(u64::from), "Count");
        let scaled = report.decision.map(|d| u64::from(d != "hold"));
        put("ScaleActions", scaled, "Count");
        // The job SLIs, present on the one delivery that moved the job (so once per job).
        put("QueueWaitSeconds", report.queue_wait_secs, "Seconds");
        put("RunSeconds", report.run_secs, "Seconds");
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

/// One metric value of a state line: (name, unit, value).
type StateValue = (&'static str, &'static str, u64);

/// What a reconcile pass measured besides the pools' gauges, as (pool, values) per pool and
/// the values without a pool; counters are the increase since the last such call (so a sum
/// over time is the count). Shared by the EMF lines and the JSON state log line.
fn state_values(m: &mut Inner) -> (Vec<(String, Vec<StateValue>)>, Vec<StateValue>) {
    let pools: std::collections::BTreeSet<String> = m
        .waiting_over
        .keys()
        .chain(m.census.keys())
        .chain(m.runner_removals_refused_unreported.keys())
        .chain(m.interruptions_unreported.keys())
        .cloned()
        .collect();
    let mut per_pool = Vec::new();
    for pool in pools {
        let mut values: Vec<StateValue> = Vec::new();
        if let Some(n) = m.waiting_over.get(&pool) {
            values.push(("JobsWaitingOverThreshold", "Count", u64::from(*n)));
        }
        if let Some(c) = m.census.get(&pool) {
            values.push(("LiveInstances", "Count", u64::from(c.live)));
            values.push(("LaunchingInstances", "Count", u64::from(c.launching)));
            values.push(("BusyInstances", "Count", u64::from(c.busy)));
            values.push(("IdleInstances", "Count", u64::from(c.idle)));
            values.push(("WarmInstances", "Count", u64::from(c.warm)));
            if let Some(u) = c.unregistered {
                values.push(("UnregisteredInstances", "Count", u64::from(u)));
            }
        }
        let refused = m
            .runner_removals_refused_unreported
            .remove(&pool)
            .unwrap_or(0);
        values.push(("RunnerRemovalsRefused", "Count", refused));
        // Spot pools only, once they had an interruption.
        if let Some((interrupted, rerun)) = m.interruptions_unreported.remove(&pool) {
            values.push(("JobsInterrupted", "Count", interrupted));
            values.push(("JobsRerun", "Count", rerun));
        }
        per_pool.push((pool, values));
    }
    let mut values: Vec<StateValue> = vec![
        ("RedeliveredDeliveries", "Count", m.redelivered_unreported),
        (
            "RedeliveryFailures",
            "Count",
            m.redelivery_failures_unreported,
        ),
        (
            "RedeliveriesAbandoned",
            "Count",
            m.redeliveries_abandoned_unreported,
        ),
        ("RecheckedJobs", "Count", m.rechecked_jobs_unreported),
    ];
    m.redelivered_unreported = 0;
    m.redelivery_failures_unreported = 0;
    m.redeliveries_abandoned_unreported = 0;
    m.rechecked_jobs_unreported = 0;
    if let Some((remaining, requests)) = m.github {
        values.push((
            "GitHubRequests",
            "Count",
            requests.saturating_sub(m.github_requests_reported),
        ));
        m.github_requests_reported = requests;
        values.push((
            "GitHubSecondaryRateLimits",
            "Count",
            m.github_secondary_limits
                .saturating_sub(m.github_secondary_limits_reported),
        ));
        m.github_secondary_limits_reported = m.github_secondary_limits;
        if let Some(remaining) = remaining {
            values.push(("GitHubRateLimitRemaining", "Count", remaining));
        }
    }
    (per_pool, values)
}

/// The EMF lines of what a reconcile pass measured besides the pools' gauges: per pool, the
/// jobs waiting past the threshold, the fleet census and the runner deregistrations GitHub
/// refused; without dimensions, the GitHub figures (rate limit, requests, redeliveries asked,
/// failed and abandoned, jobs re-checked) since the last such lines (so a sum over time is
/// the count). One value per metric per line, far inside EMF's limits.
pub fn emf_state_lines(metrics: &Metrics, timestamp_ms: u64) -> Vec<String> {
    let (per_pool, values) = state_values(&mut metrics.lock());
    let mut lines: Vec<String> = per_pool
        .iter()
        .map(|(pool, v)| emf_values_line(&[("Pool", pool)], v, timestamp_ms))
        .collect();
    lines.push(emf_values_line(&[], &values, timestamp_ms));
    lines
}

/// The same figures as [`emf_state_lines`], under the same metric names, as one JSON object
/// for the `scalehook::state` log line (Azure's workbook reads it from `traces`):
/// `{"pools": [{"Pool": name, "LiveInstances": n, ...}], "RedeliveredDeliveries": n, ...}`.
pub fn state_json(metrics: &Metrics) -> serde_json::Value {
    let (per_pool, values) = state_values(&mut metrics.lock());
    let mut root = serde_json::Map::new();
    let pools: Vec<serde_json::Value> = per_pool
        .into_iter()
        .map(|(pool, v)| {
            let mut o = serde_json::Map::new();
            o.insert("Pool".into(), pool.into());
            for (name, _, n) in v {
                o.insert(name.into(), n.into());
            }
            serde_json::Value::Object(o)
        })
        .collect();
    root.insert("pools".into(), pools.into());
    for (name, _, n) in values {
        root.insert(name.into(), n.into());
    }
    serde_json::Value::Object(root)
}

/// One EMF line: `dimensions` (name, value) as one dimension set, each (name, unit, value)
/// a metric of the namespace.
fn emf_values_line(dimensions: &[(&str, &str)], values: &[(&str, &str, u64)], ts: u64) -> String {
    let mut root = serde_json::Map::new();
    let names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    for (k, v) in dimensions {
        root.insert((*k).into(), (*v).into());
    }
    let metrics: Vec<serde_json::Value> = values
        .iter()
        .map(|(name, unit, v)| {
            root.insert((*name).into(), (*v).into());
            serde_json::json!({"Name": name, "Unit": unit})
        })
        .collect();
    root.insert(
        "_aws".into(),
        serde_json::json!({"Timestamp": ts, "CloudWatchMetrics": [{
            "Namespace": EMF_NAMESPACE,
            "Dimensions": [names],
            "Metrics": metrics
        }]}),
    );
    serde_json::Value::Object(root).to_string()
}

/// One EMF line for a reconcile pass: `ReconcileRuns` and `ReconcileFailures` (the
/// "reconcile failing" alarm), with the report as log fields.
pub fn emf_reconcile_line(report: &ReconcileReport, timestamp_ms: u64) -> String {
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
