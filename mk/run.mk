# `make run`: `scalehook serve` with the embedded default config (unless CONFIG=FILE) and a
# demo webhook secret (unless SCALEHOOK_WEBHOOK_SECRET is set), on 127.0.0.1:8080 (LISTEN=ADDR).
# `make e2e`: the end-to-end tests (scalehook serve + replay over HTTP); part of `make test`
# through `cargo test --workspace`.

SCALEHOOK_DEMO_SECRET := scalehook-demo-secret
LISTEN ?= 127.0.0.1:8080
CONFIG ?=

.PHONY: run e2e
run: ## serve the embedded default pools on 127.0.0.1:8080 with a demo secret (CONFIG=, LISTEN=)
	$(CARGO) build --locked -p scalehook-cli
	@secret="$${SCALEHOOK_WEBHOOK_SECRET:-$(SCALEHOOK_DEMO_SECRET)}"; \
	if [ -z "$${SCALEHOOK_WEBHOOK_SECRET}" ]; then \
	  echo "scalehook: demo webhook secret: $$secret (set SCALEHOOK_WEBHOOK_SECRET to use your own)"; \
	fi; \
	echo "scalehook: replay the fixtures from a second terminal with:"; \
	echo "  SCALEHOOK_WEBHOOK_SECRET='$$secret' $(CARGO) run -q -p scalehook-cli -- replay --url http://$(LISTEN)/webhook fixtures/github/"; \
	echo "scalehook: pools and counts: curl http://$(LISTEN)/status   metrics: curl http://$(LISTEN)/metrics   stop: Ctrl-C"; \
	config_args=(); \
	if [ -n "$(CONFIG)" ]; then config_args=(--config "$(CONFIG)"); fi; \
	SCALEHOOK_WEBHOOK_SECRET="$$secret" $(if $(CONFIG),,env -u SCALEHOOK_CONFIG -u SCALEHOOK_CONFIG_TOML) \
	  $(CARGO) run -q --locked -p scalehook-cli -- serve --listen "$(LISTEN)" "$${config_args[@]}"

e2e: ## end-to-end tests: scalehook serve on a free port, replay over HTTP, bad inputs
	$(CARGO) build --locked -p scalehook-cli
	$(CARGO) test --locked -p scalehook-e2e
