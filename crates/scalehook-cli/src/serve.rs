//! `scalehook serve`: the shared HTTP routes on a local axum server, over a local fleet and
//! an in-memory ledger. Transport only: every decision is the core's.

use crate::cli::ServeArgs;
use crate::setup;
use anyhow::Context as _;
use scalehook_core::{LocalFleet, MemoryLedger, Service};
use scalehook_http::WEBHOOK_PATH;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Everything that can be wrong with the set-up fails here, before a port is bound.
    let secrets = setup::secrets_from_env()?;
    let (config, source) = setup::load_config(args.config.as_deref())?;
    setup::require_local_fleets(&config)?;
    let github = setup::github_from_env(&config)?;
    let pools: Vec<String> = config.pools.iter().map(|p| p.name.clone()).collect();
    let service = Service::new(
        config,
        secrets,
        Arc::new(MemoryLedger::new()),
        Arc::new(LocalFleet::new()),
    );
    let service = Arc::new(match github {
        Some(github) => service.with_github(github),
        None => service,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(service, args, source.to_string(), pools))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    service: Arc<Service>,
    args: ServeArgs,
    source: String,
    pools: Vec<String>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    tracing::info!(
        target: "scalehook::serve",
        %addr,
        config = %source,
        pools = %pools.join(","),
        reconcile_every_secs = args.reconcile_every,
        "listening"
    );
    // Webhook-only mode was already logged by the GitHub setup (one warning, one text).
    // The one plain line on stdout: scripts (and the end-to-end tests, with port 0) read
    // the address from it.
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "scalehook listening on http://{addr}{WEBHOOK_PATH}");
        let _ = out.flush();
    }
    if let Some(secs) = args.reconcile_every {
        tokio::spawn(reconcile_loop(service.clone(), Duration::from_secs(secs)));
    }
    let app = scalehook_http::router_with_jobs(service, &[WEBHOOK_PATH]);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!(target: "scalehook::serve", "stopped");
    Ok(())
}

async fn reconcile_loop(service: Arc<Service>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    // The first tick is immediate; a pass at start-up has nothing to do yet.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        // The core logs the pass and counts it in the metrics.
        service.reconcile().await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM; in-flight deliveries then finish.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    let signal = tokio::select! {
        () = interrupt => "SIGINT",
        () = terminate => "SIGTERM",
    };
    tracing::info!(target: "scalehook::serve", signal, "shutting down");
}
