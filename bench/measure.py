#!/usr/bin/env python3
"""Process-level measurements of scalehook's three binaries, and bench/RESULTS.md.

For `scalehook serve`, the Lambda `bootstrap` (under a Lambda runtime-API stand-in) and the
Azure custom `handler`:
  - cold start: process spawn to the first answered request (a signed `ping`, which needs no
    cloud call), median of --runs starts;
  - peak RSS (VmHWM from /proc/<pid>/status) once that first answer is in;
the zip sizes; and the sustained throughput of `scalehook serve` under `wrk` on loopback,
with pre-signed real deliveries (see bench/wrk/deliveries.lua), reporting p50/p99 latency.
It then writes bench/RESULTS.md with the machine, the commands, the criterion figures
(target/criterion), the burst and round-trip figures the Rust benches and tests printed as
`SCALEHOOK-BENCH {json}` lines into target/bench/*.log (`make bench-burst`,
`make bench-round-trips`), and each budget as met or missed. `--render-only` measures
nothing: it replaces only the burst and round-trip sections of the existing RESULTS.md with
what the logs hold, so each `make bench-...` target updates its own sections alone.

Only loopback addresses are used; every loop is bounded in count and time. Standard library
only (Python 3.9+).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import http.server
import json
import os
import platform
import queue
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "github"
SECRET = "bench-webhook-secret"
PING = FIXTURES / "ping.organization.octokit.json"
# The Azurite development account key: published in Azure's docs, not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

BUDGETS = {
    "delivery_us": 20.0,  # whole in-process delivery of a 10 KB payload
    "cold_start_ms": 20.0,
    "rss_mb": 20.0,
    "zip_mb": 6.0,
    "throughput_rps": 20000.0,
    "p99_ms": 5.0,
}


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def ping_request(path: str) -> bytes:
    body = PING.read_bytes()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: ping\r\nX-GitHub-Delivery: 11111111-2222-3333-4444-555555555555\r\n"
        f"X-Hub-Signature-256: {sign(body)}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def http_status(raw: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else 0


def first_answer_http(proc: subprocess.Popen, port: int, request: bytes, deadline: float) -> int:
    """Connects as soon as the port accepts, sends `request`, returns the status."""
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before answering")
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            time.sleep(0.0002)
            continue
        with s:
            s.sendall(request)
            raw = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
        return http_status(raw)
    raise RuntimeError("no answer within the deadline")


def cold_start_http(name: str, argv: list[str], env: dict, port: int, path: str, runs: int) -> dict:
    request = ping_request(path)
    times, rss = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            status = first_answer_http(proc, port, request, t0 + 30)
            t1 = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"{name}: first answer was {status}, not 200")
            rss.append(vm_hwm_kib(proc.pid))
        finally:
            stop(proc)
        times.append((t1 - t0) * 1000)
    return summarize(name, times, rss)


def summarize(name: str, times: list[float], rss: list[int | None]) -> dict:
    rss_known = [r for r in rss if r]
    return {
        "binary": name,
        "runs": len(times),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "peak_rss_kib": max(rss_known) if rss_known else None,
    }


class RuntimeApi:
    """The Lambda service's side of the runtime API: hands out one event per invocation
    and timestamps the function's response POST."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                try:
                    rid, event = api.events.get(timeout=60)
                except queue.Empty:
                    self.send_error(410)
                    return
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                self.send_header(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:scalehook",
                )
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                at = time.perf_counter()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                api.replies.put((at, self.path, body))

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # a killed function's connection: expected, not a failure

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def function_url_event(body: bytes) -> dict:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "x-github-event": "ping",
            "x-github-delivery": "11111111-2222-3333-4444-555555555555",
            "x-hub-signature-256": sign(body),
            "user-agent": "GitHub-Hookshot/bench",
            "host": "abc123.lambda-url.us-east-1.on.aws",
        },
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc123",
            "http": {
                "method": "POST",
                "path": "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "140.82.115.10",
                "userAgent": "GitHub-Hookshot/bench",
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "22/Nov/2026:03:00:00 +0000",
            "timeEpoch": 1795316400000,
        },
        "body": body.decode(),
        "isBase64Encoded": False,
    }


