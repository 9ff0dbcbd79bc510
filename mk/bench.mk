# Benchmarks (issue 7): criterion benches of the per-delivery path, then process-level
# figures for the three binaries (cold start, peak RSS, zip sizes, `serve` throughput under
# wrk), written to bench/RESULTS.md. Not part of `make test`; it takes several minutes (the
# release and musl builds most of it). See bench/README.md.
#
#   make bench                 everything, then bench/RESULTS.md
#   make bench-criterion       only the criterion benches (target/criterion/)
#   make bench-measure         only the process-level figures (binaries already built)
#   make bench-burst           8 services in a 300-job burst: deliveries/s (memory ledger),
#                              fleet calls per delivery (memory, DynamoDB/moto, Table/Azurite)
#   make bench-round-trips     each cloud request on one delivery's path, AWS and Azure
#   make bench-github-reads    GitHub requests and wall time per scale-in and per reconcile,
#                              whole-org listing vs scoped reads, 100/1,000/10,000 runners
#   make bench-answer-times    each delivery kind's answer time, p50/p99, with a latency per
#                              cloud and GitHub request (the round-trip tests with the GitHub
#                              App on the GitHub double, all behind delaying proxies)
#   BENCH_ANSWER_JOBS=20       jobs per mode of bench-answer-times
#   make bench-burst-hand-on   issue 23's burst (16 services, 200 jobs, max 100, slow fleet):
#                              capacity against target after the completions, without and
#                              with the hand-on of a pass's left work
#   BENCH_HAND_ON_FLEET_MS=120 the fleet's latency per call in bench-burst-hand-on
#   BENCH_RUNS=20 BENCH_DURATION=10 BENCH_CONNECTIONS=32   knobs of bench-measure
#   BENCH_BURST_RUNS=10 BENCH_BURST_SLOW_RUNS=3 BENCH_BURST_FLEET_MS=50   knobs of bench-burst-memory
#   BENCH_GITHUB_LATENCY_MS=300   GitHub's latency per request in bench-github-reads
#
# The burst and round-trip targets write the `SCALEHOOK-BENCH {json}` lines their bench or
# test prints into target/bench/*.log, then re-render bench/RESULTS.md from those logs and
# the last bench-measure run (`measure.py --render-only`).

.PHONY: bench bench-deps bench-build bench-criterion bench-measure bench-burst \
	bench-burst-memory bench-burst-cloud bench-burst-hand-on bench-round-trips bench-github-reads \
	bench-answer-times

BENCH_RUNS ?= 20
BENCH_DURATION ?= 10
BENCH_CONNECTIONS ?= 32
BENCH_CRITERION_ARGS ?= --warm-up-time 2 --measurement-time 5
BENCH_SERVE := target/release/scalehook

bench: bench-deps bench-build bench-criterion bench-burst bench-round-trips bench-github-reads bench-answer-times bench-measure ## criterion, bursts, round trips, GitHub reads, answer times, cold start/RSS/zip/throughput -> bench/RESULTS.md

bench-deps: ## install wrk (Debian) if it is missing
	@command -v wrk >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; \
	  else echo "wrk is needed: apt-get install wrk"; exit 1; fi; }
	@command -v wrk >/dev/null

# The zips are what gets deployed: measure.py takes bootstrap and handler out of them.
bench-build: lambda-zip azure-zip
	$(CARGO) build --release --locked -p scalehook-cli --bin scalehook

bench-criterion: ## the criterion benches of the core (verify, parse, route, ledger, policy, delivery)
	$(CARGO) bench --locked -p scalehook-core --bench delivery -- $(BENCH_CRITERION_ARGS)

bench-measure: bench-deps ## cold start, RSS, zip sizes and serve throughput of built binaries -> bench/RESULTS.md
	python3 bench/measure.py --runs $(BENCH_RUNS) --duration $(BENCH_DURATION) \
	  --connections $(BENCH_CONNECTIONS) \
	  --serve $(BENCH_SERVE) --lambda-zip target/lambda/scalehook-x86_64.zip \
	  --azure-zip target/azure/scalehook-azure.zip \
	  --command "make bench   # = make lambda-zip azure-zip, then:" \
	  --command "$(CARGO) build --release --locked -p scalehook-cli --bin scalehook" \
	  --command "$(CARGO) bench --locked -p scalehook-core --bench delivery -- $(BENCH_CRITERION_ARGS)"

