//! `GitHubApp` against the GitHub API test double (crates/scalehook-github-double), which
//! checks every request against GitHub's OpenAPI description and fails the test on any
//! mismatch when dropped.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use scalehook_core::github::{GitHub, GitHubError, RunnerRemoval};
use scalehook_core::{Config, RecordingSleeper, WebhookSecrets};
use scalehook_github::{AppKey, Budget, GitHubApp, SetupError, APP_KEY_ENV};
use scalehook_github_double::{
    DoubleOptions, GitHubDouble, RunnerState, OTHER_KEY, TEST_APP_KEY, TEST_APP_KEY_PKCS8,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const POOL: &str = "[[pools]]\nname = \"linux\"\nlabels = [\"self-hosted\", \"linux\", \"x64\"]\nmax = 5\nrunner_group_id = 3\n";

fn config(double: &GitHubDouble, scope: &str) -> Config {
    Config::from_toml(&format!("{POOL}\n{}", double.config_toml(scope))).expect("valid config")
}

fn client_with(double: &GitHubDouble, scope: &str, key: &str, budget: Budget) -> GitHubApp {
    let config = config(double, scope);
    let key = AppKey::from_pem(key, APP_KEY_ENV).expect("test key");
    GitHubApp::new(config.github.as_ref().expect("[github]"), key, budget)
}

fn client(double: &GitHubDouble, scope: &str) -> GitHubApp {
    client_with(double, scope, TEST_APP_KEY, Budget::default())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn jwt_has_githubs_shape_and_verifies_with_the_public_key() {
    let key = AppKey::from_pem(TEST_APP_KEY, APP_KEY_ENV).expect("PKCS#1");
    let t = now();
    let jwt = key.jwt(4242, t).expect("signed");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    let iat = claims["iat"].as_u64().expect("iat");
    let exp = claims["exp"].as_u64().expect("exp");
    assert_eq!(iat, t - 60, "iat 60 s in the past");
    assert!(
        exp - iat <= 600 && exp > t,
        "exp within 10 min: {iat} {exp}"
    );
    assert_eq!(claims["iss"], "4242");
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        key.public_key_der(),
    );
    let signed = format!("{}.{}", parts[0], parts[1]);
    public
        .verify(signed.as_bytes(), &sig)
        .expect("signature verifies");
    assert!(public.verify(b"something else", &sig).is_err());

    // PKCS#8 of the same key: same public key.
    let pkcs8 = AppKey::from_pem(TEST_APP_KEY_PKCS8, APP_KEY_ENV).expect("PKCS#8");
    assert_eq!(pkcs8.public_key_der(), key.public_key_der());
    // A PEM pasted with literal \n escapes, and with CRLF.
    let escaped = TEST_APP_KEY.trim().replace('\n', "\\n");
    assert!(AppKey::from_pem(&escaped, APP_KEY_ENV).is_ok());
    assert!(AppKey::from_pem(&TEST_APP_KEY.replace('\n', "\r\n"), APP_KEY_ENV).is_ok());
}

#[test]
fn the_key_never_shows_in_debug_output() {
    let key = AppKey::from_pem(TEST_APP_KEY, APP_KEY_ENV).expect("key");
    let shown = format!("{key:?}");
    assert!(shown.contains("redacted"), "{shown}");
    for line in TEST_APP_KEY.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(&line[..16]), "{shown}");
    }
    let config = Config::from_toml(&format!(
        "{POOL}[github]\napp_id = 1\ninstallation_id = 2\norganization = \"acme\"\n"
    ))
    .expect("config");
    let app = GitHubApp::new(config.github.as_ref().expect("gh"), key, Budget::default());
    let shown = format!("{app:?}");
    assert!(
        shown.contains("redacted") && !shown.contains("MII"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installation_token_is_cached_and_refreshed_once_on_401() {
    let double = GitHubDouble::start();
    double.add_runner("acme", "linux-i-1", RunnerState::Idle);
    let gh = client(&double, "acme");
    assert_eq!(gh.runners().await.expect("list").len(), 1);
    assert_eq!(gh.runners().await.expect("list").len(), 1);
    assert_eq!(
        double.count("apps/create-installation-access-token"),
        1,
        "cached"
    );

    double.revoke_tokens();
    assert_eq!(gh.runners().await.expect("refreshed on 401").len(), 1);
    assert_eq!(double.count("apps/create-installation-access-token"), 2);
    double.expire_tokens();
    assert_eq!(gh.runners().await.expect("refreshed on 401").len(), 1);
    assert_eq!(double.count("apps/create-installation-access-token"), 3);
    let log = double.requests();
    assert_eq!(
        log.iter().filter(|r| r.status == 401).count(),
        2,
        "one refused request per revocation"
    );

    // A token that expires within the refresh margin (5 min) is not reused.
    double.set_token_lifetime(200);
    double.expire_tokens();
    gh.runners().await.expect("list");
    assert_eq!(double.count("apps/create-installation-access-token"), 4);
    gh.runners().await.expect("list");
    gh.runners().await.expect("list");
    assert_eq!(double.count("apps/create-installation-access-token"), 6);
    let refused = double.requests().iter().filter(|r| r.status == 401).count();
    assert_eq!(refused, 3, "replaced before expiry, without a 401");

    // Every installation call used the token, every token exchange the JWT.
    for r in double.requests() {
        let want = if r.path.starts_with("/app/") {
            "jwt"
        } else {
            "installation"
        };
        assert_eq!(r.auth, want, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_from_another_key_is_refused() {
    let double = GitHubDouble::start();
    let gh = client_with(&double, "acme", OTHER_KEY, Budget::default());
    match gh.runners().await {
        Err(GitHubError::Unauthorized(msg)) => {
            assert!(msg.contains("401"), "{msg}");
            assert!(!msg.contains("BEGIN"), "{msg}");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_300_runners_in_three_pages() {
    let double = GitHubDouble::start();
    for i in 0..300 {
        let state = match i % 3 {
            0 => RunnerState::Idle,
            1 => RunnerState::Busy,
            _ => RunnerState::Offline,
        };
        double.add_runner("acme", &format!("linux-i-{i:04}"), state);
    }
    double.add_runner("other-org", "linux-i-x", RunnerState::Idle);
    let gh = client(&double, "acme");
    let runners = gh.runners().await.expect("list");
    assert_eq!(runners.len(), 300);
    assert_eq!(runners.iter().filter(|r| r.busy).count(), 100);
    assert_eq!(runners.iter().filter(|r| !r.online).count(), 100);
    assert!(runners.iter().all(|r| r.in_pool("linux")));
    assert_eq!(runners[0].labels, vec!["self-hosted", "linux", "x64"]);
    let lists: Vec<_> = double
        .requests()
        .into_iter()
        .filter(|r| r.operation.as_deref() == Some("actions/list-self-hosted-runners-for-org"))
        .collect();
    assert_eq!(lists.len(), 3, "300 runners at per_page=100: {lists:?}");
    assert!(lists.iter().all(|r| r.query.contains("per_page=100")));
    let rate = gh.rate_limit();
    assert_eq!(rate.requests, 4, "one token exchange and three pages");
    assert!(rate.remaining.is_some());
    println!(
        "300 runners: {} list calls, {} requests in all",
        lists.len(),
        rate.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_runners_and_an_empty_scope() {
    let double = GitHubDouble::start();
    double.add_runner("acme/app", "linux-a", RunnerState::Idle);
    double.add_runner("acme/other", "linux-b", RunnerState::Idle);
    let gh = client(&double, "acme/app");
    let runners = gh.runners().await.expect("list");
    assert_eq!(runners.len(), 1);
    assert_eq!(runners[0].name, "linux-a");
    assert_eq!(double.count("actions/list-self-hosted-runners-for-repo"), 1);
    let empty = client(&double, "nobody");
    assert!(empty.runners().await.expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_maps_204_422_404() {
    let double = GitHubDouble::start();
    let idle = double.add_runner("acme", "linux-idle", RunnerState::Idle);
    let busy = double.add_runner("acme", "linux-busy", RunnerState::Busy);
    let gh = client(&double, "acme");
    assert_eq!(gh.remove_runner(idle).await, Ok(RunnerRemoval::Removed));
    assert_eq!(gh.remove_runner(busy).await, Ok(RunnerRemoval::Busy));
    assert_eq!(gh.remove_runner(idle).await, Ok(RunnerRemoval::Gone));
    let left: Vec<String> = double.runners().into_iter().map(|r| r.name).collect();
    assert_eq!(left, vec!["linux-busy"]);
    double.set_busy("linux-busy", false);
    assert_eq!(gh.remove_runner(busy).await, Ok(RunnerRemoval::Removed));
    let statuses: Vec<u16> = double.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![201, 204, 422, 404, 204]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_status_and_missing_job() {
    let double = GitHubDouble::start();
    double.set_job("acme/app", 991, "in_progress", Some("linux-i-7"));
    double.set_job("acme/app", 992, "queued", None);
    let gh = client(&double, "acme");
    let j = gh.job("acme/app", 991).await.expect("job").expect("exists");
    assert_eq!(j.status, "in_progress");
    assert_eq!(j.runner_name.as_deref(), Some("linux-i-7"));
    let j = gh.job("Acme/App", 992).await.expect("job").expect("exists");
    assert_eq!((j.status.as_str(), j.runner_name), ("queued", None));
    assert_eq!(gh.job("acme/app", 5).await, Ok(None));
    assert!(matches!(
        gh.job("not a repo", 5).await,
        Err(GitHubError::Rejected(_))
    ));
}

/// A call budget far above the waits these tests ask for, so whether a wait "fits" never
/// depends on how fast the machine answers; the waits themselves are recorded, not slept.
const ROOMY: Budget = Budget {
    request: Duration::from_secs(10),
    call: Duration::from_secs(20),
    connect: Duration::from_secs(5),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_within_the_budget_or_reported() {
    let double = GitHubDouble::start();
    double.add_runner("acme", "linux-1", RunnerState::Idle);
    let waits = RecordingSleeper::new();
    let gh = client_with(&double, "acme", TEST_APP_KEY, ROOMY).with_sleeper(waits.clone());
    gh.runners().await.expect("token cached");
    assert!(waits.take().is_empty());

    // 429 with retry-after: 1 fits in the budget: waited out for exactly GitHub's figure,
    // then the request is sent again.
    double.throttle_next(1, 429, Some(1), None);
    let before = double.requests().len();
    assert_eq!(gh.runners().await.expect("after the wait").len(), 1);
    assert_eq!(waits.take(), vec![Duration::from_secs(1)]);
    assert_eq!(
        double.requests().len() - before,
        2,
        "the 429, then the retry"
    );

    // retry-after beyond the budget: reported at once (no wait), with GitHub's figure.
    double.throttle_next(1, 403, Some(30), None);
    assert_eq!(
        gh.runners().await,
        Err(GitHubError::RateLimited {
            retry_after_secs: 30
        })
    );
    assert!(waits.take().is_empty(), "30 s does not fit: no wait");

    // Primary limit spent (remaining 0, reset in 2 min): reported, and the next call
    // fails fast without spending a request or waiting.
    double.throttle_next(1, 403, None, Some(120));
    match gh.runners().await {
        Err(GitHubError::RateLimited { retry_after_secs }) => {
            assert!(
                (100..=121).contains(&retry_after_secs),
                "{retry_after_secs}"
            )
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(gh.rate_limit().remaining, Some(0));
    let before = double.requests().len();
    assert!(matches!(
        gh.runners().await,
        Err(GitHubError::RateLimited { .. })
    ));
    assert_eq!(
        double.requests().len(),
        before,
        "no request while exhausted"
    );
    assert!(waits.take().is_empty(), "the reset does not fit: no wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_once_and_the_budget_holds() {
    let double = GitHubDouble::start();
    double.add_runner("acme", "linux-1", RunnerState::Idle);
    let waits = RecordingSleeper::new();
    let gh = client_with(&double, "acme", TEST_APP_KEY, ROOMY).with_sleeper(waits.clone());
    gh.runners().await.expect("token cached");
    let pause = Duration::from_millis(50);
    double.fail_next(1, 502);
    assert_eq!(gh.runners().await.expect("retried").len(), 1);
    assert_eq!(waits.take(), vec![pause], "one short pause, then the retry");
    double.fail_next(2, 503);
    assert!(matches!(
        gh.runners().await,
        Err(GitHubError::Unavailable(_))
    ));
    assert_eq!(waits.take(), vec![pause], "one retry only");

    // Nothing listening: one retry after the same pause, then unavailable; never more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = Config::from_toml(&format!(
        "{POOL}[github]\napp_id = 1\ninstallation_id = 2\norganization = \"acme\"\napi_url = \"http://127.0.0.1:{closed}\"\n"
    ))
    .expect("config");
    let gh = GitHubApp::new(
        config.github.as_ref().expect("gh"),
        AppKey::from_pem(TEST_APP_KEY, APP_KEY_ENV).expect("key"),
        ROOMY,
    )
    .with_sleeper(waits.clone());
    assert!(matches!(
        gh.runners().await,
        Err(GitHubError::Unavailable(_))
    ));
    assert_eq!(waits.take(), vec![pause]);
    assert_eq!(
        gh.rate_limit().requests,
        2,
        "the token request and its one retry"
    );
}

/// The requests a webhook receiver got: headers and body.
type Seen = Arc<Mutex<Vec<(http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver on loopback: the requests a redelivery makes.
async fn webhook_receiver() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/webhook",
        axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                store.lock().expect("lock").push((headers, body.to_vec()));
                http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/webhook"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_page_with_cursors_and_redelivery_reposts_the_signed_body() {
    let double = GitHubDouble::start();
    for i in 0..149 {
        double.add_delivery(
            "workflow_job",
            Some("queued"),
            &format!("{{\"n\":{i}}}"),
            200,
        );
    }
    let body = r#"{"action":"completed","workflow_job":{"id":7}}"#;
    let (failed, guid) = double.add_delivery("workflow_job", Some("completed"), body, 502);
    let gh = client(&double, "acme");

    let first = gh.deliveries(None).await.expect("page 1");
    assert_eq!(first.deliveries.len(), 100);
    assert_eq!(first.deliveries[0].id, failed, "newest first");
    assert_eq!(first.deliveries[0].guid, guid);
    assert_eq!(first.deliveries[0].status_code, 502);
    assert_eq!(first.deliveries[0].action.as_deref(), Some("completed"));
    assert!(first.deliveries[0].delivered_at > 1_700_000_000);
    let cursor = first.next.expect("a next page");
    let second = gh.deliveries(Some(&cursor)).await.expect("page 2");
    assert_eq!(second.deliveries.len(), 50);
    assert_eq!(second.next, None);
    assert_eq!(
        double.count("apps/create-installation-access-token"),
        0,
        "the hook endpoints take the App JWT, not a token"
    );

    let (url, seen) = webhook_receiver().await;
    double.set_webhook(&url, "hook-secret");
    gh.redeliver(failed).await.expect("202");
    assert!(
        double.wait_until(Duration::from_secs(10), |d| d
            .deliveries()
            .iter()
            .any(|x| x.redelivery)),
        "the redelivery was attempted"
    );
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    let (headers, posted) = &got[0];
    assert_eq!(
        posted.as_slice(),
        body.as_bytes(),
        "the stored body, byte for byte"
    );
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(h("x-github-event"), "workflow_job");
    assert_eq!(h("x-github-delivery"), guid, "a redelivery keeps the guid");
    assert_eq!(h("content-type"), "application/json");
    let secrets = WebhookSecrets::new(["hook-secret"]).expect("secret");
    assert!(secrets
        .verify(Some(h("x-hub-signature-256")), posted)
        .is_ok());
    let redelivered = double
        .deliveries()
        .into_iter()
        .find(|d| d.redelivery)
        .expect("recorded");
    assert_eq!((redelivered.guid, redelivered.status_code), (guid, 202));
    // And it shows in the listing, newest first.
    let page = gh.deliveries(None).await.expect("page");
    assert!(page.deliveries[0].redelivery);

    assert!(matches!(
        gh.redeliver(1).await,
        Err(GitHubError::Rejected(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jit_runner_registers_an_ephemeral_runner_with_the_pools_labels() {
    let double = GitHubDouble::start();
    let config = config(&double, "acme");
    let gh = client(&double, "acme");
    let jit = gh
        .jit_runner(&config.pools[0], "linux-i-0abc")
        .await
        .expect("jit");
    assert_eq!(jit.name, "linux-i-0abc");
    assert!(!jit.encoded_jit_config.is_empty());
    assert!(!format!("{jit:?}").contains(&jit.encoded_jit_config));
    let r = double
        .runners()
        .into_iter()
        .find(|r| r.id == jit.runner_id)
        .expect("registered");
    assert_eq!(r.status, "offline");
    assert!(r.ephemeral);
    assert_eq!(r.runner_group_id, 3);
    let labels: Vec<String> = r.labels.into_iter().map(|l| l.name).collect();
    assert_eq!(labels, vec!["self-hosted", "linux", "x64"]);
    // The same name again: GitHub's 409, a rejection.
    assert!(matches!(
        gh.jit_runner(&config.pools[0], "linux-i-0abc").await,
        Err(GitHubError::Rejected(_))
    ));
    // The repository variant.
    let gh = client(&double, "acme/app");
    gh.jit_runner(&config.pools[0], "linux-i-0abd")
        .await
        .expect("repo jit");
    assert_eq!(
        double.count("actions/generate-runner-jitconfig-for-repo"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprise_server_base_url() {
    let double = GitHubDouble::start_with(DoubleOptions {
        ghes: true,
        ..DoubleOptions::default()
    });
    assert!(double.base_url().ends_with("/api/v3"));
    let id = double.add_runner("acme", "linux-1", RunnerState::Busy);
    let gh = client(&double, "acme");
    assert_eq!(gh.runners().await.expect("list").len(), 1);
    assert_eq!(gh.remove_runner(id).await, Ok(RunnerRemoval::Busy));
    assert!(double
        .requests()
        .iter()
        .all(|r| r.path.starts_with("/api/v3/")));
}

#[test]
fn the_double_rejects_requests_that_do_not_match_the_description() {
    let double = GitHubDouble::start();
    let ok_headers = [
        ("Accept", "application/vnd.github+json"),
        ("X-GitHub-Api-Version", "2022-11-28"),
        ("User-Agent", "test"),
    ];
    // per_page must be an integer.
    let (status, _) = double.raw(
        "GET",
        "/orgs/acme/actions/runners?per_page=many",
        &ok_headers,
        None,
    );
    assert_eq!(status, 400);
    // An undeclared query parameter.
    let (status, _) = double.raw(
        "GET",
        "/orgs/acme/actions/runners?limit=5",
        &ok_headers,
        None,
    );
    assert_eq!(status, 400);
    // No such operation.
    let (status, _) = double.raw("PUT", "/orgs/acme/actions/runners", &ok_headers, None);
    assert_eq!(status, 400);
    let (status, _) = double.raw("GET", "/orgs/acme/runners", &ok_headers, None);
    assert_eq!(status, 400);
    // A body with a misspelled property and no required runner_group_id.
    let mut json_headers = ok_headers.to_vec();
    json_headers.push(("Content-Type", "application/json"));
    let (status, text) = double.raw(
        "POST",
        "/orgs/acme/actions/runners/generate-jitconfig",
        &json_headers,
        Some(r#"{"name":"x","runner_group":1,"labels":["a"]}"#),
    );
    assert_eq!(status, 400);
    assert!(text.contains("runner_group_id"), "{text}");
    // A path parameter of the wrong type.
    let (status, _) = double.raw(
        "DELETE",
        "/orgs/acme/actions/runners/abc",
        &ok_headers,
        None,
    );
    assert_eq!(status, 400);
    // Headers GitHub asks for.
    let (status, _) = double.raw(
        "GET",
        "/orgs/acme/actions/runners",
        &[("User-Agent", "t")],
        None,
    );
    assert_eq!(status, 400);
    let v = double.take_violations();
    assert_eq!(v.len(), 7, "{v:#?}");
    assert!(v.iter().any(|x| x.contains("per_page")));
    assert!(v.iter().any(|x| x.contains("limit")));
    assert!(v.iter().any(|x| x.contains("runner_group")));
    assert!(v.iter().any(|x| x.contains("X-GitHub-Api-Version")));

    // A request that matches but has no credential: 401, not a violation.
    let (status, _) = double.raw("GET", "/orgs/acme/actions/runners", &ok_headers, None);
    assert_eq!(status, 401);
    assert!(double.violations().is_empty());
}

#[test]
fn setup_refuses_github_without_a_key_and_warns_without_github() {
    let with_github = Config::from_toml(&format!(
        "{POOL}[github]\napp_id = 5\ninstallation_id = 6\norganization = \"acme\"\n"
    ))
    .expect("config");
    let err = scalehook_github::from_config(&with_github, None, APP_KEY_ENV)
        .err()
        .expect("refused");
    assert!(err.to_string().contains(APP_KEY_ENV), "{err}");
    let key = scalehook_github::key_from_lookup(|_| Some(TEST_APP_KEY.to_string()))
        .expect("key")
        .expect("some");
    assert!(
        scalehook_github::from_config(&with_github, Some(key), APP_KEY_ENV)
            .expect("client")
            .is_some()
    );

    let webhook_only = Config::from_toml(POOL).expect("config");
    assert!(
        scalehook_github::from_config(&webhook_only, None, APP_KEY_ENV)
            .expect("webhook-only")
            .is_none()
    );

    assert!(scalehook_github::key_from_lookup(|_| None)
        .expect("unset")
        .is_none());
    let unresolved = scalehook_github::key_from_lookup(|_| {
        Some("@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/k/)".into())
    })
    .expect_err("unresolved");
    assert!(matches!(unresolved, SetupError::Unresolved(_)));
    assert!(unresolved.to_string().contains(APP_KEY_ENV), "{unresolved}");
    let bad = scalehook_github::key_from_lookup(|_| Some("not a key".into())).expect_err("bad");
    assert!(bad.to_string().contains(APP_KEY_ENV) && !bad.to_string().contains("not a key"));
}
