#!/usr/bin/env python3
"""Zip a Lambda `bootstrap` for provided.al2023, and check a zip's layout.

    lambda_zip.py pack BINARY ZIP    write ZIP with BINARY stored as `bootstrap` (mode 0755)
    lambda_zip.py check ZIP          exit non-zero unless ZIP holds exactly `bootstrap`
                                     at its root, executable, as a static ELF

Deterministic: fixed timestamp, so the same binary gives the same zip.
"""
import stat
import sys
import zipfile

MODE = stat.S_IFREG | 0o755
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def pack(binary: str, out: str) -> None:
    with open(binary, "rb") as f:
        data = f.read()
    info = zipfile.ZipInfo("bootstrap", date_time=FIXED_TIME)
    info.create_system = 3  # Unix, so unzip honours the mode bits
    info.external_attr = MODE << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(info, data, compresslevel=9)


def check(path: str) -> None:
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if names != ["bootstrap"]:
            sys.exit(f"{path}: expected only `bootstrap` at the root, found {names}")
        info = infos[0]
        mode = info.external_attr >> 16
        if info.create_system != 3 or not mode & 0o111:
            sys.exit(f"{path}: bootstrap is not executable (mode {oct(mode)})")
        head = z.read("bootstrap")[:64]
        if head[:4] != b"\x7fELF":
            sys.exit(f"{path}: bootstrap is not an ELF executable")
        data = z.read("bootstrap")
        if b"/lib/ld-linux" in data or b"/lib64/ld-linux" in data:
            sys.exit(f"{path}: bootstrap is dynamically linked against glibc")
    print(f"{path}: ok (bootstrap at the root, mode {oct(mode & 0o777)}, static ELF)")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "pack":
        pack(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
