"""runner/azure/boot.sh as a VM runs it (rendered after runner/lib.sh), run for real under a temporary root against loopback stand-ins: Azure
IMDS (computer name, managed identity token; `Metadata: true` required) and a Blob endpoint
that accepts only that bearer token. Azurite is not used here: it accepts bearer tokens only
over HTTPS with --oauth basic, so the script's Blob calls are checked against this stand-in
(GET then DELETE of <container>/<computer name>, x-ms-version, Authorization)."""

from __future__ import annotations

import http.server
import threading

import pytest

from conftest import rendered

NAME = "runnervmss000003"
CONFIG = "eyJhenVyZSI6ImppdCJ9"
TOKEN = "eyJ0eXAiOiJKV1QifQ.storage-token.sig"


class Azure(http.server.BaseHTTPRequestHandler):
    blobs: dict = {}
    seen: list = []

    def log_message(self, *args):
        pass

    def _answer(self, code, body=""):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.seen.append(("GET", self.path))
        if self.path.startswith("/metadata/"):
            if self.headers.get("Metadata") != "true":
                return self._answer(400)
            if self.path.startswith("/metadata/instance/compute/osProfile/computerName"):
                return self._answer(200, NAME)
            if self.path.startswith("/metadata/identity/oauth2/token") and "resource=https%3A%2F%2Fstorage.azure.com%2F" in self.path:
                return self._answer(200, '{"access_token": "%s", "token_type": "Bearer"}' % TOKEN)
            return self._answer(404)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}" or not self.headers.get("x-ms-version"):
            return self._answer(403)
        if self.path in self.blobs:
            return self._answer(200, self.blobs[self.path])
        return self._answer(404)

    def do_DELETE(self):
        self.seen.append(("DELETE", self.path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(403)
        if self.blobs.pop(self.path, None) is None:
            return self._answer(404)
        self._answer(202)


@pytest.fixture
def azure():
    Azure.blobs, Azure.seen = {}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Azure)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    return rendered("azure", tmp_path_factory.mktemp("rendered"))


def boot(fake_root, script, url, **extra):
    settings = dict(
        SCALEHOOK_IMDS_URL=url,
        SCALEHOOK_JIT_CONTAINER_URL=f"{url}/jit-linux-x64",
        SCALEHOOK_JIT_WAIT_SECONDS=20,
        SCALEHOOK_JIT_POLL_SECONDS=1,
    )
    settings.update(extra)
    return fake_root.run(script, **settings)


def test_reads_and_deletes_its_own_blob_and_powers_off(fake_root, script, azure):
    fake_root.install_runner()
    Azure.blobs[f"/jit-linux-x64/{NAME}"] = CONFIG
    Azure.blobs["/jit-linux-x64/runnervmss000004"] = "other"
    out = boot(fake_root, script, azure)
    assert out.returncode == 0, out.stderr
    # In the runner's environment (ACTIONS_RUNNER_INPUT_JITCONFIG), not on its command line.
    assert fake_root.runner_jitconfig() == CONFIG
    assert fake_root.runner_args() == []
    assert fake_root.called("runuser") == ["-u runner -- ./run.sh"]
    assert f"/jit-linux-x64/{NAME}" not in Azure.blobs
    assert "/jit-linux-x64/runnervmss000004" in Azure.blobs
    assert ("DELETE", f"/jit-linux-x64/{NAME}") in Azure.seen
    assert fake_root.called("shutdown") == ["-h now"]
    for text in (fake_root.log(), out.stdout, out.stderr):
        assert CONFIG not in text and TOKEN not in text


def test_missing_blob_gives_up_after_its_bound(fake_root, script, azure):
    fake_root.install_runner()
    out = boot(fake_root, script, azure, SCALEHOOK_JIT_WAIT_SECONDS=3)
    assert out.returncode != 0
    assert fake_root.runner_args() is None
    assert fake_root.called("shutdown") == ["-h now"]
    assert "no runner configuration after 3s: giving up" in fake_root.log()
    # It waited the bound, a pause at a time, then stopped: 3 pauses of 1 s (4 tries).
    assert fake_root.sleeps() == [1, 1, 1]
    blob_gets = [p for m, p in Azure.seen if m == "GET" and p.startswith("/jit-linux-x64/")]
    assert blob_gets == [f"/jit-linux-x64/{NAME}"] * 4


def test_blocks_imds_and_the_wireserver_but_not_its_dns_for_the_runner_and_containers(fake_root, script, azure):
    fake_root.install_runner()
    Azure.blobs[f"/jit-linux-x64/{NAME}"] = CONFIG
    out = boot(fake_root, script, azure)
    assert out.returncode == 0, out.stderr
    rules = fake_root.rules("iptables")
    for target in (
        "-d 169.254.169.254",
        "-d 168.63.129.16 -p tcp --dport 80",
        "-d 168.63.129.16 -p tcp --dport 32526",
    ):
        assert f"OUTPUT {target} -m owner --uid-owner runner -j REJECT" in rules
        assert f"DOCKER-USER {target} -j REJECT" in rules
    assert rules.count("FORWARD -j DOCKER-USER") == 1
    # DNS (168.63.129.16 port 53) stays: every wireserver rule names its port, and no other.
    wireserver = [r for r in rules if "168.63.129.16" in r]
    assert len(wireserver) == 4 and all("--dport 80 " in r or "--dport 32526 " in r for r in wireserver)
    # Azure IMDS has no IPv6 address to block.
    assert fake_root.rules("ip6tables") == []
    assert fake_root.runner_jitconfig() == CONFIG


@pytest.mark.parametrize(
    "groups, uid, sudo, reasons",
    [
        ("runner docker", 1001, "", "group docker"),
        ("runner sudo", 1001, "", "group sudo"),
        ("runner wheel", 1001, "", "group wheel"),
        ("runner adm", 1001, "", "group adm"),
        ("runner", 1001, "(ALL) NOPASSWD: ALL", "sudo rights"),
        ("root", 0, "", "uid 0"),
        ("runner docker adm", 1001, "(root) /usr/bin/apt-get", "group docker,group adm,sudo rights"),
    ],
)
def test_refuses_a_privileged_runner_user(fake_root, script, azure, groups, uid, sudo, reasons):
    fake_root.install_runner()
    Azure.blobs[f"/jit-linux-x64/{NAME}"] = CONFIG
    out = boot(fake_root, script, azure, FAKE_USER_GROUPS=groups, FAKE_USER_UID=uid, FAKE_SUDO_RULES=sudo)
    assert out.returncode != 0
    assert fake_root.runner_args() is None, "the runner never starts"
    assert f"runner user runner is privileged ({reasons}): refusing to start the runner" in fake_root.log()
    assert fake_root.called("useradd") == [], "the image's user, as it is"
    assert fake_root.called("shutdown") == ["-h now"]


def test_an_ordinary_runner_user_of_the_image_is_used(fake_root, script, azure):
    fake_root.install_runner()
    Azure.blobs[f"/jit-linux-x64/{NAME}"] = CONFIG
    out = boot(fake_root, script, azure, FAKE_USER_GROUPS="runner users")
    assert out.returncode == 0, out.stderr
    assert fake_root.called("useradd") == []
    assert fake_root.runner_jitconfig() == CONFIG
    assert "privileged" not in fake_root.log()


def test_a_privileged_runner_user_starts_when_the_pool_allows_it(fake_root, script, azure):
    fake_root.install_runner()
    Azure.blobs[f"/jit-linux-x64/{NAME}"] = CONFIG
    out = boot(fake_root, script, azure, FAKE_USER_GROUPS="runner docker", SCALEHOOK_ALLOW_PRIVILEGED_RUNNER_USER=1)
    assert out.returncode == 0, out.stderr
    assert fake_root.runner_jitconfig() == CONFIG
    assert "runner user runner is privileged (group docker): starting anyway, as allowed" in fake_root.log()
    # The rules are still set: they hold against jobs that do not use the privilege.
    assert "DOCKER-USER -d 169.254.169.254 -j REJECT" in fake_root.rules("iptables")
