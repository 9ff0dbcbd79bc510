//! `handler`: the Azure Functions custom handler. The host starts it with
//! `FUNCTIONS_CUSTOMHANDLER_PORT` and the app settings in the environment, forwards the
//! webhook's HTTP request to `/api/webhook` and POSTs timer invocations to `/reconcile`.
//! Logs are JSON lines on stdout, which the host forwards to Application Insights.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SCALEHOOK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("handler: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "scalehook::azure", error = %e, "handler stopped");
            eprintln!("handler: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let app = scalehook_azure::build(|k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
    // The host calls the handler on the loopback interface; the port is never public.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, app.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(
        target: "scalehook::azure",
        %addr,
        pools = app.service.config().pools.len(),
        "handler listening"
    );
    // Create the table in the background: start-up must stay fast (the host allows 60 s),
    // and a table that cannot be created shows as ledger errors on the deliveries.
    let ledger = app.ledger.clone();
    tokio::spawn(async move {
        if let Err(e) = ledger.client().ensure_table().await {
            tracing::warn!(target: "scalehook::azure", error = %e, "could not create the ledger table");
        }
    });
    axum::serve(listener, scalehook_azure::router(app.service))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("server: {e}"))
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
