//! The Lambda function (`provided.al2023`, handler `bootstrap`): webhook deliveries from a
//! Function URL / HTTP API, and the scheduled reconcile pass, in one binary.
//!
//! stdout carries only the core's CloudWatch EMF lines (one JSON object per line); every
//! other log line is JSON on stderr. Lambda captures both into CloudWatch Logs.

use lambda_runtime::tower::layer::layer_fn;
use lambda_runtime::{layers::TracingLayer, service_fn, LambdaEvent, LambdaInvocation, Runtime};
use scalehook_aws::{lambda, provision, sdk, Settings};
use scalehook_core::Service;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use tracing_subscriber::EnvFilter;

fn init_logging() {
    // AWS_LAMBDA_LOG_LEVEL is Lambda's own log-level setting; RUST_LOG overrides it.
    let level = match std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        l @ ("trace" | "debug" | "info" | "warn" | "error") => l.to_string(),
        "fatal" => "error".into(),
        _ => "info".into(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{level},aws_smithy_runtime=warn,aws_config=warn"))
    });
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(true)
        .init();
}

fn main() -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    // Configuration errors end the process before the first event: Lambda reports the
    // init failure, and the log line says which variable or pool is wrong.
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "scalehook cannot start");
            return ExitCode::FAILURE;
        }
    };
    let pools = settings.config.pools.len();
    let sdk = sdk::loader().load().await;
    // Launch lifecycle events of the runner groups (infra/aws/runners): clients only, no call.
    let launch = Arc::new(provision::LaunchHook::from_sdk(&sdk));
    let service = match settings.build(&sdk).await {
        // With a GitHub App, reconcile also deletes JIT parameters no instance took.
        Ok(s) if s.github().enabled() => Arc::new(s.with_config_housekeeping(launch.clone())),
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "scalehook cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(pools, "scalehook ready");
    let hand_on = Arc::clone(&service);
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let service = Arc::clone(&service);
        let launch = Arc::clone(&launch);
        async move { lambda::invoke_with(&service, Some(&launch), event.payload).await }
    });
    let runtime = Runtime::new(handler)
        .layer(TracingLayer::new())
        .layer(layer_fn(move |inner| HandOn {
            inner,
            service: Arc::clone(&hand_on),
        }));
    match runtime.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "Lambda runtime loop ended");
            ExitCode::FAILURE
        }
    }
}

/// Around the runtime's handling of one invocation (which ends once the answer is posted to
/// the Runtime API): then, before the runtime asks for the next event, the passes that
/// finish what a pass stopped at its time budget left (`Service::continue_left_work`). The
/// invocation is still running, so the environment is not frozen mid-pass; the function's
/// timeout bounds it.
struct HandOn<S> {
    inner: S,
    service: Arc<Service>,
}

type Invocation = Pin<Box<dyn Future<Output = Result<(), lambda_runtime::Error>>>>;

impl<S> lambda_runtime::Service<LambdaInvocation> for HandOn<S>
where
    S: lambda_runtime::Service<LambdaInvocation, Response = (), Error = lambda_runtime::Error>,
    S::Future: 'static,
{
    type Response = ();
    type Error = lambda_runtime::Error;
    type Future = Invocation;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
        let answered = self.inner.call(invocation);
        let service = Arc::clone(&self.service);
        Box::pin(async move {
            let result = answered.await;
            if service.has_work_left() {
                service.continue_left_work().await;
            }
            result
        })
    }
}