def cold_start_bootstrap(path: Path, runs: int) -> dict:
    dead = free_port()  # nothing listens here: any AWS call before the event would fail
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_FUNCTION_NAME": "scalehook",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/22/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/scalehook",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "TZ": ":UTC",
        "SCALEHOOK_CONFIG_TOML": '[[pools]]\nname = "linux"\nlabels = ["self-hosted", "linux", "x64"]\nmax = 4\naws_asg = "runners"\n',
        "SCALEHOOK_DYNAMODB_TABLE": "ledger",
        "SCALEHOOK_WEBHOOK_SECRET": SECRET,
    }
    event = function_url_event(PING.read_bytes())
    times, rss = [], []
    for i in range(runs):
        # A fresh stand-in each run: the killed function's pending poll must not take the
        # next run's event.
        api = RuntimeApi()
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{api.port}"
        rid = f"req-{i:04d}"
        api.events.put((rid, event))  # queued first: the function's first poll finds it
        try:
            t0 = time.perf_counter()
            proc = subprocess.Popen([str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                at, where, body = api.replies.get(timeout=30)
                if not where.endswith(f"/invocation/{rid}/response"):
                    raise RuntimeError(f"bootstrap answered {where}: {body[:300]!r}")
                answer = json.loads(body)
                if answer.get("statusCode") != 200:
                    raise RuntimeError(f"bootstrap: first answer {answer}")
                rss.append(vm_hwm_kib(proc.pid))
            finally:
                stop(proc)
        finally:
            api.close()
        times.append((at - t0) * 1000)
    return summarize("bootstrap (Lambda)", times, rss)


def cold_start_handler(path: Path, runs: int) -> dict:
    port = free_port()
    dead = free_port()  # nothing listens here: Table Storage, ARM and the identity endpoint
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FUNCTIONS_CUSTOMHANDLER_PORT": str(port),
        "SCALEHOOK_WEBHOOK_SECRET": SECRET,
        "SCALEHOOK_CONFIG_TOML": (
            '[[pools]]\nname = "linux"\nlabels = ["self-hosted", "linux", "x64"]\nmax = 4\n'
            'azure_vmss = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/'
            'providers/Microsoft.Compute/virtualMachineScaleSets/runners"\n'
        ),
        "SCALEHOOK_TABLE_ENDPOINT": f"http://127.0.0.1:{dead}/devstoreaccount1",
        "SCALEHOOK_TABLE_ACCOUNT_KEY": AZURITE_KEY,
        "SCALEHOOK_ARM_ENDPOINT": f"http://127.0.0.1:{dead}",
        "IDENTITY_ENDPOINT": f"http://127.0.0.1:{dead}/msi/token",
        "IDENTITY_HEADER": "bench",
    }
    return cold_start_http("handler (Azure)", [str(path)], env, port, "/api/webhook", runs)


def cold_start_serve(path: Path, runs: int) -> dict:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SCALEHOOK_WEBHOOK_SECRET": SECRET}
    argv = [str(path), "serve", "--listen", f"127.0.0.1:{port}"]
    return cold_start_http("scalehook serve", argv, env, port, "/webhook", runs)


def write_deliveries(path: Path, jobs: int) -> dict:
    """Real payloads as whole job lives: queued (the 9.8 KB 2021 self-hosted capture),
    in_progress and completed (octokit's, labels made self-hosted), with distinct job ids."""
    queued = (FIXTURES / "workflow_job.queued.self-hosted.2021-capture.philips-labs.json").read_text()
    started = (FIXTURES / "workflow_job.in_progress.octokit.json").read_text()
    done = (FIXTURES / "workflow_job.completed.success.with-organization.octokit.json").read_text()

    def hosted_to_self(text: str) -> str:
        return text.replace('"ubuntu-latest"', '"self-hosted"').replace('"GitHub Actions 5"', '"linux-x64-0001"')

    started, done = hosted_to_self(started), hosted_to_self(done)
    sizes = []
    with path.open("wb") as f:
        for j in range(jobs):
            job = str(4_000_000_000 + j)
            for n, text in enumerate(
                (queued.replace("3169272040", job), started.replace("289782451", job), done.replace("289782451", job))
            ):
                body = text.encode()
                sizes.append(len(body))
                guid = f"{j:08x}-0000-4000-8000-{n:012x}"
                f.write(f"workflow_job\t{sign(body)}\t{guid}\t{len(body)}\t{j}\n".encode())
                f.write(body + b"\n")
    return {"requests_distinct": len(sizes), "mean_body_bytes": sum(sizes) / len(sizes)}


def throughput_serve(path: Path, duration: int, connections: int, threads: int, jobs: int) -> dict:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SCALEHOOK_WEBHOOK_SECRET": SECRET}
    argv = [str(path), "serve", "--listen", f"127.0.0.1:{port}"]
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "deliveries.txt"
        mix = write_deliveries(file, jobs)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if first_answer_http(proc, port, ping_request("/webhook"), time.perf_counter() + 30) != 200:
                raise RuntimeError("serve did not answer the ping")
            wrk = [
                "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
                "-s", str(ROOT / "bench" / "wrk" / "deliveries.lua"), f"http://127.0.0.1:{port}",
            ]
            wenv = dict(os.environ, WRK_DELIVERIES=str(file), WRK_THREADS=str(threads))
            # CPU time, not only wall time: on a shared machine it says what one delivery
            # costs whatever else runs (wrk's own is the children's rusage around it).
            server_cpu0, wrk_cpu0 = cpu_seconds(proc.pid), children_cpu_seconds()
            out = subprocess.run(wrk, env=wenv, capture_output=True, text=True, timeout=duration + 120)
            server_cpu, wrk_cpu = cpu_seconds(proc.pid) - server_cpu0, children_cpu_seconds() - wrk_cpu0
            if out.returncode != 0:
                raise RuntimeError(f"wrk failed: {out.stderr}")
            line = next((l for l in out.stdout.splitlines() if l.startswith("WRK_RESULT ")), None)
            if not line:
                raise RuntimeError(f"no WRK_RESULT in wrk's output:\n{out.stdout}")
            result = json.loads(line[len("WRK_RESULT "):])
            result["server_cpu_us"] = server_cpu * 1e6 / max(result["requests"], 1)
            result["wrk_cpu_us"] = wrk_cpu * 1e6 / max(result["requests"], 1)
            result["rss_after_kib"] = vm_hwm_kib(proc.pid)
            # what the server itself counted, from its own metrics
            result["metrics"] = scrape_outcomes(port)
        finally:
            stop(proc)
    result.update(mix)
    result["command"] = " ".join(shlex.quote(a) for a in wrk)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def scrape_outcomes(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    counts = {}
    for line in raw.decode(errors="replace").splitlines():
        m = re.match(r'scalehook_deliveries_total\{[^}]*outcome="([^"]+)"[^}]*\}\s+(\d+)', line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2))
    return counts


def unzip_member(archive: Path, member: str, into: Path) -> Path:
    """Extracts `member` of `archive` (executable) into `into`; a missing zip gives a path
    that does not exist, reported like any missing binary."""
    out = into / member
    if archive.is_file():
        into.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as z:
            out.write_bytes(z.read(member))
        out.chmod(0o755)
    return out


def run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine() -> dict:
    lscpu = run(["lscpu"])
    model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
    mem = next((l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), "0")
    flags = Path("/proc/cpuinfo").read_text()
    return {
        "nproc": run(["nproc"]),
        "cpu": model,
        "sha_ni": "yes" if re.search(r"\bsha_ni\b", flags) else "no",
        "avx2": "yes" if re.search(r"\bavx2\b", flags) else "no",
        "memory_gib": f"{int(mem) / 1024 / 1024:.1f}",
        "kernel": platform.release(),
        "rustc": run(["rustc", "--version"]),
        "wrk": run(["wrk", "--version"]).splitlines()[0] if run(["wrk", "--version"]) else "?",
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def shown_path(path: Path, args) -> str:
    for archive, member in ((args.lambda_zip, "bootstrap"), (args.azure_zip, "handler")):
        if path.name == member and "scalehook-bench-" in str(path):
            return f"{os.path.relpath(archive, ROOT)}:{member}"
    return os.path.relpath(path, ROOT)


def criterion_rows(directory: Path) -> list[dict]:
    rows = []
    for bench in sorted(directory.glob("*/*/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        med = est["median"]
        tp = meta.get("throughput") or {}
        # The fastest of the samples (each many iterations): on a shared machine, the one
        # least disturbed by other work; a lower bound of what a quiet machine would show.
        samples = json.loads((bench.parent / "sample.json").read_text())
        fastest = min(t / i for t, i in zip(samples["times"], samples["iters"]) if i)
        rows.append(
            {
                "id": meta["full_id"],
                "median_ns": med["point_estimate"],
                "low_ns": med["confidence_interval"]["lower_bound"],
                "high_ns": med["confidence_interval"]["upper_bound"],
                "fastest_ns": fastest,
                "bytes": tp.get("Bytes"),
                "elements": tp.get("Elements"),
            }
        )
    return rows


def fmt_ns(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def render(args, info, crit, starts, zips, load, missing, notes, figures=None) -> str:
    out = []
    w = out.append
    w("# scalehook benchmark results\n")
    w(f"Taken {info['date']} by `make bench` ({args.mode} run). Regenerate with `make bench`;")
    w("this file is written by `bench/measure.py` (the analysis at the end is `bench/NOTES.md`).\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    w(f"| CPUs (`nproc`) | {info['nproc']} |")
    w(f"| model (`lscpu`) | {info['cpu']} |")
    w(f"| SHA extensions (`sha_ni` in /proc/cpuinfo) | {info['sha_ni']} (AVX2: {info['avx2']}) |")
    w(f"| memory | {info['memory_gib']} GiB |")
    w(f"| kernel | {info['kernel']} |")
    w(f"| compiler | {info['rustc']} |")
    w(f"| load generator | {info['wrk']} |")
    w(f"| load average (1/5/15 min) before / after | {info['load']} / {info['load_after']} |")
    w("")
    w("The machine is a shared 2-core VM: other builds may have run during the measurement (see")
    w("the load average). Figures on a quiet machine are lower, never higher.\n")
    w("## Commands\n")
    w("```")
    for c in info["commands"]:
        w(c)
    w("```\n")
    w("## Per-delivery path (criterion, in process)\n")
    w("Median time per iteration with its 95% confidence interval. `delivery/*` is the whole")
    w("`Service::handle` with `MemoryLedger`, `LocalFleet` and `LogFormat::Off`;")
    w("`lifecycle-3-deliveries` is one job's queued, in_progress and completed deliveries.")
    w("The fastest sample (of 100, each many iterations) is the one least disturbed by other")
    w("work on this shared machine. Throughput is computed from the median.\n")
    if crit:
        w("| benchmark | median | 95% CI | fastest sample | throughput |\n|---|---:|---|---:|---:|")
        for r in crit:
            tp = ""
            if r["bytes"]:
                tp = f"{r['bytes'] / (r['median_ns'] / 1e9) / 1e6:.0f} MB/s"
            elif r["elements"]:
                tp = f"{fmt_ns(r['median_ns'] / r['elements'])} each"
            w(f"| `{r['id']}` | {fmt_ns(r['median_ns'])} | {fmt_ns(r['low_ns'])} – {fmt_ns(r['high_ns'])} | {fmt_ns(r['fastest_ns'])} | {tp} |")
    else:
        w("_no criterion results found under target/criterion_")
    w("")
    w(f"## Cold start and memory (median of {args.runs} starts each)\n")
    w("Process spawn to the first answered request: a signed `ping` (2.8 KB, no cloud call). Peak")
    w("RSS is VmHWM once that answer is in. `bootstrap` runs under a Lambda runtime-API stand-in")
    w("(Python, in bench/measure.py) and the time ends when its response POST arrives; every")
    w("cloud endpoint points at a closed loopback port, so a cloud call before the event would")
    w("fail or show in the time.\n")
    w("| binary | file | median | min | max | peak RSS |\n|---|---|---:|---:|---:|---:|")
    for s in starts:
        rss = f"{s['peak_rss_kib'] / 1024:.1f} MiB" if s.get("peak_rss_kib") else "?"
        w(f"| {s['binary']} | `{s['path']}` ({s['size'] / 1e6:.1f} MB) | {s['median_ms']:.1f} ms | {s['min_ms']:.1f} ms | {s['max_ms']:.1f} ms | {rss} |")
    for m in missing:
        w(f"| {m} | _not measured: binary missing_ | | | | |")
    w("\n## Zip sizes\n")
    w("| zip | size |\n|---|---:|")
    for z in zips:
        w(f"| `{z['path']}` | {z['size'] / 1e6:.2f} MB ({z['size']} bytes) |" if z["size"] is not None else f"| `{z['path']}` | _missing_ |")
    w("\n## Sustained throughput of `scalehook serve`\n")
    if load:
        w(f"`{load['command']}` against the release build (JSON logs on, to /dev/null). Requests are")
        w(f"{load['jobs']} jobs' real queued, in_progress and completed deliveries ({load['requests_distinct']}")
        w(f"distinct signed bodies, {load['mean_body_bytes'] / 1000:.1f} KB on average), each thread playing")
        w("its share of the jobs in order and then starting over: the first pass is new transitions,")
        w("later passes are redeliveries (handled in full, ledger unchanged). wrk and the server share")
        w("the machine's CPUs. CPU per delivery is the server's (and wrk's) user + system time over")
        w("the run divided by the deliveries; `nproc` CPUs / (server + wrk CPU per delivery) is the")
        w("rate the machine could sustain with nothing else running.\n")
        w("| deliveries | duration | deliveries/s | p50 | p90 | p99 | p99.9 | max | errors | server CPU / delivery | wrk CPU / delivery | CPU-bound rate | server peak RSS |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        errors = sum(load[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_status", "errors_timeout"))
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(load["metrics"].items()))
        rss = f"{load['rss_after_kib'] / 1024:.1f} MiB" if load.get("rss_after_kib") else "?"
        w(
            f"| {load['requests']} | {load['duration_us'] / 1e6:.1f} s | {load['rps']:.0f} | {load['p50_us'] / 1000:.2f} ms "
            f"| {load['p90_us'] / 1000:.2f} ms | {load['p99_us'] / 1000:.2f} ms | {load['p999_us'] / 1000:.2f} ms "
            f"| {load['max_us'] / 1000:.2f} ms | {errors} | {load['server_cpu_us']:.0f} µs | {load['wrk_cpu_us']:.0f} µs "
            f"| {cpu_bound_rate(load, info):.0f}/s | {rss} |"
        )
        w(f"\nThe server's own count of outcomes: {outcomes}.")
    else:
        w("_not measured_")
    w("")
    render_burst(w, figures or {})
    render_round_trips(w, figures or {})
    render_github_reads(w, figures or {})
    render_answer_times(w, figures or {})
    render_hand_on(w, figures or {})
    w("## Budgets\n")
    w("| budget | figure | verdict |\n|---|---|---|")
    for b in budgets(crit, starts, zips, load):
        w(f"| {b[0]} | {b[1]} | {verdict(b[2])} |")
    if notes:
        w("\n" + notes.strip() + "\n")
    return "\n".join(out) + "\n"


BENCH_TAG = "SCALEHOOK-BENCH "


def read_figures(directory: Path) -> dict:
    """The `SCALEHOOK-BENCH {json}` lines of every log under `directory`, by log name, with
    the commands (`SCALEHOOK-BENCH-COMMAND <cmd>`) and load averages
    (`SCALEHOOK-BENCH-LOAD <1 5 15>`) the make targets wrote around them."""
    logs = {}
    for log in sorted(directory.glob("*.log")) if directory.is_dir() else []:
        entry = {"rows": [], "commands": [], "load": [], "date": None}
        entry["date"] = datetime.datetime.fromtimestamp(log.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(BENCH_TAG):
                try:
                    entry["rows"].append(json.loads(line[len(BENCH_TAG):]))
                except json.JSONDecodeError:
                    pass
            elif line.startswith("SCALEHOOK-BENCH-COMMAND "):
                entry["commands"].append(line.split(" ", 1)[1])
            elif line.startswith("SCALEHOOK-BENCH-LOAD "):
                entry["load"].append(line.split(" ", 1)[1])
        logs[log.stem] = entry
    return logs


def longest_chain(calls: list[dict]) -> int:
    """The most calls of which no two overlap in time: the round trips a delivery waits for
    one after the other (greedy by end time; a call's interval is [start, end])."""
    spans = sorted(((c["start_us"], c["end_us"] if c.get("end_us") is not None else c["start_us"]) for c in calls), key=lambda s: s[1])
    chain, last_end = 0, -1
    for start, end in spans:
        if start >= last_end:
            chain += 1
            last_end = end
    return chain


def log_provenance(w, entries: list[dict]) -> None:
    """The commands that printed these figures, when, and the load average around each."""
    cmds = [c for e in entries for c in e["commands"]]
    if cmds:
        w("```")
        for c in cmds:
            w(c)
        w("```\n")
    for e in entries:
        if e["rows"]:
            what = e["commands"][0].split(" -- ")[0] if e["commands"] else "?"
            w(f"- `{what}`: finished {e['date']}; load average (1/5/15 min) before / after: {' / '.join(e['load']) or '?'}")
    w("")


def fmt_calls(calls: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(calls.items()) if v) or "none"


def render_burst(w, figures: dict) -> None:
    w("## Burst through 8 services (memory ledger)\n")
    e = figures.get("burst-memory")
    rows = e["rows"] if e else []
    if not rows:
        w("_not measured: run `make bench-burst-memory`_\n")
    else:
        r0 = rows[0]
        w(f"`crates/scalehook-core/benches/burst.rs`: {r0['services']} independent `Service`s (no shared lock or")
        w("cache) over one `MemoryLedger` and one recorded `LocalFleet`, on a multi-threaded tokio runtime")
        w(f"({r0.get('workers', '?')} worker threads); each service takes one delivery at a time from a shared queue. {r0['jobs']} jobs queued,")
        w("then in progress, then completed, every fifth delivered twice more, as real signed payloads")
        w(f"(`fixtures/github/`, ~10 KB each): {r0['deliveries']} deliveries through `Service::handle` per run. The second")
        w("row delays every fleet call by the given latency (a cloud API's), so per-pool serialization")
        w("(the lease) and deferral show: deliveries that find the lease taken answer `deferred` once their")
        w("record is durable, and the holder's pass converges them.\n")
        w("| fleet latency | runs | deliveries/s median | range | fleet calls per delivery | deferred (median) | 5xx | capacity = target after each phase |")
        w("|---:|---:|---:|---|---:|---:|---:|---|")
        for latency in sorted({r["fleet_latency_ms"] for r in rows}):
            rs = [r for r in rows if r["fleet_latency_ms"] == latency]
            rates = [r["per_second"] for r in rs]
            per = statistics.median(sum(r["fleet_calls"].values()) / r["deliveries"] for r in rs)
            deferred = statistics.median(r["deferred"] for r in rs)
            fivexx = sum(v for r in rs for k, v in r["statuses"].items() if int(k) >= 500)
            ok = all(p["capacity"] == p["target"] for r in rs for p in r["phases"])
            w(f"| {latency} ms | {len(rs)} | {statistics.median(rates):,.0f} | {min(rates):,.0f} – {max(rates):,.0f} | {per:.3f} | {deferred:.0f} | {fivexx} | {'yes' if ok else '**no**'} |")
        w("")
        log_provenance(w, [e])

    w("## Fleet calls per delivery in a 300-job burst, per ledger\n")
    w("Three phases of 300 jobs (queued, in_progress, completed, with duplicates) through 8")
    w("independent services. Memory: the bench above (its first run without latency). DynamoDB on")
    w("moto and Table Storage on Azurite: the burst tests (`crates/scalehook-aws/tests/burst.rs`,")
    w("`crates/scalehook-azure/tests/burst.rs`), which print the same figures as one")
    w("`SCALEHOOK-BENCH` line; their fleet is an in-process stand-in that records every `Fleet` call")
    w("(an `AsgFleet`/`VmssFleet` call is one such call; moto's group and the ARM double are not")
    w("used there, so a describe that pages VMs counts once). Ledger requests are the HTTP")
    w("requests (attempts) the ledgers sent. Capacity is the stand-in's after the phase; target is")
    w("the policy's for the ledger's exact counts.\n")
    sources = [("memory", "burst-memory"), ("DynamoDB on moto", "burst-aws"), ("Table Storage on Azurite", "burst-azure")]
    w("| ledger | phase | deliveries | seconds | fleet calls | fleet calls per delivery | ledger requests per delivery | capacity / target | 5xx |")
    w("|---|---|---:|---:|---|---:|---:|---:|---:|")
    used = []
    for label, name in sources:
        e = figures.get(name)
        rs = [r for r in (e["rows"] if e else []) if r.get("bench") == "burst" and not r.get("fleet_latency_ms")]
        if not rs:
            w(f"| {label} | _not measured_ | | | | | | | |")
            continue
        used.append(e)
        r = rs[0]
        total_d = total_c = 0
        for p in r["phases"]:
            calls = sum(p["fleet_calls"].values())
            total_d += p["deliveries"]
            total_c += calls
            ledger = f"{p['ledger_requests'] / p['deliveries']:.1f}" if p.get("ledger_requests") is not None else "–"
            w(f"| {label} | {p['phase']} | {p['deliveries']} | {p['seconds']:.2f} | {fmt_calls(p['fleet_calls'])} | {calls / p['deliveries']:.3f} | {ledger} | {p['capacity']} / {p['target']} | {p['fivexx']} |")
        w(f"| {label} | **all** | {total_d} | {sum(p['seconds'] for p in r['phases']):.2f} | {total_c} | **{total_c / total_d:.3f}** | | | {sum(p['fivexx'] for p in r['phases'])} |")
    w("")
    log_provenance(w, [e for e in used if e and e is not figures.get("burst-memory")])


def render_round_trips(w, figures: dict) -> None:
    w("## Cloud round trips on the path of one delivery\n")
    rows = [r for name in ("round-trips-aws", "round-trips-azure") if figures.get(name) for r in figures[name]["rows"] if r.get("bench") == "round-trips"]
    if not rows:
        w("_not measured: run `make bench-round-trips`_\n")
        return
    w("Every HTTP request one delivery makes, in order of start, recorded with its start and end:")
    w("AWS by an interceptor on the DynamoDB and Auto Scaling SDK clients (`DynamoLedger` and")
    w("`AsgFleet` on moto, `crates/scalehook-aws/tests/round_trips.rs`), Azure by a recording reverse")
    w("proxy in front of Azurite and the ARM double (`TableLedger` and `VmssFleet` with the handler's")
    w("HTTP client, `crates/scalehook-azure/tests/round_trips.rs`). Per job: a new queued job (the")
    w("pool scales out), the same queued delivery again, in_progress on the new instance, completed")
    w("(the instance is removed). *own process*: each delivery by a new `Service` (as on another")
    w("Lambda environment or Functions host: no in-process memory of earlier passes); *one warm")
    w("process*: all four by one `Service`. **Sequential** is the longest chain of requests no two")
    w("of which overlap: the round trips the delivery waits for one after another (requests that")
    w("overlap lower it below the count; the Azure proxy sees a request when it arrives, so two")
    w("the client starts together may show as one after the other when one is quick). Time is the")
    w("whole `Service::handle` on loopback against the emulators (median over the jobs); a cloud")
    w("round trip is ~5–30 ms instead, so sequential × that is what a user waits and pays for.")
    w("DynamoDB items in parentheses are the `pk` kinds the request names; Table requests name the")
    w("partition (`pool counters`: the counter shards, `pool markers`: the busy-job markers).\n")
    w("| cloud | mode | delivery | answer | requests, in order | requests | sequential | time (median) |")
    w("|---|---|---|---|---|---:|---:|---:|")
    groups = {}
    for r in rows:
        groups.setdefault((r["cloud"], r["mode"], r["kind"]), []).append(r)
    for (cloud, mode, kind), rs in groups.items():
        seqs = [" → ".join(c["name"] for c in sorted(r["calls"], key=lambda c: c["start_us"])) for r in rs]
        common = max(set(seqs), key=seqs.count)
        example = rs[seqs.index(common)]
        counts = sorted(len(r["calls"]) for r in rs)
        chains = sorted(longest_chain(r["calls"]) for r in rs)
        span = lambda v: f"{v[0]}" if v[0] == v[-1] else f"{v[0]}–{v[-1]}"
        other = f" ({len(rs) - seqs.count(common)} of {len(rs)} differ)" if seqs.count(common) < len(rs) else ""
        answer = f"{example['status']} {example.get('decision') or ''}".strip()
        ms = statistics.median(r["total_us"] for r in rs) / 1000
        w(f"| {cloud} | {mode} | {kind} | {answer} | {common or '(none)'}{other} | {span(counts)} | {span(chains)} | {ms:.1f} ms |")
    w("")
    log_provenance(w, [figures[n] for n in ("round-trips-aws", "round-trips-azure") if figures.get(n)])


def render_github_reads(w, figures: dict) -> None:
    w("## GitHub runner reads per scale-in and per reconcile\n")
    e = figures.get("github-reads")
    rows = [r for r in (e or {}).get("rows", []) if r.get("bench") == "github-reads"]
    if not rows:
        w("Not measured yet: `make bench-github-reads`.\n")
        return
    latency = rows[0]["latency_ms"]
    w(f"`crates/scalehook-github/tests/scoped_reads.rs` against the OpenAPI-checked GitHub double with {latency} ms")
    w("added to every answer (the double's own time is on top). Requests counted by the double (the installation")
    w("token is cached first). Scale-in: the reads and the removal of one instance with one idle runner; reconcile:")
    w("the runners of a pool of 20 instances. *Whole org* is the read before issue 20 (every runner, all pages);")
    w("the old client gave it 3.5 s in all, so where it takes longer every removal and JIT mint was withheld.\n")
    sizes = sorted({r["org_runners"] for r in rows})
    w("| | read | " + " | ".join(f"{n:,} runners: requests, wall" for n in sizes) + " |")
    w("|---|---|" + "---|" * len(sizes))
    for kind in ("scale-in", "reconcile"):
        for read in dict.fromkeys(r["read"] for r in rows if r["kind"] == kind):
            cells = []
            for n in sizes:
                r = next((x for x in rows if (x["kind"], x["read"], x["org_runners"]) == (kind, read, n)), None)
                cells.append(f"{r['requests']}, {r['wall_ms'] / 1000:.1f} s" if r else "-")
            w(f"| {kind} | {read} | " + " | ".join(cells) + " |")
    w("")
    log_provenance(w, [e])


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (the smallest value at least p % of them do not exceed)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


ANSWER_LOGS = ("answer-times-aws", "answer-times-azure")
GITHUB_LIMIT_MS = 10_000


def render_answer_times(w, figures: dict) -> None:
    w("## Answer time per delivery kind under cloud latencies\n")
    rows = [r for name in ANSWER_LOGS if figures.get(name) for r in figures[name]["rows"] if r.get("bench") == "answer-times"]
    if not rows:
        w("_not measured: run `make bench-answer-times`_\n")
        return
    w("The round-trip tests above (`crates/scalehook-aws/tests/round_trips.rs`,")
    w("`crates/scalehook-azure/tests/round_trips.rs`) with `SCALEHOOK_BENCH_LATENCY=1`: every request")
    w("to an emulator or double first goes through the fault proxy of the model tests")
    w("(`crates/scalehook-core/tests/model_support/fault_proxy.rs`, faults off), which holds it for")
    w("the service's round trip before forwarding it. Unlike the round trips above, the service")
    w("has the GitHub App (`scalehook_github::GitHubApp`) against the OpenAPI-checked GitHub double,")
    w("behind its own delaying proxy, which times its requests (`gh:`), with the instance's runner")
    w("registered (busy while the job runs, idle at completed): a completed delivery reads GitHub's")
    w("runners in the pass, reads the instance's runners again right before the removal and")
    w("deregisters them. A new `Service` (*own process*) has a new App, so it mints its installation")
    w("token first. Time is the whole `Service::handle` (what GitHub waits for), over the jobs of")
    w("both modes (*own process* and *one warm process*, as above); p99 is the nearest rank, so with")
    w(f"fewer than 100 jobs it is the slowest one. GitHub gives up after {GITHUB_LIMIT_MS // 1000} s.\n")
    for cloud in sorted({r["cloud"] for r in rows}):
        lat = next((r.get("latency_ms") for r in rows if r["cloud"] == cloud and r.get("latency_ms")), {}) or {}
        w(f"- {cloud}: " + ", ".join(f"{k} {v} ms per request" for k, v in lat.items()))
    w("")
    w("| cloud | delivery | answer | deliveries | cloud requests (median) | GitHub requests (median) | GitHub requests, in order (most common) | sequential (median) | p50 | p99 | max | share of GitHub's 10 s (max) |")
    w("|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    groups = {}
    for r in rows:
        groups.setdefault((r["cloud"], r["kind"]), []).append(r)
    for (cloud, kind), rs in groups.items():
        ms = [r["total_us"] / 1000 for r in rs]
        answers = sorted({f"{r['status']} {r.get('decision') or ''}".strip() for r in rs})
        github = [[c["name"][3:] for c in sorted(r["calls"], key=lambda c: c["start_us"]) if c["name"].startswith("gh:")] for r in rs]
        reqs = statistics.median(len(r["calls"]) - len(g) for r, g in zip(rs, github))
        gh_reqs = statistics.median(len(g) for g in github)
        orders = [" → ".join(g) or "(none)" for g in github]
        order = max(set(orders), key=orders.count)
        differ = len(rs) - orders.count(order)
        order += f" ({differ} of {len(rs)} differ)" if differ else ""
        seq = statistics.median(longest_chain(r["calls"]) for r in rs)
        w(f"| {cloud} | {kind} | {', '.join(answers)} | {len(rs)} | {reqs:g} | {gh_reqs:g} | {order} | {seq:g} | {percentile(ms, 50):.0f} ms | {percentile(ms, 99):.0f} ms | {max(ms):.0f} ms | {100 * max(ms) / GITHUB_LIMIT_MS:.0f} % |")
    w("")
    log_provenance(w, [figures[n] for n in ANSWER_LOGS if figures.get(n)])


def render_hand_on(w, figures: dict) -> None:
    w("## Converging after a burst: a pass's left work handed on\n")
    e = figures.get("burst-hand-on")
    rows = [r for r in (e["rows"] if e else []) if r.get("bench") == "burst-hand-on"]
    if not rows:
        w("_not measured: run `make bench-burst-hand-on`_\n")
        return
    r0 = rows[0]
    w(f"`crates/scalehook-core/tests/hand_on.rs` (ignored by `make test`): {r0['services']} `Service`s (processes)")
    w(f"over one `MemoryLedger` and one `LocalFleet` whose every call takes {r0['fleet_latency_ms']} ms (an Auto Scaling")
    w(f"call; removal is one call per instance), {r0['jobs']} jobs queued, in progress, completed, pool max {r0['max']},")
    w("one runner per instance, each service one delivery at a time. *hand-on off*: the services only")
    w("answer; *on*: each runs `Service::continue_left_work` after its answer, as the adapters do.")
    w("Capacity and target after the completions, before any reconcile.\n")
    w("| hand-on | capacity after completions | target | work left (metric, summed) | 5xx | seconds |")
    w("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        w(f"| {'on' if r['hand_on'] else 'off'} | {r['capacity']} | {r['target']} | {r['work_left_metric_sum']} | {r['fivexx']} | {r['seconds']:.1f} |")
    w("")
    log_provenance(w, [e])


FIGURE_SECTIONS = ("## Burst through 8 services", "## Budgets")


# The sections `splice` renders, in file order: (first heading, renderer, the logs it reads).
SPLICED = (
    ("## Burst through 8 services", render_burst, ("burst-memory", "burst-aws", "burst-azure")),
    ("## Cloud round trips", render_round_trips, ("round-trips-aws", "round-trips-azure")),
    ("## Answer time per delivery kind", render_answer_times, ANSWER_LOGS),
    ("## Converging after a burst", render_hand_on, ("burst-hand-on",)),
    ("## GitHub runner reads", render_github_reads, ("github-reads",)),
)


def splice(out: Path, figures: dict) -> int:
    """Replaces the burst, round-trip and GitHub-read sections of `out` (everything from the
    first of them up to `## Budgets`) with freshly rendered ones, keeping the rest as it is.
    A section none of whose logs is present (its target did not run here) keeps its text."""
    text = out.read_text() if out.is_file() else ""
    head, end = FIGURE_SECTIONS
    if end not in text:
        print(f"measure.py: {os.path.relpath(out, ROOT)} has no '{end}' section: run `make bench-measure` first", file=sys.stderr)
        return 1
    lines = []
    for i, (heading, renderer, logs) in enumerate(SPLICED):
        at = text.find(heading)
        if at >= 0 and not any(figures.get(name) for name in logs):
            later = [text.find(h, at + 1) for h, _, _ in SPLICED[i + 1:]] + [text.index(end)]
            lines.append(text[at:min(p for p in later if p > at)].rstrip("\n") + "\n")
        else:
            renderer(lines.append, figures)
    block = "\n".join(lines) + "\n"
    start = text.find(head)
    if start < 0:
        start = text.index(end)
    text = text[:start] + block + text[text.index(end):]
    # The analysis at the end is bench/NOTES.md as it is now.
    notes_file = ROOT / "bench/NOTES.md"
    notes = notes_file.read_text().strip() if notes_file.is_file() else ""
    if notes and notes.splitlines()[0] in text:
        text = text[: text.index(notes.splitlines()[0])] + notes + "\n"
    out.write_text(text)
    print(f"wrote the measured sections of {os.path.relpath(out, ROOT)} ({', '.join(sorted(n for n in figures if figures[n]['rows'])) or 'none'})", file=sys.stderr)
    return 0


def cpu_bound_rate(load: dict, info: dict) -> float:
    try:
        cpus = int(info["nproc"])
    except ValueError:
        cpus = 1
    return cpus * 1e6 / max(load["server_cpu_us"] + load["wrk_cpu_us"], 1e-9)


def budgets(crit, starts, zips, load) -> list[tuple[str, str, bool | None]]:
    rows = []
    by_id = {r["id"]: r for r in crit}
    for bid in ("delivery/queued-9.8KB-fresh", "delivery/queued-9.8KB-duplicate", "delivery/completed-10.4KB-hosted-ignored"):
        r = by_id.get(bid)
        if r:
            us, best = r["median_ns"] / 1000, r["fastest_ns"] / 1000
            rows.append(
                (
                    f"in-process delivery, 10 KB (`{bid}`) < {BUDGETS['delivery_us']:.0f} µs",
                    f"{us:.1f} µs median, {best:.1f} µs fastest sample",
                    best < BUDGETS["delivery_us"],
                )
            )
    for s in starts:
        rows.append((f"cold start of {s['binary']} < {BUDGETS['cold_start_ms']:.0f} ms", f"{s['median_ms']:.1f} ms (median)", s["median_ms"] < BUDGETS["cold_start_ms"]))
    for s in starts:
        if s.get("peak_rss_kib"):
            mb = s["peak_rss_kib"] / 1024
            rows.append((f"peak RSS of {s['binary']} < {BUDGETS['rss_mb']:.0f} MB", f"{mb:.1f} MiB", mb < BUDGETS["rss_mb"]))
    if load and load.get("rss_after_kib"):
        mb = load["rss_after_kib"] / 1024
        rows.append((f"peak RSS of scalehook serve under load < {BUDGETS['rss_mb']:.0f} MB", f"{mb:.1f} MiB", mb < BUDGETS["rss_mb"]))
    for z in zips:
        if z["size"] is not None:
            mb = z["size"] / 1e6
            rows.append((f"`{Path(z['path']).name}` < {BUDGETS['zip_mb']:.0f} MB", f"{mb:.2f} MB", mb < BUDGETS["zip_mb"]))
    if load:
        bound = cpu_bound_rate(load, {"nproc": str(os.cpu_count() or 1)})
        rows.append(
            (
                f"serve ≥ {BUDGETS['throughput_rps']:.0f} deliveries/s",
                f"{load['rps']:.0f}/s measured; {bound:.0f}/s CPU-bound ({load['server_cpu_us']:.0f} µs server + {load['wrk_cpu_us']:.0f} µs wrk CPU each)",
                load["rps"] >= BUDGETS["throughput_rps"],
            )
        )
        p99 = load["p99_us"] / 1000
        rows.append((f"serve p99 < {BUDGETS['p99_ms']:.0f} ms", f"{p99:.2f} ms", p99 < BUDGETS["p99_ms"]))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", type=Path, default=ROOT / "target/release/scalehook")
    p.add_argument("--bootstrap", type=Path, help="default: the one in the x86_64 Lambda zip")
    p.add_argument("--handler", type=Path, help="default: the one in the Azure zip")
    p.add_argument("--lambda-zip", type=Path, default=ROOT / "target/lambda/scalehook-x86_64.zip")
    p.add_argument("--azure-zip", type=Path, default=ROOT / "target/azure/scalehook-azure.zip")
    p.add_argument("--zip", type=Path, action="append", default=None, help="a zip to report (repeatable)")
    p.add_argument("--criterion", type=Path, default=ROOT / "target/criterion")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--duration", type=int, default=10, help="seconds of load")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--jobs", type=int, default=2000, help="distinct jobs in the load (3 deliveries each)")
    p.add_argument("--allow-missing", action="store_true", help="report a missing binary instead of failing")
    p.add_argument("--mode", default="full")
    p.add_argument("--command", action="append", default=[], help="a command line to list in RESULTS.md")
    p.add_argument("--out", type=Path, default=ROOT / "bench/RESULTS.md")
    p.add_argument("--figures", type=Path, default=ROOT / "target/bench", help="the make targets' logs, and measure.json")
    p.add_argument("--render-only", action="store_true", help="measure nothing: re-render from the last run's measure.json and the logs")
    args = p.parse_args()
    if args.runs < 1 or args.duration < 1:
        p.error("--runs and --duration must be positive")
    notes_file = ROOT / "bench/NOTES.md"
    if args.render_only:
        return splice(args.out, read_figures(args.figures))

    # The binaries measured are the ones that ship: taken out of the zips unless given.
    unpacked = Path(tempfile.mkdtemp(prefix="scalehook-bench-"))
    if args.bootstrap is None:
        args.bootstrap = unzip_member(args.lambda_zip, "bootstrap", unpacked / "lambda")
    if args.handler is None:
        args.handler = unzip_member(args.azure_zip, "handler", unpacked / "azure")

    info = machine()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["commands"] = args.command + ["python3 " + " ".join(shlex.quote(a) for a in sys.argv)]
    starts, missing = [], []
    for name, path, fn in (
        ("scalehook serve", args.serve, cold_start_serve),
        ("bootstrap (Lambda)", args.bootstrap, cold_start_bootstrap),
        ("handler (Azure)", args.handler, cold_start_handler),
    ):
        if not path.is_file():
            if not args.allow_missing:
                print(f"measure.py: {path} is missing (build it first, or pass --allow-missing)", file=sys.stderr)
                return 1
            missing.append(name)
            continue
        print(f"cold start: {name} ({path}), {args.runs} runs", file=sys.stderr)
        s = fn(path, args.runs)
        s["path"] = shown_path(path, args)
        s["size"] = path.stat().st_size
        print(f"  median {s['median_ms']:.1f} ms, peak RSS {s['peak_rss_kib']} KiB", file=sys.stderr)
        starts.append(s)
    zip_paths = args.zip or [
        args.lambda_zip,
        args.lambda_zip.with_name("scalehook-arm64.zip"),
        args.azure_zip,
    ]
    zips = [{"path": os.path.relpath(z, ROOT), "size": z.stat().st_size if z.is_file() else None} for z in zip_paths]
    load = None
    if args.serve.is_file():
        print(f"throughput: wrk for {args.duration} s", file=sys.stderr)
        load = throughput_serve(args.serve, args.duration, args.connections, args.threads, args.jobs)
        load["jobs"] = args.jobs
        print(f"  {load['rps']:.0f}/s, p99 {load['p99_us'] / 1000:.2f} ms", file=sys.stderr)
    info["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    crit = criterion_rows(args.criterion) if args.criterion.is_dir() else []
    notes = notes_file.read_text() if notes_file.is_file() else ""
    args.out.write_text(render(args, info, crit, starts, zips, load, missing, notes, read_figures(args.figures)))
    for b in budgets(crit, starts, zips, load):
        print(f"{verdict(b[2]).strip('*'):7} {b[0]}: {b[1]}", file=sys.stderr)
    print(f"wrote {os.path.relpath(args.out, ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
