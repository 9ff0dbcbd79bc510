#!/usr/bin/env python3
"""Every name the documentation gives a reader to type exists in the code.

Reads README.md, docs/*.md and infra/**/README.md and checks, against the repository:

- Terraform: `var.NAME` (a variable of some module under infra/), `module.NAME.OUTPUT` and
  `terraform output NAME` (an output), rows of the "Inputs"/"Outputs" tables of an infra
  README (`| \`name\` |`: that module's variables and outputs), and backticked names that
  end like a Terraform input (`_path`, `_sha256`, `_arn`, `_url`, `_ids`: a variable or
  output of some module, or a configuration key);
- environment variables `SCALEHOOK_*`: named in the code (crates/, tests/, runner/, mk/,
  the Makefile, bench/, fuzz/, infra/tests/, deploy/);
- CLI flags: `--flag` after `scalehook <command>` (or `scalehook-cli -- <command>`) on one
  line of code: the command and the flag are in the clap definitions of crates/scalehook-cli;
- configuration keys: keys of ```toml blocks that hold scalehook's tables, and the key
  tables of docs/configuration.md: fields of the serde structs in
  crates/scalehook-core/src/config.rs;
- make targets: `make TARGET` in code: a target of the Makefile or mk/*.mk;
- relative links: to a file of the repository, and to one of its headings.

Prints one line per broken reference (file:line: what) and exits 1 if there is any.
Python 3 standard library only. `python3 mk/doc_refs.py [--root DIR]`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

DOC_GLOBS = ("README.md", "docs/*.md", "infra/**/README.md")
ENV_SOURCES = ("crates", "tests", "runner", "mk", "bench", "fuzz", "infra/tests", "deploy")
ENV_SUFFIXES = {".rs", ".py", ".sh", ".mk", ".cjs", ".json", ".toml", ".yml", ".yaml", ".js"}
SKIP_DIRS = {"target", "node_modules", ".tools", ".venv", ".git", "__pycache__", ".terraform"}
PROSE_WORDS = {"a", "an", "the", "on", "is", "are", "to", "of", "and", "or", "for", "with", "in", "at", "it"}
# The checker and its test name made-up variables on purpose.
SELF = {"doc_refs.py", "test_doc_refs.py"}
TF_SUFFIXES = ("_path", "_sha256", "_arn", "_url", "_ids")
# Sections of the configuration: the serde struct behind each TOML table.
CONFIG_TABLES = {"": "RawConfig", "pools": "RawPool", "ledger": "RawLedger", "github": "RawGitHub"}


@dataclass
class Truth:
    """What exists, read from the code."""

    tf_vars: dict[str, set[str]] = field(default_factory=dict)  # module dir -> variables
    tf_outputs: dict[str, set[str]] = field(default_factory=dict)  # module dir -> outputs
    env: set[str] = field(default_factory=set)
    commands: dict[str, set[str]] = field(default_factory=dict)  # command -> flags
    config: dict[str, set[str]] = field(default_factory=dict)  # table ("" top) -> keys
    make_targets: set[str] = field(default_factory=set)
    tf_names: set[str] = field(default_factory=set)  # resource types and arguments the .tf files use
    root: Path = Path(".")

    def all_vars(self) -> set[str]:
        return set().union(*self.tf_vars.values()) if self.tf_vars else set()

    def all_outputs(self) -> set[str]:
        return set().union(*self.tf_outputs.values()) if self.tf_outputs else set()

    def all_config_keys(self) -> set[str]:
        return set().union(*self.config.values()) if self.config else set()


def _walk(root: Path, sub: str, suffixes: set[str] | None = None):
    base = root / sub
    if base.is_file():
        yield base
        return
    if not base.is_dir():
        return
    for p in sorted(base.rglob("*")):
        if any(part in SKIP_DIRS for part in p.relative_to(root).parts):
            continue
        if p.is_file() and (suffixes is None or p.suffix in suffixes):
            yield p


def read_truth(root: Path) -> Truth:
    t = Truth(root=root)
    # Terraform: every directory under infra/ with .tf files is a module (or an example).
    for tf in _walk(root, "infra", {".tf"}):
        mod = str(tf.parent.relative_to(root))
        text = tf.read_text(encoding="utf-8")
        t.tf_vars.setdefault(mod, set()).update(re.findall(r'^variable\s+"([^"]+)"', text, re.M))
        t.tf_outputs.setdefault(mod, set()).update(re.findall(r'^output\s+"([^"]+)"', text, re.M))
        t.tf_names.update(re.findall(r'^\s*([a-z_][a-z0-9_]*)\s*=', text, re.M))
        t.tf_names.update(re.findall(r'^(?:resource|data)\s+"([^"]+)"', text, re.M))
    # Environment variables named by the code.
    for sub in ENV_SOURCES:
        for p in _walk(root, sub, ENV_SUFFIXES):
            if p.name in SELF:
                continue
            t.env.update(re.findall(r"SCALEHOOK_[A-Z0-9_]*[A-Z0-9]", p.read_text(encoding="utf-8", errors="replace")))
    for p in [root / "Makefile", *sorted((root / "mk").glob("*.mk"))]:
        if p.is_file():
            text = p.read_text(encoding="utf-8")
            t.env.update(re.findall(r"SCALEHOOK_[A-Z0-9_]*[A-Z0-9]", text))
            t.make_targets.update(re.findall(r"^([a-zA-Z0-9][a-zA-Z0-9_.-]*)\s*:(?!=)", text, re.M))
    t.commands = read_cli(root / "crates" / "scalehook-cli" / "src")
    t.config = read_config(root / "crates" / "scalehook-core" / "src" / "config.rs")
    return t


def _kebab(name: str) -> str:
    """clap's default names: snake_case fields and CamelCase variants to kebab-case."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name)
    return name.replace("_", "-").lower()


