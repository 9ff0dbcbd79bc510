"""runner/aws/boot.sh as an instance runs it (rendered after runner/lib.sh), run for real: bash
under a temporary root, the AWS CLI against moto's SSM, and a loopback stand-in for IMDSv2
(token PUT, then GETs that must carry the token)."""

from __future__ import annotations

import hashlib
import http.server
import threading

from awscli.botocore import session as botocore_session  # the AWS CLI vendors botocore
import pytest

from conftest import rendered

INSTANCE = "i-0123456789abcdef0"
OTHER = "i-0fedcba9876543210"
PREFIX = "/scalehook/jit"
CONFIG = "eyJydW5uZXIiOiJzZWNyZXQtaml0LWNvbmZpZyJ9"  # what scalehook stores: base64 JIT config
TOKEN = "imds-v2-session-token"


class Imds(http.server.BaseHTTPRequestHandler):
    """IMDSv2 only: GETs without the session token are refused (401), as with
    http_tokens = "required"."""

    seen: list = []
    # autoscaling/target-lifecycle-state answers, in order (the last one stays); empty: 404,
    # as outside an Auto Scaling group.
    lifecycle: list = []

    def log_message(self, *args):
        pass

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self.seen.append(("PUT", self.path, True))
            self._answer(200, TOKEN)
        else:
            self._answer(400, "")

    def do_GET(self):
        ok = self.headers.get("X-aws-ec2-metadata-token") == TOKEN
        self.seen.append(("GET", self.path, ok))
        if not ok:
            return self._answer(401, "")
        values = {
            "/latest/meta-data/instance-id": INSTANCE,
            "/latest/meta-data/placement/region": "us-east-1",
        }
        if self.path == "/latest/meta-data/autoscaling/target-lifecycle-state" and Imds.lifecycle:
            state = Imds.lifecycle.pop(0) if len(Imds.lifecycle) > 1 else Imds.lifecycle[0]
            return self._answer(200, state)
        if self.path in values:
            self._answer(200, values[self.path])
        else:
            self._answer(404, "")

    def _answer(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def imds():
    Imds.seen = []
    Imds.lifecycle = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    return rendered("aws", tmp_path_factory.mktemp("rendered"))


@pytest.fixture
def ssm(moto_endpoint):
    client = botocore_session.get_session().create_client(
        "ssm",
        region_name="us-east-1",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    yield client
    for p in client.describe_parameters().get("Parameters", []):
        client.delete_parameter(Name=p["Name"])


def put(ssm, instance, value=CONFIG):
    ssm.put_parameter(Name=f"{PREFIX}/{instance}", Value=value, Type="SecureString", Overwrite=True)


def exists(ssm, instance) -> bool:
    try:
        ssm.get_parameter(Name=f"{PREFIX}/{instance}")
        return True
    except ssm.exceptions.ParameterNotFound:
        return False


def boot(fake_root, script, imds, moto_endpoint, timeout=60, **extra):
    settings = dict(
        SCALEHOOK_IMDS_URL=imds,
        SCALEHOOK_JIT_PARAMETER_PREFIX=PREFIX,
        SCALEHOOK_JIT_WAIT_SECONDS=20,
        SCALEHOOK_JIT_POLL_SECONDS=1,
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    settings.update(extra)
    return fake_root.run(script, timeout=timeout, **settings)


def test_reads_and_deletes_its_own_parameter_runs_the_runner_and_powers_off(fake_root, script, imds, moto_endpoint, ssm):
    runner_dir = fake_root.install_runner()
    put(ssm, INSTANCE)
    put(ssm, OTHER, "another-instance-config")

    out = boot(fake_root, script, imds, moto_endpoint)

    assert out.returncode == 0, out.stderr
    # The configuration reaches the runner in its environment, never on a command line.
    assert fake_root.runner_jitconfig() == CONFIG
    assert fake_root.runner_args() == []
    assert (fake_root.calls / "run.sh.cwd").read_text().strip() == str(runner_dir)
    assert fake_root.called("runuser") == ["-u runner -- ./run.sh"]
    assert fake_root.called("useradd") == ["--create-home --shell /bin/bash runner"]
    assert fake_root.called("chown") == [f"-R runner: {runner_dir}"]
    assert fake_root.called("shutdown") == ["-h now"]
    # Its own parameter is gone; another instance's is untouched.
    assert not exists(ssm, INSTANCE)
    assert exists(ssm, OTHER)
    # IMDSv2 only: a token first, every GET with it.
    assert Imds.seen[0] == ("PUT", "/latest/api/token", True)
    assert ("GET", "/latest/meta-data/instance-id", True) in Imds.seen
    assert all(ok for _, _, ok in Imds.seen)
    # The configuration is a credential: never in the log or the output.
    for text in (fake_root.log(), out.stdout, out.stderr):
        assert CONFIG not in text
    assert f"read and deleted {PREFIX}/{INSTANCE}" in fake_root.log()
    for call in (fake_root.calls).iterdir():
        if call.name != "run.sh.jitconfig":
            assert CONFIG not in call.read_text(), f"the configuration in the arguments of {call.name}"


def test_blocks_the_metadata_service_over_ipv4_and_ipv6_for_the_runner_and_containers(
    fake_root, script, imds, moto_endpoint, ssm
):
    fake_root.install_runner()
    put(ssm, INSTANCE)
    out = boot(fake_root, script, imds, moto_endpoint)
    assert out.returncode == 0, out.stderr
    # The runner user's own packets (OUTPUT), and containers' (FORWARD passes DOCKER-USER
    # first: bridged containers are not the runner user).
    assert fake_root.rules("iptables") == [
        "OUTPUT -d 169.254.169.254 -m owner --uid-owner runner -j REJECT",
        ":DOCKER-USER",
        "FORWARD -j DOCKER-USER",
        "DOCKER-USER -d 169.254.169.254 -j REJECT",
    ]
    assert fake_root.rules("ip6tables") == [
        "OUTPUT -d fd00:ec2::254 -m owner --uid-owner runner -j REJECT",
        ":DOCKER-USER",
        "FORWARD -j DOCKER-USER",
        "DOCKER-USER -d fd00:ec2::254 -j REJECT",
    ]
    # In place before the runner starts.
    assert fake_root.runner_jitconfig() == CONFIG


def test_adds_to_the_docker_user_chain_docker_already_made(fake_root, script, imds, moto_endpoint, ssm):
    fake_root.install_runner()
    put(ssm, INSTANCE)
    out = boot(fake_root, script, imds, moto_endpoint, FAKE_DOCKER_USER_CHAIN=1)
    assert out.returncode == 0, out.stderr
    rules = fake_root.rules("iptables")
    assert rules.count("FORWARD -j DOCKER-USER") == 1, "no second jump"
    assert "DOCKER-USER -d 169.254.169.254 -j REJECT" in rules
    assert fake_root.runner_jitconfig() == CONFIG


def test_refuses_a_runner_user_with_sudo_rights(fake_root, script, imds, moto_endpoint, ssm):
    fake_root.install_runner()
    put(ssm, INSTANCE)
    out = boot(
        fake_root, script, imds, moto_endpoint, FAKE_USER_GROUPS="runner", FAKE_SUDO_RULES="(ALL) NOPASSWD: ALL"
    )
    assert out.returncode != 0
    assert fake_root.runner_args() is None
    assert "runner user runner is privileged (sudo rights): refusing to start the runner" in fake_root.log()
    assert fake_root.called("shutdown") == ["-h now"]


def test_warm_instance_installs_waits_for_service_then_runs(fake_root, script, imds, moto_endpoint, ssm):
    # Launched into a warm pool: Warmed:Stopped for three reads, then the group takes it.
    tarball = fake_root.runner_tarball()
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    Imds.lifecycle = ["Warmed:Stopped", "Warmed:Stopped", "Warmed:Stopped", "InService"]
    put(ssm, INSTANCE)
    out = boot(
        fake_root,
        script,
        imds,
        moto_endpoint,
        SCALEHOOK_RUNNER_URL=f"file://{tarball}",
        SCALEHOOK_RUNNER_SHA256=digest,
    )
    assert out.returncode == 0, out.stderr
    # It waited while warm (two polls after the first read) and took no configuration then:
    # the configuration was read only after InService, at once.
    assert fake_root.sleeps() == [1, 1]
    log = fake_root.log()
    assert log.index("runner installed, waiting") < log.index("taken into service") < log.index("read and deleted")
    assert fake_root.runner_jitconfig() == CONFIG
    assert fake_root.runner_args() == []
    # A Stopped pool starts the instance again, and user data runs on the first boot only:
    # the script is a per-boot script now, unchanged.
    per_boot = fake_root.path / "var/lib/cloud/scripts/per-boot/scalehook-runner.sh"
    assert per_boot.read_text() == script.read_text()
    assert fake_root.called("shutdown") == ["-h now"]


def test_an_instance_in_service_is_no_warm_instance(fake_root, script, imds, moto_endpoint, ssm):
    fake_root.install_runner()
    Imds.lifecycle = ["InService"]
    put(ssm, INSTANCE)
    out = boot(fake_root, script, imds, moto_endpoint)
    assert out.returncode == 0, out.stderr
    assert fake_root.sleeps() == []
    assert not (fake_root.path / "var/lib/cloud/scripts/per-boot").exists()
    assert fake_root.runner_jitconfig() == CONFIG
    assert fake_root.runner_args() == []


def test_waits_for_a_parameter_written_after_boot(fake_root, script, imds, moto_endpoint, ssm):
    fake_root.install_runner()
    # The parameter is written during the second pause: the script reads it on its third try.
    hook = fake_root.hook(
        f"aws ssm put-parameter --name {PREFIX}/{INSTANCE} --value {CONFIG} --type SecureString"
        " --overwrite >/dev/null"
    )
    out = boot(fake_root, script, imds, moto_endpoint, FAKE_SLEEP_HOOK=hook, FAKE_SLEEP_HOOK_AT=2)
    assert out.returncode == 0, out.stderr
    assert fake_root.sleeps() == [1, 1], "polled every SCALEHOOK_JIT_POLL_SECONDS until it came"
    assert fake_root.runner_jitconfig() == CONFIG
    assert not exists(ssm, INSTANCE)
    assert fake_root.called("shutdown") == ["-h now"]


def test_missing_parameter_gives_up_after_its_bound_and_powers_off(fake_root, script, imds, moto_endpoint, ssm):
    fake_root.install_runner()
    put(ssm, OTHER, "another-instance-config")
    out = boot(fake_root, script, imds, moto_endpoint, SCALEHOOK_JIT_WAIT_SECONDS=4, SCALEHOOK_JIT_POLL_SECONDS=1)
    assert out.returncode != 0
    assert fake_root.runner_args() is None, "no runner without a configuration"
    assert fake_root.called("shutdown") == ["-h now"]
    assert "no runner configuration after 4s: giving up" in fake_root.log()
    # It waited the bound, a pause at a time, then stopped: 4 pauses of 1 s (5 tries).
    assert fake_root.sleeps() == [1, 1, 1, 1]
    # It never took another instance's configuration.
    assert exists(ssm, OTHER)


def test_powers_off_when_the_runner_fails(fake_root, script, imds, moto_endpoint, ssm):
    fake_root.install_runner()
    put(ssm, INSTANCE)
    out = boot(fake_root, script, imds, moto_endpoint, FAKE_RUNNER_EXIT=3)
    assert out.returncode == 0
    assert fake_root.runner_jitconfig() == CONFIG
    assert "runner exited with status 3" in fake_root.log()
    assert fake_root.called("shutdown") == ["-h now"]


def test_no_metadata_service_powers_off(fake_root, script, moto_endpoint, ssm):
    fake_root.install_runner()
    put(ssm, INSTANCE)
    from conftest import free_port

    out = boot(fake_root, script, f"http://127.0.0.1:{free_port()}", moto_endpoint)
    assert out.returncode != 0
    assert fake_root.runner_args() is None
    assert fake_root.called("shutdown") == ["-h now"]
    assert exists(ssm, INSTANCE)


def test_downloads_the_pinned_runner_and_checks_its_sha256(fake_root, script, imds, moto_endpoint, ssm):
    tarball = fake_root.runner_tarball()
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    put(ssm, INSTANCE)
    out = boot(
        fake_root,
        script,
        imds,
        moto_endpoint,
        SCALEHOOK_RUNNER_URL=f"file://{tarball}",
        SCALEHOOK_RUNNER_SHA256=digest,
    )
    assert out.returncode == 0, out.stderr
    assert fake_root.runner_jitconfig() == CONFIG
    assert (fake_root.path / "opt/actions-runner/run.sh").exists()


def test_refuses_a_runner_package_with_the_wrong_sha256(fake_root, script, imds, moto_endpoint, ssm):
    tarball = fake_root.runner_tarball()
    put(ssm, INSTANCE)
    out = boot(
        fake_root,
        script,
        imds,
        moto_endpoint,
        SCALEHOOK_RUNNER_URL=f"file://{tarball}",
        SCALEHOOK_RUNNER_SHA256="0" * 64,
    )
    assert out.returncode != 0
    assert fake_root.runner_args() is None
    assert not (fake_root.path / "opt/actions-runner/run.sh").exists()
    assert "checksum mismatch" in fake_root.log()
    assert fake_root.called("shutdown") == ["-h now"]


def test_runner_keeps_imds_when_asked(fake_root, script, imds, moto_endpoint, ssm):
    fake_root.install_runner()
    put(ssm, INSTANCE)
    out = boot(fake_root, script, imds, moto_endpoint, SCALEHOOK_BLOCK_IMDS_FOR_RUNNER=0)
    assert out.returncode == 0, out.stderr
    assert fake_root.rules("iptables") == [] and fake_root.rules("ip6tables") == []
    assert fake_root.runner_jitconfig() == CONFIG


def test_user_data_is_small_enough(script):
    # EC2 user data is limited to 16 KB before base64; the module adds a few settings lines.
    assert len(script.read_bytes()) < 12 * 1024
