//! The pools the trace tests are worked out for: the embedded default's, spelled out so a
//! change of the default does not silently change what the tests check.

use scalehook_core::Config;

pub const POOLS: &str = r#"
[[pools]]
name = "linux-x64"
labels = ["self-hosted", "linux", "x64"]
min = 0
max = 20
standby = 1
runners_per_instance = 1

[[pools]]
name = "k8s"
labels = ["self-hosted", "k8s"]
min = 0
max = 10
standby = 0
runners_per_instance = 2
"#;

pub fn config() -> Config {
    Config::from_toml(POOLS).expect("valid pools")
}