def read_cli(src: Path) -> dict[str, set[str]]:
    """Commands and their long flags, from the clap derive definitions in src/*.rs."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(src.rglob("*.rs")))
    structs: dict[str, tuple[set[str], set[str]]] = {}  # name -> (flags, flattened structs)
    for m in re.finditer(r"pub struct (\w+)\s*\{(.*?)\n\}", text, re.S):
        flags: set[str] = set()
        flattened: set[str] = set()
        attrs: list[str] = []
        for line in m.group(2).splitlines():
            s = line.strip()
            if s.startswith("#["):
                attrs.append(s)
                continue
            if s.startswith("///") or not s:
                continue
            fm = re.match(r"(?:pub\s+)?(\w+)\s*:\s*([\w:<>]+)", s)
            if fm:
                joined = " ".join(attrs)
                if "flatten" in joined:
                    flattened.add(re.sub(r"^Option<|>$", "", fm.group(2)).split("::")[-1])
                elif re.search(r"#\[arg\([^\]]*\blong\b", joined):
                    explicit = re.search(r'\blong\s*=\s*"([^"]+)"', joined)
                    flags.add("--" + (explicit.group(1) if explicit else _kebab(fm.group(1))))
            attrs = []
        structs[m.group(1)] = (flags, flattened)

    def flags_of(name: str, seen: frozenset = frozenset()) -> set[str]:
        if name not in structs or name in seen:
            return set()
        own, flat = structs[name]
        out = set(own)
        for f in flat:
            out |= flags_of(f, seen | {name})
        return out

    commands: dict[str, set[str]] = {}
    em = re.search(r"pub enum Command\s*\{(.*?)\n\}", text, re.S)
    if em:
        pending_name = None
        for line in em.group(1).splitlines():
            s = line.strip()
            nm = re.search(r'#\[command\([^\]]*\bname\s*=\s*"([^"]+)"', s)
            if nm:
                pending_name = nm.group(1)
            vm = re.match(r"(\w+)\s*(?:\((\w+)\))?\s*,", s)
            if vm and not s.startswith(("#", "//")):
                cmd = pending_name or _kebab(vm.group(1))
                commands[cmd] = flags_of(vm.group(2) or "") | {"--help"}
                pending_name = None
    return commands


def read_config(path: Path) -> dict[str, set[str]]:
    """The keys each TOML table accepts: the fields of config.rs's serde structs."""
    text = path.read_text(encoding="utf-8")
    out: dict[str, set[str]] = {}
    for table, struct in CONFIG_TABLES.items():
        m = re.search(rf"struct {struct}\s*\{{(.*?)\n\}}", text, re.S)
        if not m:
            continue
        keys = set()
        rename = None
        for line in m.group(1).splitlines():
            s = line.strip()
            rm = re.search(r'#\[serde\([^\]]*\brename\s*=\s*"([^"]+)"', s)
            if rm:
                rename = rm.group(1)
            fm = re.match(r"(?:pub\s+)?(\w+)\s*:", s)
            if fm:
                keys.add(rename or fm.group(1))
                rename = None
        out[table] = keys
    return out


