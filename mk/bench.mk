# Benchmarks (issue 7): criterion benches of the per-delivery path, then process-level
# figures for the three binaries (cold start, peak RSS, zip sizes, `serve` throughput under
# wrk), written to bench/RESULTS.md. Not part of `make test`; it takes several minutes (the
# release and musl builds most of it). See bench/README.md.
#
#   make bench                 everything, then bench/RESULTS.md
#   make bench-criterion       only the criterion benches (target/criterion/)
#   make bench-measure         only the process-level figures (binaries already built)
#   BENCH_RUNS=20 BENCH_DURATION=10 BENCH_CONNECTIONS=32   knobs of bench-measure

.PHONY: bench bench-deps bench-build bench-criterion bench-measure

BENCH_RUNS ?= 20
BENCH_DURATION ?= 10
BENCH_CONNECTIONS ?= 32
BENCH_CRITERION_ARGS ?= --warm-up-time 2 --measurement-time 5
BENCH_SERVE := target/release/scalehook

bench: bench-deps bench-build bench-criterion bench-measure ## criterion + cold start/RSS/zip/throughput -> bench/RESULTS.md

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
