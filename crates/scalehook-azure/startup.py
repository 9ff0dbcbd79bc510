#!/usr/bin/env python3
"""Measure the custom handler's start-up: from process start to the first answered request
(a signed GitHub `ping` forwarded to /api/webhook, answered 200 `pong` by the service),
as the Functions host would start it. Prints the median, min and max of several runs.

    startup.py target/release/handler [--runs 15]

No cloud is contacted: `ping` needs none, and the background table creation points at a
closed loopback port (it only logs a warning).
"""

import argparse
import hashlib
import hmac
import http.client
import os
import socket
import statistics
import subprocess
import sys
import time

SECRET = b"startup-measure-secret"
VMSS = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/v"
BODY = b'{"zen":"Keep it logically awesome.","hook_id":1}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(handler):
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "FUNCTIONS_CUSTOMHANDLER_PORT": str(port),
        "SCALEHOOK_CONFIG_TOML": f'[[pools]]\nname = "p"\nlabels = ["self-hosted"]\nmax = 2\nazure_vmss = "{VMSS}"\n',
        "SCALEHOOK_WEBHOOK_SECRET": SECRET.decode(),
        "SCALEHOOK_TABLE_ENDPOINT": "http://127.0.0.1:9/devstoreaccount1",
        "SCALEHOOK_TABLE_ACCOUNT_KEY": "a2V5",
        "IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token",
        "IDENTITY_HEADER": "x",
        "SCALEHOOK_LOG": "warn",
    }
    sig = "sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-github-event": "ping",
        "x-github-delivery": "startup",
        "x-hub-signature-256": sig,
    }
    start = time.perf_counter()
    proc = subprocess.Popen([handler], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"handler exited with {proc.returncode}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("POST", "/api/webhook", body=BODY, headers=headers)
                r = c.getresponse()
                r.read()
                elapsed = time.perf_counter() - start
                if r.status != 200:
                    raise SystemExit(f"ping answered {r.status}")
                return elapsed
            except (ConnectionRefusedError, ConnectionResetError):
                time.sleep(0.0005)
            if time.perf_counter() - start > 30:
                raise SystemExit("no answer within 30 s")
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("handler")
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    one_run(a.handler)  # warm the page cache
    times = [one_run(a.handler) * 1000 for _ in range(a.runs)]
    print(
        f"handler start-up to first answered request over {a.runs} runs: "
        f"median {statistics.median(times):.1f} ms, min {min(times):.1f} ms, max {max(times):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
