//! `simulate --suggest`: per pool, the cheapest `standby` and `max` under which scalehook
//! keeps the p95 queue wait at or below a target (and interrupts and strands no job), by
//! simulating the trace over a bounded grid. Pools do not share runners (the configuration
//! refuses overlapping labels in one runner group), so one run per grid point gives every
//! pool's figures at once. Deterministic: every run uses the options' seed.

use crate::{simulate, Policy, PolicyFigures, SimError, SimOptions, Workload};
use scalehook_core::Config;
use std::fmt::Write as _;

/// The largest standby tried.
pub const MAX_STANDBY: u32 = 8;
/// The `max` values tried: the pool's own, then these multiples of it (rounded up).
pub const MAX_FACTORS: [f64; 3] = [1.0, 1.5, 2.0];

/// One pool's setting and what scalehook did with it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Setting {
    pub standby: u32,
    pub max: u32,
    pub p95_wait_secs: u64,
    pub interrupted: u32,
    pub stranded: u32,
    pub cost: f64,
}

/// The search's answer for one pool.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Suggestion {
    pub pool: String,
    /// The configuration's own setting.
    pub current: Setting,
    /// The cheapest setting that meets the target; else the one with the lowest p95 wait.
    pub best: Setting,
    pub meets_target: bool,
}

/// The search: every pool's suggestion, the target, the runs made and the policy measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Suggestions {
    pub target_p95_secs: u64,
    /// `scalehook` with a `[github]` section, else `scalehook-webhook-only`.
    pub policy: Policy,
    pub runs: u32,
    pub pools: Vec<Suggestion>,
}

fn setting(standby: u32, max: u32, f: &PolicyFigures) -> Setting {
    Setting {
        standby,
        max,
        p95_wait_secs: f.queue_wait_secs.p95,
        interrupted: f.interrupted,
        stranded: f.stranded,
        cost: f.cost,
    }
}

fn meets(s: &Setting, target: u64) -> bool {
    s.p95_wait_secs <= target && s.interrupted == 0 && s.stranded == 0
}

/// Searches, for every pool jobs route to, `max` in [`MAX_FACTORS`] x the pool's and
/// `standby` from 0 up to [`MAX_STANDBY`] (and at most `max`), stopping for a `max` once
/// every pool met the target.
pub async fn suggest(
    config: &Config,
    workload: &Workload,
    options: &SimOptions,
    target_p95_secs: u64,
) -> Result<Suggestions, SimError> {
    let policy = if config.github.is_some() {
        Policy::Scalehook
    } else {
        Policy::ScalehookWebhookOnly
    };
    let figures_of = |report: &crate::SimReport, pool: &str| {
        report.pool(pool).and_then(|p| p.policy(policy)).cloned()
    };
    let options = &SimOptions {
        only: Some(policy),
        ..*options
    };
    let mut runs = 1;
    let now = simulate(config, workload.clone(), options).await?;
    let mut pools: Vec<Suggestion> = Vec::new();
    for p in &config.pools {
        let Some(f) = figures_of(&now, &p.name) else {
            continue;
        };
        let current = setting(p.standby, p.max, &f);
        pools.push(Suggestion {
            pool: p.name.clone(),
            best: current.clone(),
            meets_target: meets(&current, target_p95_secs),
            current,
        });
    }
    for factor in MAX_FACTORS {
        let mut met = vec![false; pools.len()];
        for standby in 0..=MAX_STANDBY {
            let mut trial = config.clone();
            let mut any = false;
            for p in &mut trial.pools {
                let max = ((f64::from(p.max) * factor).ceil() as u32).max(1);
                p.max = max;
                p.standby = standby.min(max);
                p.min = p.min.min(max);
                any |= standby <= max;
            }
            if !any {
                break;
            }
            let report = simulate(&trial, workload.clone(), options).await?;
            runs += 1;
            for (n, s) in pools.iter_mut().enumerate() {
                let Some(pool) = trial.pools.iter().find(|p| p.name == s.pool) else {
                    continue;
                };
                let Some(f) = figures_of(&report, &s.pool) else {
                    continue;
                };
                if met[n] || standby > pool.max {
                    continue;
                }
                let candidate = setting(pool.standby, pool.max, &f);
                let better = if meets(&candidate, target_p95_secs) {
                    met[n] = true;
                    !s.meets_target || candidate.cost < s.best.cost
                } else {
                    !s.meets_target && candidate.p95_wait_secs < s.best.p95_wait_secs
                };
                if better {
                    s.meets_target = meets(&candidate, target_p95_secs);
                    s.best = candidate;
                }
            }
            if met.iter().all(|m| *m) {
                break;
            }
        }
    }
    Ok(Suggestions {
        target_p95_secs,
        policy,
        runs,
        pools,
    })
}

impl Suggestions {
    /// What to paste: per pool, the keys to set in its `[[pools]]` entry, with the figures.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# simulate --suggest: the cheapest standby and max per pool with {} p95 queue wait <= {} s \
             and no interrupted or stranded job ({} simulations)",
            self.policy.name(),
            self.target_p95_secs,
            self.runs
        );
        for s in &self.pools {
            let (b, c) = (&s.best, &s.current);
            let _ = writeln!(out);
            if s.meets_target {
                let _ = writeln!(
                    out,
                    "# pool {}: p95 {} s, cost {:.2} (now standby {}, max {}: p95 {} s, cost {:.2})",
                    s.pool, b.p95_wait_secs, b.cost, c.standby, c.max, c.p95_wait_secs, c.cost
                );
            } else {
                let _ = writeln!(
                    out,
                    "# pool {}: no setting tried meets the target; the lowest p95 is {} s (cost {:.2}, \
                     {} interrupted, {} stranded); now standby {}, max {}: p95 {} s",
                    s.pool, b.p95_wait_secs, b.cost, b.interrupted, b.stranded, c.standby, c.max, c.p95_wait_secs
                );
            }
            let _ = writeln!(
                out,
                "[[pools]]\nname = \"{}\"   # keep its other keys",
                s.pool
            );
            let _ = writeln!(out, "standby = {}\nmax = {}", b.standby, b.max);
        }
        out
    }
}
