# Observability checks: the Prometheus rules for `scalehook serve` (deploy/prometheus) pass
# `promtool check rules` and their unit tests (`promtool test rules`), and the end-to-end
# test tests/tests/metrics_http.rs pipes a populated server's /metrics through
# `promtool check metrics` (SCALEHOOK_PROMTOOL makes that check required, not optional).
# promtool comes from Debian's `prometheus` package, installed once (root, or via sudo).

PROMTOOL ?= promtool
export SCALEHOOK_PROMTOOL := $(PROMTOOL)

TEST_DEPS += obs-deps
TEST_STEPS += obs-test

.PHONY: obs-deps obs-test

obs-deps: ## install promtool (Debian package prometheus) if it is missing
	@command -v $(PROMTOOL) >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@$(PROMTOOL) --version | head -1

obs-test: obs-deps ## promtool check + unit tests of the Prometheus alerting rules
	$(PROMTOOL) check rules deploy/prometheus/scalehook.rules.yml
	cd deploy/prometheus && $(PROMTOOL) test rules scalehook.rules.test.yml
