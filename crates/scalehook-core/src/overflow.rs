//! A spot pool's overflow (issue 23): while the pool's spot launches fail (no capacity for
//! its instance types), the demand it cannot meet goes to its on-demand `overflow` pool,
//! within that pool's own `max`, and comes back as soon as its launches succeed again.
//! Pure: the fleet reports the failures, the convergence pass acts on the figures.

use crate::config::PoolConfig;

/// The instances a spot pool wants and cannot have: its target less the instances it has
/// in service, while its fleet reports launch failures; none while launches succeed. An
/// instance still launching is not counted while launches fail (it is likely to fail too;
/// when it comes up, the spill drops by one).
pub fn unmet(target: u32, instances: u32, launches_failing: bool) -> u32 {
    if launches_failing {
        target.saturating_sub(instances)
    } else {
        0
    }
}

/// The overflow pool's target: its own, plus what the spot pools spill into it, within its
/// own `max` (never below its own target).
pub fn with_spill(own_target: u32, spilled: u32, max: u32) -> u32 {
    own_target.saturating_add(spilled).min(max).max(own_target)
}

/// The ledger cursor that holds what `pool` spills into `overflow`, so every function
/// instance's pass over the overflow pool sees it.
pub fn spill_cursor(overflow: &str, pool: &str) -> String {
    format!("spill:{overflow}:{pool}")
}

/// A spill cursor's value (instances); an absent or unreadable one is no spill.
pub fn spill_of(cursor: Option<&str>) -> u32 {
    cursor.and_then(|c| c.trim().parse().ok()).unwrap_or(0)
}

/// The pools whose overflow is `pool`.
pub fn spilling_into<'a>(
    pools: &'a [PoolConfig],
    pool: &'a str,
) -> impl Iterator<Item = &'a PoolConfig> + 'a {
    pools
        .iter()
        .filter(move |p| p.overflow.as_deref() == Some(pool))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn unmet_demand_spills_only_while_launches_fail() {
        // 10 wanted, 4 launched, spot exhausted: 6 go elsewhere.
        assert_eq!(unmet(10, 4, true), 6);
        // Launches succeed again: the spot pool takes its demand back.
        assert_eq!(unmet(10, 4, false), 0);
        // More instances than the target (scale-in pending): nothing unmet.
        assert_eq!(unmet(3, 5, true), 0);
    }

    #[test]
    fn spill_cursors_name_both_pools_and_read_back() {
        assert_eq!(spill_cursor("od", "spot-a"), "spill:od:spot-a");
        assert_eq!(spill_of(Some("6")), 6);
        assert_eq!(spill_of(Some("")), 0);
        assert_eq!(spill_of(Some("x")), 0);
        assert_eq!(spill_of(None), 0);
    }

    #[test]
    fn the_overflow_pool_stays_within_its_own_max() {
        assert_eq!(with_spill(2, 6, 20), 8);
        assert_eq!(with_spill(2, 60, 20), 20);
        // Its own demand is never cut by the spill.
        assert_eq!(with_spill(5, 0, 20), 5);
        assert_eq!(with_spill(2, u32::MAX, 20), 20);
    }

    #[test]
    fn spilling_into_names_the_spot_pools_of_an_overflow_pool() {
        let c = Config::from_toml(
            "[[pools]]\nname = \"spot-a\"\nlabels = [\"a\"]\nmax = 5\ncapacity = \"spot\"\noverflow = \"od\"\n\
             [[pools]]\nname = \"spot-b\"\nlabels = [\"b\"]\nmax = 5\ncapacity = \"spot\"\noverflow = \"od\"\n\
             [[pools]]\nname = \"od\"\nlabels = [\"c\"]\nmax = 5\n",
        )
        .expect("config");
        let names: Vec<&str> = spilling_into(&c.pools, "od")
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["spot-a", "spot-b"]);
        assert_eq!(spilling_into(&c.pools, "spot-a").count(), 0);
    }
}
