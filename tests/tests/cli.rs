//! The `scalehook` command's own contract: help, start-up refusals, and `sign`.

use scalehook_e2e::{scalehook, unique_temp_path};

fn run(cmd: &mut std::process::Command) -> (Option<i32>, String, String) {
    let out = cmd.output().expect("run scalehook");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_without_a_secret_refuses_and_says_how_to_set_one() {
    let (code, stdout, stderr) = run(scalehook().env_remove("SCALEHOOK_WEBHOOK_SECRET").args([
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "it must not start listening: {stdout}");
    assert!(
        stderr.contains("export SCALEHOOK_WEBHOOK_SECRET="),
        "{stderr}"
    );
    // An empty secret is no secret.
    let (code, _, _) = run(scalehook().env("SCALEHOOK_WEBHOOK_SECRET", "").args([
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(code, Some(1));
}

#[test]
fn serve_refuses_cloud_targets_and_bad_config() {
    let config = unique_temp_path("cloud.toml");
    std::fs::write(
        &config,
        "[[pools]]\nname = \"local\"\nlabels = [\"a\"]\nmax = 1\n\n[[pools]]\nname = \"prod\"\nlabels = [\"self-hosted\"]\nmax = 3\naws_asg = \"runners\"\n",
    )
    .expect("write config");
    let (code, stdout, stderr) = run(scalehook()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config));
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("\"prod\"") && stderr.contains("aws_asg"),
        "{stderr}"
    );
    assert!(stderr.contains("Lambda"), "{stderr}");

    std::fs::write(
        &config,
        "[[pools]]\nname = \"p\"\nlabels = [\"a\"]\nmin = 5\nmax = 1\n",
    )
    .expect("write");
    let (code, _, stderr) = run(scalehook().args(["serve", "--config"]).arg(&config));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("pool \"p\": min"), "{stderr}");
    let _ = std::fs::remove_file(&config);

    let (code, _, stderr) = run(scalehook().env("SCALEHOOK_CONFIG_TOML", "[[pools]").args([
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not valid TOML"), "{stderr}");
}

#[test]
fn sign_matches_the_github_docs_vector() {
    let body = unique_temp_path("hello.txt");
    std::fs::write(&body, "Hello, World!").expect("write");
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17\n";
    let (code, stdout, _) = run(scalehook()
        .args(["sign", "--secret", "It's a Secret to Everybody"])
        .arg(&body));
    assert_eq!((code, stdout.as_str()), (Some(0), expected));
    // Without --secret: the environment's secret.
    let (code, stdout, _) = run(scalehook()
        .env("SCALEHOOK_WEBHOOK_SECRET", "It's a Secret to Everybody")
        .arg("sign")
        .arg(&body));
    assert_eq!((code, stdout.as_str()), (Some(0), expected));
    // No secret at all: refused.
    let (code, stdout, stderr) = run(scalehook()
        .env_remove("SCALEHOOK_WEBHOOK_SECRET")
        .arg("sign")
        .arg(&body));
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty());
    assert!(stderr.contains("SCALEHOOK_WEBHOOK_SECRET"));
    let _ = std::fs::remove_file(&body);
}

#[test]
fn help_documents_every_command_and_flag() {
    let (code, top, _) = run(scalehook().arg("--help"));
    assert_eq!(code, Some(0));
    for command in [
        "serve",
        "replay",
        "sign",
        "simulate",
        "SCALEHOOK_WEBHOOK_SECRET",
    ] {
        assert!(top.contains(command), "--help lacks {command}");
    }
    let flags: [(&str, &[&str]); 4] = [
        (
            "serve",
            &[
                "--config",
                "--listen",
                "--reconcile-every",
                "127.0.0.1:8080",
                "aws_asg",
            ],
        ),
        (
            "replay",
            &["--config", "--url", "--reconcile", "--json", "PATH"],
        ),
        ("sign", &["--secret", "FILE"]),
        (
            "simulate",
            &[
                "--boot-seconds",
                "--svg",
                "--price-per-hour",
                "--json",
                "TRACE",
            ],
        ),
    ];
    for (command, wanted) in flags {
        let (code, help, _) = run(scalehook().args([command, "--help"]));
        assert_eq!(code, Some(0));
        for flag in wanted {
            assert!(
                help.contains(flag),
                "{command} --help lacks {flag}:\n{help}"
            );
        }
    }
}

#[test]
fn replay_rejects_what_it_cannot_deliver() {
    // A file named on the command line that is not a payload is an error, not a skip.
    let (code, _, stderr) =
        run(scalehook().args(["replay", "fixtures/github/signature-vectors.json"]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("is not a payload"), "{stderr}");
    let trace = unique_temp_path("bad.jsonl");
    std::fs::write(&trace, "{\"event\":\"ping\"}\n").expect("write");
    let (code, _, stderr) = run(scalehook().arg("replay").arg(&trace));
    assert_eq!(code, Some(1));
    assert!(stderr.contains(":1:"), "names the line: {stderr}");
    let _ = std::fs::remove_file(&trace);
    let (code, _, stderr) =
        run(scalehook().args(["replay", "--url", "not-a-url", "fixtures/github/"]));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--url"), "{stderr}");
}

#[test]
fn replay_needs_a_secret_only_to_send() {
    // In process it is sender and receiver: a throwaway secret, said on stderr.
    let (code, stdout, stderr) = run(scalehook().env_remove("SCALEHOOK_WEBHOOK_SECRET").args([
        "replay",
        "--json",
        "fixtures/traces/scenarios/burst.jsonl",
    ]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("throwaway secret"), "{stderr}");
    assert_eq!(stdout.matches("\"http_status\":200").count(), 5, "{stdout}");
    // To a server it must be the server's secret: refused without one, before sending.
    let (code, stdout, stderr) = run(scalehook().env_remove("SCALEHOOK_WEBHOOK_SECRET").args([
        "replay",
        "--url",
        "http://127.0.0.1:9/webhook",
        "fixtures/traces/scenarios/burst.jsonl",
    ]));
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("export SCALEHOOK_WEBHOOK_SECRET="),
        "{stderr}"
    );
}