@dataclass
class Finding:
    path: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}"


def _code_lines(text: str):
    """(line number, code text, fence language) for each line of code: the lines of fenced
    and indented blocks (continuation backslashes joined), and the inline code spans of
    other lines."""
    lines = text.split("\n")
    fence = None
    pending = ""
    pending_no = 0
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if s.startswith("```"):
            fence = None if fence is not None else (s[3:].strip() or "text")
            continue
        if fence is not None or line.startswith("    "):
            if not pending:
                pending_no = i
            if s.endswith("\\"):
                pending += s[:-1] + " "
                continue
            yield pending_no, pending + s, fence or "indented"
            pending = ""
            continue
        for span in re.findall(r"`([^`]+)`", line):
            yield i, span, None


def check_doc(rel: str, text: str, t: Truth) -> list[Finding]:
    out: list[Finding] = []
    all_vars, all_outputs = t.all_vars(), t.all_outputs()
    config_keys = t.all_config_keys()

    # Environment variables, anywhere in the text.
    for i, line in enumerate(text.split("\n"), 1):
        for name in re.findall(r"SCALEHOOK_[A-Z0-9_]*[A-Z0-9]", line):
            if name not in t.env:
                out.append(Finding(rel, i, f"environment variable {name} is not named by the code"))
        for name in re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", line):
            if name not in all_vars:
                out.append(Finding(rel, i, f"var.{name}: no Terraform variable {name} under infra/"))
        for name in re.findall(r"\bmodule\.[a-z_][a-z0-9_]*\.([a-z_][a-z0-9_]*)", line):
            if name not in all_outputs:
                out.append(Finding(rel, i, f"module output {name}: no Terraform output {name} under infra/"))

    # Code: commands and flags, make targets, terraform outputs, Terraform-like names.
    for i, code, lang in _code_lines(text):
        for segment in re.split(r"\s*(?:&&|\|\||;|\|)\s*", code.split(" #", 1)[0]):
            # A command line: `scalehook CMD ...` (after environment assignments or a path),
            # or `cargo run ... -p scalehook-cli -- CMD ...`.
            command_line = re.sub(r"^\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*", "", segment)
            cm = re.match(r"(?:\S*/)?scalehook\s+([a-z][a-z0-9-]*)(.*)", command_line) or re.search(
                r"\bscalehook-cli\s+--\s+([a-z][a-z0-9-]*)(.*)", segment
            )
            if cm:
                cmd, rest = cm.group(1), cm.group(2)
                # An inline span of prose words (program output, say) is not a command line.
                looks_like_command = lang is not None or not PROSE_WORDS & set(rest.lower().split())
                if cmd not in t.commands and looks_like_command:
                    out.append(Finding(rel, i, f"`scalehook {cmd}`: no such command in crates/scalehook-cli"))
                elif cmd in t.commands:
                    for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                        if flag not in t.commands[cmd]:
                            out.append(Finding(rel, i, f"`scalehook {cmd} {flag}`: no such flag"))
            mm = re.search(r"(?:^|\s)make\s+([a-z][a-z0-9_-]*)\b(?!\s*=)", segment)
            if mm and mm.group(1) not in t.make_targets and (lang is not None or segment.startswith("make ")):
                out.append(Finding(rel, i, f"`make {mm.group(1)}`: no such target in the Makefile or mk/*.mk"))
            om = re.search(r"\bterraform output(?:\s+-\w+)*\s+([a-z_][a-z0-9_]*)", segment)
            if om and om.group(1) not in all_outputs:
                out.append(Finding(rel, i, f"`terraform output {om.group(1)}`: no such output under infra/"))
        if lang is None and re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+", code) and code.endswith(TF_SUFFIXES):
            if not code.startswith("test_") and code not in all_vars | all_outputs | config_keys | t.tf_names:
                out.append(Finding(rel, i, f"`{code}`: not a Terraform variable or output, nor a configuration key"))

    out += _check_links(rel, text, t)
    out += _check_toml_blocks(rel, text, t)
    if rel == "docs/configuration.md":
        out += _check_config_tables(rel, text, t)
    if rel.startswith("infra/"):
        out += _check_io_tables(rel, text, t)
    return out


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    found: set[str] = set()
    fence = False
    for line in text.split("\n"):
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#+ ", line):
            base = _slug(re.sub(r"^#+ ", "", line))
            name, n = base, 1
            while name in found:
                name, n = f"{base}-{n}", n + 1
            found.add(name)
    return found


