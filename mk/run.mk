# `make run`: the local server with the embedded default config and a demo secret.
.PHONY: run
run: ## serve the embedded default pools on 127.0.0.1:8080 with a demo secret
	@echo "scalehook: no local server yet (see issue: Local server, replay and sign)."
	@echo "It will serve POST /webhook, GET /healthz and GET /metrics on 127.0.0.1:8080"
	@echo "with these pools:"; sed -n '/^\[\[pools\]\]/,$$p' crates/scalehook-core/src/default-config.toml
