"""Shared by the boot-script tests: the rendered boot scripts (runner/render.sh: runner/lib.sh
then runner/<cloud>/boot.sh, as infra/*/runners deliver them), a temporary root with stand-ins
for the commands a boot script must not really run here (shutdown, runuser, useradd, chown,
iptables and ip6tables keeping a rule table, id and sudo describing the runner user), a
virtual clock (`sleep` records its argument and advances it, `date +%s` reads it:
waits are checked by what was asked for, never by wall-clock time), a stand-in `run.sh` that
records its arguments, and moto's server."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNNER = ROOT / "runner"

# Each stand-in appends its arguments (one line, NUL-free, space-joined) to calls/<name>.
RECORD = """#!/bin/bash
printf '%s\\n' "$*" >> "{calls}/{name}"
"""
# runuser -u USER -- CMD...: records, then runs CMD as the current user.
RUNUSER = """#!/bin/bash
printf '%s\\n' "$*" >> "{calls}/runuser"
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift
exec "$@"
"""
# The runner: records its arguments, its working directory and the configuration it finds in
# its environment, then exits with $FAKE_RUNNER_EXIT.
RUN_SH = """#!/bin/bash
for arg in "$@"; do printf '%s\\n' "$arg"; done > "{calls}/run.sh.args"
pwd > "{calls}/run.sh.cwd"
printf '%s' "${{ACTIONS_RUNNER_INPUT_JITCONFIG-<unset>}}" > "{calls}/run.sh.jitconfig"
exit "${{FAKE_RUNNER_EXIT:-0}}"
"""
# iptables / ip6tables: records the call and keeps a rule table, one "CHAIN RULE" line per rule
# and ":CHAIN" per user chain, as the kernel would: -N fails on an existing chain, -C fails
# without the rule, -I/-A fail on a chain that does not exist. $FAKE_DOCKER_USER_CHAIN=1: Docker
# has already created DOCKER-USER (with its RETURN rule and FORWARD's jump).
TABLES = """#!/bin/bash
printf '%s\\n' "$*" >> "{calls}/{name}"
rules="{calls}/{name}.rules"
if [ ! -e "$rules" ]; then
  : > "$rules"
  if [ "${{FAKE_DOCKER_USER_CHAIN:-0}}" = 1 ]; then
    printf '%s\\n' ":DOCKER-USER" "DOCKER-USER -j RETURN" "FORWARD -j DOCKER-USER" >> "$rules"
  fi
fi
op="$1" chain="$2"
shift 2
line="$chain $*"
case "$chain" in INPUT | OUTPUT | FORWARD) ;; *) grep -qxF ":$chain" "$rules" || [ "$op" = -N ] || exit 1 ;; esac
case "$op" in
  -N) grep -qxF ":$chain" "$rules" && exit 1; echo ":$chain" >> "$rules" ;;
  -C) grep -qxF "$line" "$rules" ;;
  -I | -A) echo "$line" >> "$rules" ;;
  *) exit 2 ;;
esac
"""
# id -u USER / id -nG USER: the runner user. It exists when the image has it ($FAKE_USER_GROUPS,
# its groups; $FAKE_USER_UID, its uid) or once useradd has run (then its own group only).
ID = """#!/bin/bash
user="${{!#}}"
if [ -z "${{FAKE_USER_GROUPS:-}}" ] && [ ! -s "{calls}/useradd" ]; then
  echo "id: '$user': no such user" >&2
  exit 1
fi
case "$1" in
  -u) echo "${{FAKE_USER_UID:-1001}}" ;;
  -nG) echo "${{FAKE_USER_GROUPS:-$user}}" ;;
  *) exit 2 ;;
esac
"""
# sudo -n -l -U USER: sudo's answer for a user with rights ($FAKE_SUDO_RULES, what sudoers
# grants) or without.
SUDO = """#!/bin/bash
printf '%s\\n' "$*" >> "{calls}/sudo"
user="${{!#}}"
if [ -n "${{FAKE_SUDO_RULES:-}}" ]; then
  printf 'User %s may run the following commands on host:\\n    %s\\n' "$user" "$FAKE_SUDO_RULES"
else
  printf 'User %s is not allowed to run sudo on host.\\n' "$user"
fi
"""


# sleep N: records N, advances the virtual clock by N, then runs $FAKE_SLEEP_HOOK (an
# executable) if this is sleep number $FAKE_SLEEP_HOOK_AT: "something appears while waiting".
SLEEP = """#!/bin/bash
printf '%s\\n' "$*" >> "{calls}/sleep"
echo $(( $(cat "{clock}") + $1 )) > "{clock}"
if [ -n "${{FAKE_SLEEP_HOOK:-}}" ] && [ "$(wc -l < "{calls}/sleep")" -eq "${{FAKE_SLEEP_HOOK_AT:-1}}" ]; then
  "$FAKE_SLEEP_HOOK"