def _check_links(rel: str, text: str, t: Truth) -> list[Finding]:
    """Relative links point at a file of the repository, and at one of its headings."""
    out = []
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        url = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", url):
            continue
        path, _, frag = url.partition("#")
        target = (t.root / rel).parent / path if path else t.root / rel
        line = text[: m.start()].count("\n") + 1
        if path and not target.exists():
            out.append(Finding(rel, line, f"link {url}: no such file"))
        elif frag and target.suffix == ".md":
            body = text if not path else target.read_text(encoding="utf-8")
            if frag not in _anchors(body):
                out.append(Finding(rel, line, f"link {url}: no such heading"))
    return out


def _check_toml_blocks(rel: str, text: str, t: Truth) -> list[Finding]:
    """Keys of ```toml blocks that configure scalehook (they name one of its tables)."""
    out = []
    blocks = re.finditer(r"^```toml\n(.*?)^```", text, re.M | re.S)
    for b in blocks:
        body = b.group(1)
        if not re.search(r"^#?\s*\[\[?(pools|ledger|github)\]\]?", body, re.M):
            continue
        start = text[: b.start(1)].count("\n") + 1
        table = ""
        for n, line in enumerate(body.split("\n")):
            s = line.strip()
            s = re.sub(r"^#\s?", "", s)  # commented-out keys are documentation too
            hm = re.match(r"^\[\[?([a-z_]+)\]\]?", s)
            if hm:
                table = hm.group(1)
                continue
            km = re.match(r"^([a-z_][a-z0-9_]*)\s*=", s)
            if km and table in t.config and km.group(1) not in t.config[table]:
                where = f"[{table}]" if table else "the top level"
                out.append(Finding(rel, start + n, f"configuration key {km.group(1)} is not accepted in {where} (config.rs)"))
    return out


def _check_config_tables(rel: str, text: str, t: Truth) -> list[Finding]:
    """docs/configuration.md: the key tables under "## Top level", "## `[[pools]]`", ..."""
    out = []
    table = None
    for i, line in enumerate(text.split("\n"), 1):
        if line.startswith("## "):
            h = line[3:]
            table = "" if h.strip() == "Top level" else next(
                (k for k in ("pools", "ledger", "github") if f"[{k}]" in h), None
            )
            continue
        rm = re.match(r"^\| `([a-z_][a-z0-9_]*)`(?: or `([a-z_][a-z0-9_]*)`)? \|", line)
        if rm and table is not None and table in t.config:
            for key in filter(None, rm.groups()):
                if key not in t.config[table]:
                    out.append(Finding(rel, i, f"configuration key {key} is not accepted in {'[' + table + ']' if table else 'the top level'} (config.rs)"))
    return out


def _check_io_tables(rel: str, text: str, t: Truth) -> list[Finding]:
    """An infra README's input/output tables list that module's variables and outputs."""
    module = str(Path(rel).parent)
    known = t.tf_vars.get(module, set()) | t.tf_outputs.get(module, set())
    out = []
    section = ""
    for i, line in enumerate(text.split("\n"), 1):
        if line.startswith("#"):
            section = line.lower()
            continue
        if not re.search(r"\binputs?\b|\boutputs?\b", section):
            continue
        rm = re.match(r"^\| `([a-z_][a-z0-9_]*)` \|", line)
        if rm and rm.group(1) not in known:
            out.append(Finding(rel, i, f"`{rm.group(1)}` in the inputs/outputs table: no variable or output of {module}"))
    return out


def doc_files(root: Path) -> list[Path]:
    files: set[Path] = set()
    for g in DOC_GLOBS:
        files.update(p for p in root.glob(g) if not any(part in SKIP_DIRS for part in p.relative_to(root).parts))
    return sorted(files)


def check(root: Path, docs: dict[str, str] | None = None) -> list[Finding]:
    """Findings for the repository's docs, or for `docs` (path -> text) against its code."""
    t = read_truth(root)
    if docs is None:
        docs = {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in doc_files(root)}
    out: list[Finding] = []
    for rel, text in sorted(docs.items()):
        out += check_doc(rel, text, t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    findings = check(args.root)
    for f in findings:
        print(f)
    n = len(doc_files(args.root))
    if findings:
        print(f"doc-refs: {len(findings)} broken reference(s) in {n} documents")
        return 1
    print(f"doc-refs: every variable, output, environment variable, flag, configuration key, make target and link named in {n} documents exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
