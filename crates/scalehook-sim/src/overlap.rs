//! Label routing on GitHub's side. scalehook routes a job to the first pool having all its
//! labels; GitHub gives it to any idle runner of the job's runner group having all its
//! labels. Where one pool's labels contain another's in one runner group (which the
//! configuration refuses: [`scalehook_core::config::label_overlaps`]), the simulation lets
//! the containing pool's runners take the other pool's jobs, so the cost shows.

use scalehook_core::config::same_runner_group;
use scalehook_core::Config;

/// The pools other than `pool` whose runners GitHub may give this job to: in `pool`'s
/// runner group, with every label of the job (case-insensitively). A label-less job
/// (`runs-on: group:`) is left to its own pool.
pub fn takers(config: &Config, pool: usize, payload: &serde_json::Value) -> Vec<usize> {
    let labels: Vec<&str> = payload["workflow_job"]["labels"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l.as_str()).collect())
        .unwrap_or_default();
    let Some(own) = config.pools.get(pool) else {
        return Vec::new();
    };
    if labels.is_empty() {
        return Vec::new();
    }
    config
        .pools
        .iter()
        .enumerate()
        .filter(|&(n, other)| {
            n != pool
                && same_runner_group(own, other)
                && labels
                    .iter()
                    .all(|l| other.labels.iter().any(|o| o.eq_ignore_ascii_case(l)))
        })
        .map(|(n, _)| n)
        .collect()
}
