//! `GitHubApp` against the GitHub API test double (crates/scalehook-github-double), which
//! checks every request against GitHub's OpenAPI description and fails the test on any
//! mismatch when dropped.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use scalehook_core::github::{GitHub, GitHubError, JobLookup, RunnerRemoval};
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
    // Remembered: until then every call fails fast, without a request.
    let before = double.requests().len();
    assert!(matches!(
        gh.runners().await,
        Err(GitHubError::RateLimited { retry_after_secs }) if retry_after_secs <= 30
    ));
    assert_eq!(double.requests().len(), before, "no request while blocked");
    let gh = client_with(&double, "acme", TEST_APP_KEY, ROOMY).with_sleeper(waits.clone());
    gh.runners().await.expect("a new client is not blocked");

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

fn client_for(double: &GitHubDouble, toml: &str, budget: Budget) -> (Config, GitHubApp) {
    let config = Config::from_toml(toml).expect("valid config");
    let key = AppKey::from_pem(TEST_APP_KEY, APP_KEY_ENV).expect("test key");
    let gh = GitHubApp::new(config.github.as_ref().expect("[github]"), key, budget);
    let _ = double;
    (config, gh)
}

/// Issue 20 item 5: with `hook_id`, deliveries are read from, and redelivered through, the
/// organization's or repository's webhook with the installation token, not the App's hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_and_repo_webhook_deliveries_are_read_and_redelivered() {
    let double = GitHubDouble::start();
    let (url, seen) = webhook_receiver().await;
    double.set_webhook(&url, "s3cret");
    double.add_delivery("workflow_job", Some("queued"), "{\"app\":1}", 0);
    let (org_id, org_guid) = double.add_hook_delivery(
        "org:acme:42",
        "workflow_job",
        Some("queued"),
        "{\"org\":1}",
        0,
    );
    let (repo_id, _) = double.add_hook_delivery(
        "repo:acme/app:7",
        "workflow_job",
        Some("queued"),
        "{\"repo\":1}",
        502,
    );

    let org_toml = format!("{POOL}\n{}hook_id = 42\n", double.config_toml("acme"));
    let (_, gh) = client_for(&double, &org_toml, Budget::default());
    assert_eq!(gh.deliveries_source(), "org-hook:42");
    let page = gh.deliveries(None).await.expect("org hook deliveries");
    assert_eq!(
        page.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![org_id]
    );
    gh.redeliver(org_id).await.expect("redelivered");
    let log = double.requests();
    let ops: Vec<(&str, &str)> = log
        .iter()
        .filter(|r| {
            r.operation
                .as_deref()
                .is_some_and(|o| o.contains("webhook"))
        })
        .map(|r| (r.operation.as_deref().unwrap_or(""), r.auth.as_str()))
        .collect();
    assert_eq!(
        ops,
        vec![
            ("orgs/list-webhook-deliveries", "installation"),
            ("orgs/redeliver-webhook-delivery", "installation"),
        ]
    );
    assert!(
        double.wait_until(Duration::from_secs(10), |_| !seen
            .lock()
            .expect("seen")
            .is_empty()),
        "the redelivery reached the webhook"
    );
    let got = seen.lock().expect("seen").clone();
    let header = |name: &str| {
        got[0]
            .0
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(header("x-github-delivery"), Some(org_guid));
    assert_eq!(header("x-github-hook-id").as_deref(), Some("42"));

    // A repository webhook while the runners are the organization's.
    let repo_toml = format!(
        "{POOL}\n{}hook_id = 7\nhook_repository = \"acme/app\"\n",
        double.config_toml("acme")
    );
    let (_, gh) = client_for(&double, &repo_toml, Budget::default());
    assert_eq!(gh.deliveries_source(), "repo-hook:7");
    let page = gh.deliveries(None).await.expect("repo hook deliveries");
    assert_eq!(
        page.deliveries
            .iter()
            .map(|d| (d.id, d.status_code))
            .collect::<Vec<_>>(),
        vec![(repo_id, 502)]
    );
    gh.redeliver(repo_id).await.expect("redelivered");
    assert_eq!(double.count("repos/list-webhook-deliveries"), 1);
    assert_eq!(double.count("repos/redeliver-webhook-delivery"), 1);
    assert_eq!(
        double.count("apps/list-webhook-deliveries"),
        0,
        "the App's hook is never read"
    );

    // Without hook_id: the App's hook, with the JWT (as before).
    let gh = client(&double, "acme");
    assert_eq!(gh.deliveries_source(), "app-hook");
    assert_eq!(
        gh.deliveries(None)
            .await
            .expect("app hook")
            .deliveries
            .len(),
        1
    );
}

