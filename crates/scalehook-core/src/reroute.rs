//! Where a re-run of an interrupted job runs. A spot reclaim can interrupt a re-run too, and
//! a job is re-run at most once, so the re-run of a job a reclaim interrupted belongs on
//! on-demand capacity: the `overflow` pool of the pool its labels route to.
//!
//! GitHub's signal is the re-run itself: a new `workflow_job` (new job id) with the same
//! `run_id` and job `name` and `run_attempt` incremented. Which jobs were interrupted is
//! what the ledger remembers; this module only decides, given that memory.

use crate::config::{Config, PoolConfig};
use std::collections::HashSet;

/// A job as GitHub names it across attempts: its workflow run and its name (matrix values
/// included, so unique within the run).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    pub run_id: u64,
    pub name: String,
}

/// One attempt of a job, as its `workflow_job` payload says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt<'a> {
    pub run_id: u64,
    pub name: Option<&'a str>,
    /// `None` in payloads older than the field: a first attempt.
    pub run_attempt: Option<u64>,
}

/// The pool for a job: the pool its labels route to ([`Config::route`]), except that a
/// re-run (`run_attempt` above 1) of a job in `interrupted` goes to that pool's `overflow`
/// pool, which the configuration checks is on-demand. A first attempt, a job without a
/// name, a re-run of a job that was not interrupted (a person re-running a failed test),
/// or a pool without `overflow` keeps the label route.
pub fn route_attempt<'c, S: AsRef<str>>(
    config: &'c Config,
    labels: &[S],
    attempt: Attempt<'_>,
    interrupted: &HashSet<JobKey>,
) -> Option<&'c PoolConfig> {
    let pool = config.route(labels)?;
    let Some(overflow) = pool.overflow.as_deref() else {
        return Some(pool);
    };
    let rerun = attempt.run_attempt.is_some_and(|a| a > 1);
    let was_interrupted = attempt.name.is_some_and(|name| {
        interrupted.contains(&JobKey {
            run_id: attempt.run_id,
            name: name.to_string(),
        })
    });
    if rerun && was_interrupted {
        return config.pool(overflow).or(Some(pool));
    }
    Some(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[pools]]
name = "spot"
labels = ["self-hosted", "linux"]
max = 5
capacity = "spot"
rerun_interrupted = true
overflow = "od"

[[pools]]
name = "od"
labels = ["self-hosted", "linux", "on-demand"]
max = 5

[[pools]]
name = "plain"
labels = ["self-hosted", "gpu"]
max = 5
"#;

    fn pick(labels: &[&str], name: Option<&str>, run_attempt: Option<u64>) -> Option<String> {
        let config = Config::from_toml(TWO).expect("valid");
        let interrupted: HashSet<JobKey> = [(7, "build"), (7, "gpu")]
            .into_iter()
            .map(|(run_id, name)| JobKey {
                run_id,
                name: name.into(),
            })
            .collect();
        let attempt = Attempt {
            run_id: 7,
            name,
            run_attempt,
        };
        route_attempt(&config, labels, attempt, &interrupted).map(|p| p.name.clone())
    }

    #[test]
    fn the_rerun_of_an_interrupted_job_goes_to_the_overflow_pool() {
        let linux = ["self-hosted", "linux"];
        assert_eq!(pick(&linux, Some("build"), Some(2)).as_deref(), Some("od"));
        assert_eq!(pick(&linux, Some("build"), Some(5)).as_deref(), Some("od"));
    }

    #[test]
    fn everything_else_keeps_the_label_route() {
        let linux = ["self-hosted", "linux"];
        for (name, attempt, why) in [
            (Some("build"), Some(1), "first attempt"),
            (Some("build"), None, "no run_attempt: a first attempt"),
            (Some("test"), Some(2), "re-run of a job not interrupted"),
            (None, Some(2), "no name: cannot be matched"),
        ] {
            assert_eq!(
                pick(&linux, name, attempt).as_deref(),
                Some("spot"),
                "{why}"
            );
        }
        assert_eq!(
            pick(&["self-hosted", "gpu"], Some("gpu"), Some(2)).as_deref(),
            Some("plain"),
            "no overflow pool"
        );
        assert_eq!(pick(&["windows"], Some("build"), Some(2)), None);
    }
}
