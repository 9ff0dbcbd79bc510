"""Helpers shared by the infra tests: load a Terraform module's HCL into plain Python data.

python-hcl2 keeps HCL string quotes and block-label quotes; `plain` strips them so the
tests compare `"autoscaling:SetDesiredCapacity"` as the string it is, and expressions
(`${...}`) as their source text.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil

import hcl2
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MODULES = {"aws": INFRA / "aws", "azure": INFRA / "azure"}
EXAMPLES = {"aws": INFRA / "examples" / "aws", "azure": INFRA / "examples" / "azure"}
CORE = ROOT / "crates" / "scalehook-core" / "src"


def unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return s


def plain(v):
    if isinstance(v, dict):
        return {
            unquote(k): plain(x)
            for k, x in v.items()
            if k not in ("__is_block__", "__comments__", "__inline_comments__")
        }
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, str):
        return unquote(v)
    return v


class Module:
    """Every top-level block of the .tf files of one directory, merged."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.files = sorted(path.glob("*.tf"))
        self.resources: dict[str, dict[str, dict]] = {}
        self.data: dict[str, dict[str, dict]] = {}
        self.variables: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        self.locals: dict[str, object] = {}
        self.modules: dict[str, dict] = {}
        self.text = ""
        for f in self.files:
            text = f.read_text()
            self.text += text
            with f.open() as fh:
                doc = plain(hcl2.load(fh))
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    self.resources.setdefault(rtype, {}).update(named)
            for block in doc.get("data", []):
                for dtype, named in block.items():
                    self.data.setdefault(dtype, {}).update(named)
            for block in doc.get("variable", []):
                self.variables.update(block)
            for block in doc.get("output", []):
                self.outputs.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            for block in doc.get("module", []):
                self.modules.update(block)

    def resource(self, rtype: str, name: str) -> dict:
        try:
            return self.resources[rtype][name]
        except KeyError:
            pytest.fail(f"{self.path.name}: no resource {rtype}.{name}")


@pytest.fixture(scope="session")
def aws() -> Module:
    return Module(MODULES["aws"])


@pytest.fixture(scope="session")
def azure() -> Module:
    return Module(MODULES["azure"])


def core_source(name: str) -> str:
    return (CORE / name).read_text()


def core_module(name: str) -> str:
    """The text of a core module: `<name>.rs`, or every file of `<name>/` (a module split
    into child modules, e.g. service/ and metrics/)."""
    single = CORE / f"{name}.rs"
    if single.exists():
        return single.read_text()
    return "\n".join(p.read_text() for p in sorted((CORE / name).glob("*.rs")))


def terraform_binary() -> str:
    """The terraform binary: $SCALEHOOK_TERRAFORM (set by mk/infra.mk), else PATH."""
    candidate = os.environ.get("SCALEHOOK_TERRAFORM", "terraform")
    found = shutil.which(candidate)
    if not found:
        pytest.fail(
            f"terraform not found ({candidate!r}): install terraform 1.11+ on PATH or set "
            "SCALEHOOK_TERRAFORM; `make test-deps` does not install it"
        )
    return found


def rust_struct_fields(source: str, struct: str) -> set[str]:
    """Field names of a Rust struct in `source` (the core's serde config structs)."""
    m = re.search(r"struct " + struct + r" \{(.*?)\n\}", source, re.S)
    assert m, f"struct {struct} not found in the core"
    return set(re.findall(r"^\s+(\w+):", m.group(1), re.M))