BENCH_LOGS := target/bench
BENCH_BURST_RUNS ?= 10
BENCH_BURST_SLOW_RUNS ?= 3
BENCH_BURST_FLEET_MS ?= 50
BENCH_RENDER := python3 bench/measure.py --render-only
# `{ header; load; command; load; } | tee log`: the command's output with what ran and the
# load average before and after (measure.py prints both under the figures).
bench_log = set -o pipefail; mkdir -p $(BENCH_LOGS); { echo "SCALEHOOK-BENCH-COMMAND $(1)"; \
	echo "SCALEHOOK-BENCH-LOAD $$(cut -d' ' -f1-3 /proc/loadavg)"; $(1); \
	echo "SCALEHOOK-BENCH-LOAD $$(cut -d' ' -f1-3 /proc/loadavg)"; } 2>&1 | tee $(BENCH_LOGS)/$(2).log

bench-burst: bench-burst-memory bench-burst-cloud bench-burst-hand-on ## 300-job burst over 8 services: deliveries/s and fleet calls per delivery -> bench/RESULTS.md

bench-burst-memory: ## the burst on the memory ledger: deliveries/s (median, range), with and without fleet latency
	@$(call bench_log,BENCH_BURST_RUNS=$(BENCH_BURST_RUNS) BENCH_BURST_SLOW_RUNS=$(BENCH_BURST_SLOW_RUNS) BENCH_BURST_FLEET_MS=$(BENCH_BURST_FLEET_MS) $(CARGO) bench --locked -p scalehook-core --bench burst,burst-memory)
	$(BENCH_RENDER)

bench-burst-cloud: aws-test-deps azure-deps ## the burst tests on moto (DynamoDB) and Azurite (Table): fleet calls per delivery
	@$(call bench_log,$(CARGO) test --locked -p scalehook-aws --test burst -- --nocapture,burst-aws)
	@$(call bench_log,$(CARGO) test --locked -p scalehook-azure --test burst -- --nocapture,burst-azure)
	$(BENCH_RENDER)

bench-round-trips: aws-test-deps azure-deps ## cloud requests per delivery kind, in order, and how many are sequential (AWS, Azure)
	@$(call bench_log,$(CARGO) test --locked -p scalehook-aws --test round_trips -- --ignored --nocapture,round-trips-aws)
	@$(call bench_log,$(CARGO) test --locked -p scalehook-azure --test round_trips -- --ignored --nocapture,round-trips-azure)
	$(BENCH_RENDER)

BENCH_GITHUB_LATENCY_MS ?= 300

bench-github-reads: github-test-deps ## GitHub calls and wall time per scale-in / reconcile at 100, 1,000, 10,000 org runners (double, 300 ms per request)
	@$(call bench_log,BENCH_GITHUB_LATENCY_MS=$(BENCH_GITHUB_LATENCY_MS) $(CARGO) test --locked -p scalehook-github --test scoped_reads -- --ignored --nocapture,github-reads)
BENCH_ANSWER_JOBS ?= 20
bench-answer-times: aws-test-deps azure-deps github-test-deps ## answer time p50/p99 per delivery kind with cloud and GitHub latencies (AWS, Azure)
	@$(call bench_log,SCALEHOOK_BENCH_LATENCY=1 SCALEHOOK_BENCH_JOBS=$(BENCH_ANSWER_JOBS) $(CARGO) test --locked -p scalehook-aws --test round_trips -- --ignored --nocapture,answer-times-aws)
	@$(call bench_log,SCALEHOOK_BENCH_LATENCY=1 SCALEHOOK_BENCH_JOBS=$(BENCH_ANSWER_JOBS) $(CARGO) test --locked -p scalehook-azure --test round_trips -- --ignored --nocapture,answer-times-azure)
	$(BENCH_RENDER)

BENCH_HAND_ON_FLEET_MS ?= 120
bench-burst-hand-on: ## issue 23's burst in memory: capacity vs target after completions, without/with hand-on
	@$(call bench_log,BENCH_HAND_ON_FLEET_MS=$(BENCH_HAND_ON_FLEET_MS) $(CARGO) test --locked -p scalehook-core --test hand_on -- --ignored --nocapture,burst-hand-on)
	$(BENCH_RENDER)
