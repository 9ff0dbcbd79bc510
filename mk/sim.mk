# `scalehook simulate` (crates/scalehook-sim): the day-long trace and the chart in docs/.

SIM_DAY_TRACE := fixtures/traces/day/day.jsonl

.PHONY: sim-day sim-docs sim-trace-check
TEST_STEPS += sim-trace-check

sim-day: ## regenerate the day-long simulate trace (fixed seed) from its script
	python3 fixtures/traces/day/generate.py --out $(SIM_DAY_TRACE)

SIM_ISSUE_OPTIONS := --runners ephemeral --lose-deliveries 0.02 --delivery-delay-seconds 5 --seed 1

sim-docs: ## simulate the day trace: print docs/simulate.md's two tables, redraw docs/simulate-day.svg
	$(CARGO) run --locked -q -p scalehook-cli -- simulate $(SIM_DAY_TRACE) --svg docs/simulate-day.svg
	$(CARGO) run --locked -q -p scalehook-cli -- simulate $(SIM_DAY_TRACE) $(SIM_ISSUE_OPTIONS)

sim-trace-check: ## the committed day trace is what its script generates
	@tmp=$$(mktemp) && python3 fixtures/traces/day/generate.py --out $$tmp && \
	  if cmp -s $$tmp $(SIM_DAY_TRACE); then rm -f $$tmp; echo "sim-trace-check: $(SIM_DAY_TRACE) matches its generator"; \
	  else rm -f $$tmp; echo "sim-trace-check: $(SIM_DAY_TRACE) differs from generate.py's output: run make sim-day"; exit 1; fi