/// The org/repo hook endpoints need the installation's Webhooks permission: without it the
/// error names the permission to grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_deliveries_without_the_webhooks_permission_name_it() {
    let double = GitHubDouble::start();
    double.set_permissions(
        serde_json::json!({"organization_self_hosted_runners": "write",
        "organization_hooks": "read", "repository_hooks": "read"}),
    );
    let org_toml = format!("{POOL}\n{}hook_id = 42\n", double.config_toml("acme"));
    let (_, gh) = client_for(&double, &org_toml, Budget::default());
    let (id, _) = double.add_hook_delivery("org:acme:42", "workflow_job", Some("queued"), "{}", 0);
    assert_eq!(
        gh.deliveries(None)
            .await
            .expect("read is enough to list")
            .deliveries
            .len(),
        1
    );
    match gh.redeliver(id).await {
        Err(GitHubError::Unauthorized(m)) => {
            assert!(
                m.contains("organization_hooks") && m.contains("write"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    double.set_permissions(serde_json::json!({"organization_self_hosted_runners": "write"}));
    let repo_toml = format!("{POOL}\n{}hook_id = 9\n", double.config_toml("acme/app"));
    let (_, gh) = client_for(&double, &repo_toml, Budget::default());
    match gh.deliveries(None).await {
        Err(GitHubError::Unauthorized(m)) => assert!(m.contains("repository_hooks"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Issue 20 item 6: an installation token gets 404 from the jobs API for a repository
/// outside the installation too; only where the repository is visible is a 404 "gone".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_job_counts_as_gone_only_in_a_repository_the_installation_sees() {
    let double = GitHubDouble::start();
    double.hide_repository("acme/secret");
    double.set_job("acme/app", 5, "completed", Some("linux-i-1"));
    let gh = client(&double, "acme");
    assert!(
        matches!(gh.job_state("acme/app", 5).await, Ok(JobLookup::Found(s)) if s.status == "completed")
    );
    assert_eq!(gh.job_state("acme/app", 6).await, Ok(JobLookup::Gone));
    assert_eq!(
        gh.job_state("acme/secret", 6).await,
        Ok(JobLookup::NotVisible)
    );
    // The old signature never says "no such job" for it: unknown is not completed.
    assert_eq!(gh.job("acme/app", 6).await, Ok(None));
    assert!(
        matches!(gh.job("acme/secret", 6).await, Err(GitHubError::Rejected(m)) if m.contains("not visible"))
    );
    // Visibility is asked once per repository, and only after a 404.
    assert_eq!(gh.job_state("acme/app", 7).await, Ok(JobLookup::Gone));
    assert_eq!(
        double.count("repos/get"),
        2,
        "acme/app once, acme/secret once"
    );
}

/// Issue 20 item 7: runner reads scoped to what the core is about to touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_runner_reads_by_id_name_and_group() {
    let double = GitHubDouble::start();
    let group = double.add_runner_group("linux-pool");
    let names: Vec<String> = (0..250).map(|i| format!("other-i-{i}")).collect();
    double.add_runners("acme", &names, 1);
    let mine = double.add_runner_in_group("acme", "linux-i-1", RunnerState::Busy, group);
    double.add_runner_in_group("acme", "linux-i-1-2", RunnerState::Idle, group);
    let gh = client(&double, "acme");

    let r = gh.runner(mine).await.expect("get").expect("found");
    assert_eq!(
        (r.name.as_str(), r.busy, r.online),
        ("linux-i-1", true, true)
    );
    assert_eq!(gh.runner(999_999).await, Ok(None), "404: no such runner");
    assert_eq!(double.count("actions/get-self-hosted-runner-for-org"), 2);

    let named = gh.runners_named("linux-i-1").await.expect("by name");
    assert_eq!(
        named.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![mine],
        "exact name"
    );
    let list = double.requests();
    let by_name = list
        .iter()
        .rfind(|r| r.operation.as_deref() == Some("actions/list-self-hosted-runners-for-org"))
        .expect("listed");
    assert!(
        by_name.query.contains("name=linux-i-1"),
        "{}",
        by_name.query
    );

    let in_group = gh.runners_in_group(group).await.expect("group");
    assert_eq!(in_group.len(), 2);
    assert_eq!(
        double.count("actions/list-self-hosted-runners-in-group-for-org"),
        1,
        "one page, not the org's three"
    );
    assert_eq!(double.count("actions/list-self-hosted-runners-for-org"), 1);

    // Repository scope: by id on the repository's endpoint; no groups, so all its runners.
    let repo_runner = double.add_runner("acme/app", "linux-i-9", RunnerState::Idle);
    let gh = client(&double, "acme/app");
    assert!(gh.runner(repo_runner).await.expect("get").is_some());
    assert_eq!(gh.runners_in_group(group).await.expect("all").len(), 1);
    assert_eq!(double.count("actions/get-self-hosted-runner-for-repo"), 1);
}

/// A listing's budget is per page: with each answer taking 0.6 s and a 2 s call budget, five
/// pages (3 s in all) are read completely instead of failing at 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_gets_a_budget_per_page() {
    let double = GitHubDouble::start();
    let names: Vec<String> = (0..450).map(|i| format!("linux-i-{i}")).collect();
    double.add_runners("acme", &names, 1);
    let budget = Budget {
        request: Duration::from_secs(2),
        call: Duration::from_secs(2),
        connect: Duration::from_secs(2),
    };
    let gh = client_with(&double, "acme", TEST_APP_KEY, budget);
    double.set_latency_ms(600);
    assert_eq!(gh.runners().await.expect("all pages").len(), 450);
    assert_eq!(double.count("actions/list-self-hosted-runners-for-org"), 5);
}

/// Issue 20 item 9: a secondary rate limit (403/429, requests remaining, no retry-after, the
/// message says so) waits at least 60 s, doubling while it repeats, and blocks every call
/// until then; a 403 without that message stays a permission problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_rate_limits_back_off_a_minute_and_block_until_then() {
    let double = GitHubDouble::start();
    double.add_runner("acme", "linux-1", RunnerState::Idle);
    let secondary =
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";

    // Within a call budget that cannot hold a minute: reported, remembered, counted.
    let waits = RecordingSleeper::new();
    let gh = client(&double, "acme").with_sleeper(waits.clone());
    gh.runners().await.expect("token cached");
    double.refuse_next(1, 403, secondary);
    assert_eq!(
        gh.runners().await,
        Err(GitHubError::RateLimited {
            retry_after_secs: 60
        })
    );
    let limit = gh.rate_limit();
    assert_eq!(limit.secondary_limited, 1);
    assert!(
        limit.remaining.is_some_and(|r| r > 0),
        "requests remain: secondary"
    );
    let until = limit.blocked_until.expect("blocked");
    assert!((now() + 55..=now() + 61).contains(&until), "{until}");
    let before = double.requests().len();
    assert!(
        matches!(gh.runners().await, Err(GitHubError::RateLimited { retry_after_secs }) if retry_after_secs <= 60)
    );
    assert_eq!(double.requests().len(), before, "no request while blocked");
    assert!(waits.take().is_empty());

    // With room for the wait: exactly 60 s, then 120 s when it repeats, then the answer.
    let gh = client_with(&double, "acme", TEST_APP_KEY, ROOMY_MINUTES).with_sleeper(waits.clone());
    double.refuse_next(2, 429, secondary);
    assert_eq!(gh.runners().await.expect("after the waits").len(), 1);
    assert_eq!(
        waits.take(),
        vec![Duration::from_secs(60), Duration::from_secs(120)]
    );
    assert_eq!(gh.rate_limit().secondary_limited, 2);
    assert_eq!(gh.rate_limit().blocked_until, None);
    // A success resets the doubling.
    double.refuse_next(1, 403, secondary);
    gh.runners().await.expect("after the wait");
    assert_eq!(waits.take(), vec![Duration::from_secs(60)]);

    // A 403 that is no rate limit: a permission problem, no wait, no block.
    double.refuse_next(1, 403, "Resource not accessible by integration");
    assert!(matches!(
        gh.runners().await,
        Err(GitHubError::Unauthorized(_))
    ));
    assert!(waits.take().is_empty());
    assert_eq!(gh.rate_limit().blocked_until, None);
    gh.runners().await.expect("not blocked");
}

/// Waits of minutes fit (they are recorded, not slept).
const ROOMY_MINUTES: Budget = Budget {
    request: Duration::from_secs(10),
    call: Duration::from_secs(600),
    connect: Duration::from_secs(5),
};

/// Issue 20 item 10: `runner_group` without `runner_group_id` mints JIT runners in that
/// group (looked up by name once), and an unknown name is a clear error with no runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jit_runners_join_the_runner_group_named_by_the_pool() {
    let double = GitHubDouble::start();
    double.add_runner_group("Backend");
    let frontend = double.add_runner_group("Frontend");
    let toml = |group: &str| {
        format!(
            "[[pools]]\nname = \"web\"\nlabels = [\"self-hosted\", \"web\"]\nmax = 5\nephemeral = true\nrunner_group = \"{group}\"\n\n{}",
            double.config_toml("acme")
        )
    };
    let (config, gh) = client_for(&double, &toml("frontend"), Budget::default());
    let pool = &config.pools[0];
    assert_eq!(gh.pool_runner_group(pool).await, Ok(frontend));
    let a = gh.jit_runner(pool, "web-i-1").await.expect("jit");
    let b = gh.jit_runner(pool, "web-i-2").await.expect("jit");
    let groups: Vec<u64> = double
        .runners()
        .into_iter()
        .filter(|r| r.id == a.runner_id || r.id == b.runner_id)
        .map(|r| r.runner_group_id)
        .collect();
    assert_eq!(groups, vec![frontend, frontend]);
    assert_eq!(
        double.count("actions/list-self-hosted-runner-groups-for-org"),
        1,
        "cached"
    );

    let (config, gh) = client_for(&double, &toml("Nope"), Budget::default());
    match gh.jit_runner(&config.pools[0], "web-i-3").await {
        Err(GitHubError::Rejected(m)) => {
            assert!(m.contains("\"Nope\"") && m.contains("web"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        double.count("actions/generate-runner-jitconfig-for-org"),
        2,
        "no runner minted"
    );
}

/// The double checks the new requests too: a parameter the description does not declare
/// for the in-group listing (it has no `name` filter) is a violation.
#[test]
fn the_double_rejects_a_name_filter_on_the_group_listing() {
    let double = GitHubDouble::start();
    let (status, text) = double.raw(
        "GET",
        "/orgs/acme/actions/runner-groups/1/runners?name=x",
        &[
            ("Accept", "application/vnd.github+json"),
            ("X-GitHub-Api-Version", "2022-11-28"),
            ("User-Agent", "t"),
            ("Authorization", "Bearer ghs_x"),
        ],
        None,
    );
    assert_eq!(status, 400, "{text}");
    let v = double.take_violations();
    assert!(
        v.iter().any(|x| x.contains("query parameter name")),
        "{v:?}"
    );
}