fi
"""
# date +%s: the virtual clock; any other use (log timestamps) is the real date.
DATE = """#!/bin/bash
if [ "$*" = "+%s" ]; then cat "{clock}"; else exec {date} "$@"; fi
"""
# Where the virtual clock starts (Unix seconds).
CLOCK_START = 1_700_000_000


def rendered(cloud: str, into: pathlib.Path) -> pathlib.Path:
    """The boot script an instance of `cloud` runs (without the settings lines), as
    runner/render.sh prints it."""
    out = into / f"{cloud}-boot.sh"
    text = subprocess.run(
        ["bash", str(RUNNER / "render.sh"), cloud], capture_output=True, text=True, check=True
    ).stdout
    out.write_text(text)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeRoot:
    def __init__(self, path: pathlib.Path):
        self.path = path
        self.calls = path / "calls"
        self.bin = path / "bin"
        self.calls.mkdir()
        self.bin.mkdir()
        for name in ("shutdown", "poweroff", "useradd", "chown"):
            self._script(self.bin / name, RECORD.format(calls=self.calls, name=name))
        for name in ("iptables", "ip6tables"):
            self._script(self.bin / name, TABLES.format(calls=self.calls, name=name))
        self._script(self.bin / "id", ID.format(calls=self.calls))
        self._script(self.bin / "sudo", SUDO.format(calls=self.calls))
        self._script(self.bin / "runuser", RUNUSER.format(calls=self.calls))
        self.clock = path / "clock"
        self.clock.write_text(f"{CLOCK_START}\n")
        self._script(self.bin / "sleep", SLEEP.format(calls=self.calls, clock=self.clock))
        self._script(self.bin / "date", DATE.format(clock=self.clock, date=shutil.which("date")))

    @staticmethod
    def _script(path: pathlib.Path, text: str):
        path.write_text(text)
        path.chmod(0o755)

    def install_runner(self, runner_dir: str = "opt/actions-runner") -> pathlib.Path:
        d = self.path / runner_dir
        d.mkdir(parents=True, exist_ok=True)
        self._script(d / "run.sh", RUN_SH.format(calls=self.calls))
        return d

    def runner_tarball(self) -> pathlib.Path:
        """A runner package like GitHub's: run.sh at the top of a .tar.gz."""
        src = self.path / "package-src"
        src.mkdir()
        self._script(src / "run.sh", RUN_SH.format(calls=self.calls))
        out = self.path / "actions-runner-linux-x64.tar.gz"
        subprocess.run(["tar", "-czf", str(out), "-C", str(src), "run.sh"], check=True)
        return out

    def called(self, name: str) -> list[str]:
        f = self.calls / name
        return f.read_text().splitlines() if f.exists() else []

    def sleeps(self) -> list[int]:
        """The pauses the script asked for, in seconds, in order."""
        return [int(s) for s in self.called("sleep")]

    def hook(self, text: str) -> pathlib.Path:
        """An executable for FAKE_SLEEP_HOOK."""
        path = self.path / "sleep-hook"
        self._script(path, "#!/bin/bash\nset -euo pipefail\n" + text + "\n")
        return path

    def rules(self, tool: str = "iptables") -> list[str]:
        """The rule table iptables/ip6tables was left with: "CHAIN RULE" lines, user chains as
        ":CHAIN", in the order they were added."""
        f = self.calls / f"{tool}.rules"
        return f.read_text().splitlines() if f.exists() else []

    def runner_jitconfig(self) -> str | None:
        """ACTIONS_RUNNER_INPUT_JITCONFIG as the runner found it ("<unset>" if absent)."""
        f = self.calls / "run.sh.jitconfig"
        return f.read_text() if f.exists() else None

    def runner_args(self) -> list[str] | None:
        f = self.calls / "run.sh.args"
        return f.read_text().splitlines() if f.exists() else None

    def log(self) -> str:
        f = self.path / "var/log/scalehook-runner.log"
        return f.read_text() if f.exists() else ""

    def env(self, **extra) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "SCALEHOOK_", "AZURE_"))
        }
        env["PATH"] = f"{self.bin}:{pathlib.Path(sys.executable).parent}:{env.get('PATH', '')}"
        env["SCALEHOOK_ROOT"] = str(self.path)
        env["TMPDIR"] = str(self.path)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, script: pathlib.Path, timeout: float = 60, **extra):
        # `timeout` only stops a hung script; it is no claim about speed.
        return subprocess.run(
            ["bash", str(script)],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture
def fake_root(tmp_path) -> FakeRoot:
    return FakeRoot(tmp_path)


def moto_python() -> str:
    p = os.environ.get("SCALEHOOK_MOTO_PYTHON") or str(ROOT / ".tools/moto-venv/bin/python")
    if not os.path.exists(p):
        pytest.fail(f"no Python with moto at {p}: run `make aws-test-deps`")
    return p


@pytest.fixture(scope="module")
def moto_endpoint():
    """moto's server (the same launcher the Rust tests use), on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [moto_python(), str(ROOT / "crates/scalehook-aws/tests/moto_server.py"), "127.0.0.1", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert proc.poll() is None, "moto exited at start"
            time.sleep(0.1)
    else:
        pytest.fail("moto did not start")
    yield f"http://127.0.0.1:{port}"
    proc.stdin.close()
    proc.kill()
    proc.wait()
