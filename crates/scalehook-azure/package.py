#!/usr/bin/env python3
"""Zip the Azure function app (host.json at the root, the two function folders, and the
`handler` executable with mode 0755), or check a zip's layout.

    package.py --handler target/x86_64-unknown-linux-musl/release/handler \
               --app crates/scalehook-azure/function-app --out target/azure/scalehook-azure.zip
    package.py --check target/azure/scalehook-azure.zip

Entries get a fixed timestamp and order, so the same inputs give the same zip.
"""

import argparse
import json
import os
import struct
import sys
import zipfile

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
APP_FILES = ["host.json", "webhook/function.json", "reconcile/function.json"]


def add(z, name, data, mode):
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.create_system = 3  # Unix, so the mode bits are honoured when unpacked
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, data, compresslevel=9)


def build(handler, app, out):
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w") as z:
        for name in APP_FILES:
            with open(os.path.join(app, name), "rb") as f:
                add(z, name, f.read(), 0o644)
        with open(handler, "rb") as f:
            add(z, "handler", f.read(), 0o755)
    os.replace(tmp, out)
    print(f"{out}: {os.path.getsize(out)} bytes")


def elf_problems(data):
    """A static x86-64 Linux executable: ELF64, EM_X86_64, no PT_INTERP (no dynamic loader)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return ["handler is not a 64-bit ELF file"]
    problems = []
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != 0x3E:
        problems.append(f"handler is not x86-64 (e_machine {e_machine:#x})")
    if e_type not in (2, 3):
        problems.append("handler is not an executable")
    phoff = struct.unpack_from("<Q", data, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + i * phentsize)
        if p_type == 3:
            problems.append("handler is dynamically linked (has PT_INTERP); build it for musl")
    return problems


def check(path, allow_dynamic=False):
    problems = []
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
        want = sorted(APP_FILES + ["handler"])
        if names != want:
            problems.append(f"entries {names}, expected {want}")
        infos = {i.filename: i for i in z.infolist()}
        h = infos.get("handler")
        if h is None or (h.external_attr >> 16) & 0o777 != 0o755:
            problems.append("handler is not mode 0755 in the zip")
        host = json.loads(z.read("host.json"))
        ch = host.get("customHandler", {})
        if ch.get("description", {}).get("defaultExecutablePath") != "handler":
            problems.append("host.json: defaultExecutablePath is not handler")
        if ch.get("enableForwardingHttpRequest") is not True:
            problems.append("host.json: enableForwardingHttpRequest is not true")
        if host.get("extensionBundle", {}).get("id") != "Microsoft.Azure.Functions.ExtensionBundle":
            problems.append("host.json: the extension bundle (needed by the timer) is missing")
        web = json.loads(z.read("webhook/function.json"))["bindings"]
        trig = [b for b in web if b.get("type") == "httpTrigger"]
        outs = [b for b in web if b.get("type") == "http" and b.get("direction") == "out"]
        if len(trig) != 1 or len(outs) != 1:
            problems.append("webhook: needs exactly one httpTrigger and one http output (forwarding)")
        elif (trig[0].get("authLevel"), trig[0].get("methods"), trig[0].get("route")) != (
            "anonymous",
            ["post"],
            "webhook",
        ):
            problems.append("webhook: expected anonymous, POST, route webhook")
        rec = json.loads(z.read("reconcile/function.json"))["bindings"]
        if [b.get("schedule") for b in rec if b.get("type") == "timerTrigger"] != [
            "%SCALEHOOK_RECONCILE_SCHEDULE%"
        ]:
            problems.append("reconcile: expected one timerTrigger on %SCALEHOOK_RECONCILE_SCHEDULE%")
        if h is not None:
            elf = elf_problems(z.read("handler"))
            if allow_dynamic:
                elf = [p for p in elf if "dynamically linked" not in p]
            problems.extend(elf)
    for p in problems:
        print(f"{path}: {p}", file=sys.stderr)
    if not problems:
        print(f"{path}: layout ok ({os.path.getsize(path)} bytes)")
    return 1 if problems else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handler")
    ap.add_argument("--app")
    ap.add_argument("--out")
    ap.add_argument("--check", metavar="ZIP")
    ap.add_argument(
        "--allow-dynamic",
        action="store_true",
        help="accept a dynamically linked handler (the debug build in make test)",
    )
    a = ap.parse_args()
    if a.check:
        return check(a.check, a.allow_dynamic)
    if not (a.handler and a.app and a.out):
        ap.error("--handler, --app and --out are needed to build")
    build(a.handler, a.app, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
