"""`terraform plan` over infra/'s own module structure without any provider: every provider
resource and data source stood in by a module made only of `terraform_data`.

What it finds is what makes a real first plan fail on values known only after apply:
`for_each` keys or `count` derived from them ("Invalid for_each argument", "Invalid count
argument"), sensitive values in `for_each`, and a module structure that does not evaluate
(wrong module arguments, outputs, types, variable validations). It does not check provider
arguments (test_schema.py does) nor what the provider would do at apply.

How (`shim(tree, out)` writes the copy; `plan(root)` runs terraform in it):
- `resource "T" "N"` of a provider type becomes `module "shim__T__N"` (its count or for_each
  kept) calling `shims/T`, which has a variable per argument of T (schemas/ extract) and an
  output per attribute: an argument set in the configuration reads back as set, as with a
  real provider; everything else is `jsondecode(terraform_data.this.id)`, unknown until apply
  and of any type, the way a computed attribute is. Nested blocks come back as a one-element
  list of such objects.
- `data "T" "N"` becomes `module "shimdata__T__N"`: its attributes are known at plan when its
  arguments are (a data source is read during plan), unknown when any is not or when it
  refers to a managed resource or has depends_on (then Terraform reads it during apply).
- References `T.N...` / `data.T.N...` are rewritten to the modules; nested blocks, `dynamic`,
  `lifecycle`, `depends_on`, `provider`, provisioners, `required_providers`, `provider`
  blocks and `moved`/`import`/`removed`/`check` blocks are dropped (nothing in them decides
  plan-time knowability of for_each or count).
- Root variables without a default get placeholder values by name and type; `*_path` ones
  (build outputs such as the Lambda zip) an empty file.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import hcl2
import schema_check

PROVIDER_TYPE = r"(?:aws|azurerm|azapi)_[a-z0-9_]+"
# Names a module cannot declare as variables.
RESERVED_VARIABLES = {"source", "version", "providers", "count", "for_each", "lifecycle", "depends_on", "locals"}
DROPPED_TOP = {"moved", "import", "removed", "check", "provider"}


def schema_node(kind: str, tf_type: str) -> dict:
    provider = tf_type.split("_", 1)[0]
    for doc in schema_check.provider_schemas()[provider]:
        node = doc[kind].get(tf_type)
        if node is not None:
            return node
    raise SystemExit(f"{kind} type {tf_type} is not in the schema extracts: {schema_check.EXTRACT_HINT}")


def module_name(kind: str, tf_type: str, name: str) -> str:
    return f"{'shimdata' if kind == 'data' else 'shim'}__{tf_type}__{name}"


MANAGED_REF = re.compile(r"(?<![\w.\"'/-])" + PROVIDER_TYPE + r"\.[A-Za-z_]")


def rewrite_refs(text: str) -> str:
    """Point references at the shim modules (in literal strings and comments too: harmless)."""
    text = re.sub(
        r"(?<![\w.])data\.(" + PROVIDER_TYPE + r")\.([A-Za-z_][A-Za-z0-9_-]*)",
        lambda m: "module." + module_name("data", m.group(1), m.group(2)),
        text,
    )
    return re.sub(
        r"(?<![\w.\"'/-])(" + PROVIDER_TYPE + r")\.([A-Za-z_][A-Za-z0-9_-]*)",
        lambda m: "module." + module_name("resource", m.group(1), m.group(2)),
        text,
    )


# ---- a small HCL scanner: item boundaries only, expressions kept as written -------------

HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_]*)[ \t]*\n")


def skip_string(t: str, i: int) -> int:
    i += 1
    while t[i] != '"':
        if t[i] == "\\":
            i += 2
        elif t[i] in "$%" and t[i + 1] == "{":
            i = skip_group(t, i + 1)
        else:
            i += 1
    return i + 1


def skip_heredoc(t: str, m: re.Match) -> int:
    end = re.compile(r"^[ \t]*" + m.group(1) + r"[ \t]*$", re.M).search(t, m.end())
    assert end, f"unterminated heredoc {m.group(1)}"
    return end.end()


def skip_comment(t: str, i: int) -> int | None:
    if t[i] == "#" or t.startswith("//", i):
        j = t.find("\n", i)
        return len(t) if j < 0 else j
    if t.startswith("/*", i):
        return t.index("*/", i) + 2
    return None


def skip_group(t: str, i: int) -> int:
    """From an opening bracket to just past its closing one."""
    depth = 0
    while True:
        c = t[i]
        if c == '"':
            i = skip_string(t, i)
            continue
        if c == "<" and (m := HEREDOC.match(t, i)):
            i = skip_heredoc(t, m)
            continue
        if (j := skip_comment(t, i)) is not None:
            i = j
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1


def skip_expression(t: str, i: int, end: int) -> int:
    """From an expression's start to the newline (or closing brace) that ends it."""
    while i < end:
        c = t[i]
        if c == "\n" or c == "}":
            return i
        if c == '"':
            i = skip_string(t, i)
        elif c == "<" and (m := HEREDOC.match(t, i)):
            i = skip_heredoc(t, m)
        elif c in "([{":
            i = skip_group(t, i)
        elif (j := skip_comment(t, i)) is not None:
            i = j
        else:
            i += 1
    return i


def items(t: str, start: int, end: int):
    """The attributes and blocks of a body: (kind, name, labels, start, body_start, end)."""
    i = start
    while i < end:
        if t[i].isspace():
            i += 1
            continue
        if (j := skip_comment(t, i)) is not None:
            i = j
            continue
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*").match(t, i)
        assert m, f"unexpected {t[i:i + 40]!r}"
        name, j = m.group(0), m.end()
        while t[j] in " \t":
            j += 1
        if t[j] == "=" and t[j + 1] != "=":
            stop = skip_expression(t, j + 1, end)
            yield "attr", name, [], i, j + 1, stop
            i = stop
            continue
        labels = []
        while t[j] != "{":
            if t[j] == '"':
                k = skip_string(t, j)
                labels.append(t[j + 1 : k - 1])
                j = k
            elif t[j].isspace():
                j += 1
            else:
                k = re.compile(r"[A-Za-z0-9_-]+").match(t, j).end()
                labels.append(t[j:k])
                j = k
        stop = skip_group(t, j)
        yield "block", name, labels, i, j + 1, stop
        i = stop


def leaf_attrs(attrs: dict, leaf: str) -> str:
    """HCL for an object with every attribute of a shape: nested shapes as one-element lists."""
    parts = []
    for name, shape in sorted(attrs.items()):
        value = f"[{leaf_attrs(shape, leaf)}]" if isinstance(shape, dict) else leaf
        parts.append(f"    {name} = {value}")
    return "{\n" + "\n".join(parts) + "\n  }"


def shim_module(kind: str, tf_type: str) -> str:
    node = schema_node(kind, tf_type)
    args = sorted(a for a in node["args"] if a not in RESERVED_VARIABLES)
    out = [f"# Stand-in for {kind} {tf_type}: see infra/tests/plan_shim.py.", ""]
    for a in args:
        ephemeral = "\n  ephemeral = true" if a.endswith("_wo") else ""
        out.append(f'variable "{a}" {{\n  type    = any\n  default = null{ephemeral}\n}}\n')
    if kind == "resource":
        out.append('resource "terraform_data" "this" {}\n')
        unknown = "jsondecode(terraform_data.this.id)"
    else:
        known = ", ".join(f"{a} = var.{a}" for a in args if not a.endswith("_wo"))
        out.append('variable "shim_deferred_read" {\n  type    = bool\n  default = false\n}\n')
        out.append('resource "terraform_data" "this" {}\n')
        out.append(f"locals {{\n  arguments = jsonencode({{ {known} }})\n}}\n")
        unknown = 'var.shim_deferred_read ? jsondecode(terraform_data.this.id) : (local.arguments == "" ? null : "shim")'
    for name, shape in sorted(node["attrs"].items()):
        if isinstance(shape, dict):
            value = f"[{leaf_attrs(shape, unknown)}]"
        elif name in args and not name.endswith("_wo"):
            value = f"var.{name} != null ? var.{name} : {unknown}"
        else:
            value = unknown
        out.append(f'output "{name}" {{\n  value = {value}\n}}\n')
    return "\n".join(out)


def shim_text(t: str, module_dir: pathlib.Path, shims: pathlib.Path, used: set) -> str:
    out, last = [], 0
    for kind, name, labels, start, body, stop in items(t, 0, len(t)):
        out.append(t[last:start])
        last = stop
        if kind == "block" and name in DROPPED_TOP:
            continue
        if kind == "block" and name in ("resource", "data") and re.fullmatch(PROVIDER_TYPE, labels[0]):
            tf_type, rname = labels
            used.add((name, tf_type))
            node = schema_node(name, tf_type)
            source = os.path.relpath(shims / f"{name}-{tf_type}", module_dir)
            lines = [f'module "{module_name(name, tf_type, rname)}" {{', f'  source = "{source}"']
            for k, key, _, s0, _, s1 in items(t, body, stop - 1):
                if k == "attr" and (key in ("count", "for_each") or key in node["args"] and key not in RESERVED_VARIABLES):
                    lines.append("  " + t[s0:s1])
            if name == "data" and (MANAGED_REF.search(t[body:stop]) or re.search(r"^\s*depends_on\s*=", t[body:stop], re.M)):
                # Terraform reads a data source that depends on a managed resource with changes
                # pending (all of them, before the first apply) only during apply.
                lines.append("  shim_deferred_read = true")
            out.append("\n".join(lines) + "\n}")
            continue
        if kind == "block" and name in ("terraform", "module"):
            drop = {"required_providers"} if name == "terraform" else {"providers", "depends_on"}
            kept, cursor = [t[start:body]], body
            for k, key, _, s0, _, s1 in items(t, body, stop - 1):
                if key in drop:
                    kept.append(t[cursor:s0])
                    cursor = s1
            kept.append(t[cursor:stop])
            out.append("".join(kept))
            continue
        out.append(t[start:stop])
    out.append(t[last:])
    return rewrite_refs("".join(out))


def shim(tree: pathlib.Path, out: pathlib.Path) -> None:
    """Write the shimmed copy of tree (a directory of Terraform modules) into out/<tree's name>;
    the directories beside tree are linked beside it (modules read files like ../../runner)."""
    for sibling in tree.parent.iterdir():
        if sibling != tree and not sibling.name.startswith(".") and sibling.name != "target":
            (out / sibling.name).symlink_to(sibling.resolve())
    # Build outputs the configuration names (target/lambda/*.zip) may not be built: empty
    # stand-ins, so file functions over them evaluate.
    for tf in tree.rglob("*.tf"):
        for built in re.findall(r"/(target/[\w./-]+\.zip)", tf.read_text()):
            (out / built).parent.mkdir(parents=True, exist_ok=True)
            (out / built).touch()
    out = out / tree.name
    shims = out / "shims"
    used: set = set()
    for tf in sorted(tree.rglob("*.tf")):
        if ".terraform" in tf.parts:
            continue
        rel = tf.relative_to(tree)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(shim_text(tf.read_text(), target.parent, shims, used))
    for f in tree.rglob("*.tftpl"):  # templatefile() inputs
        target = out / f.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    for kind, tf_type in used:
        d = shims / f"{kind}-{tf_type}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "main.tf").write_text(shim_module(kind, tf_type))


def placeholder(name: str, var: dict, root: pathlib.Path):
    t = str(var.get("type", "${string}"))
    if name.endswith("_path"):  # a build output (e.g. the Lambda zip): an empty stand-in
        stand_in = root / f"shim-{name}"
        stand_in.write_bytes(b"")
        return str(stand_in)
    if "secret" in name:
        return "shim-" + "0" * 32
    if "sha256" in name:
        return "0" * 64
    if t.startswith("${list") or t.startswith("${set"):
        return ["shim"]
    if t == "${number}":
        return 1
    if t == "${bool}":
        return False
    if "url" in name:
        return "https://example.com/shim.zip"
    if "ssh_public_key" in name:
        return "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA shim"
    if name.endswith("_id") and "subnet" in name:
        return "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/runners"
    if name.endswith("_id"):
        return "1"
    return "shim"


def plan(root: pathlib.Path, terraform: str) -> subprocess.CompletedProcess:
    """terraform init (no provider to download) and plan in a shimmed root module."""
    env = dict(os.environ, TF_CLI_CONFIG_FILE="/dev/null", TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    env.pop("TF_PLUGIN_CACHE_DIR", None)
    variables = {}
    for tf in root.glob("*.tf"):
        for entry in hcl2.loads(tf.read_text()).get("variable", []):
            for name, body in schema_check.body_items(entry):
                if "default" not in body or name.endswith("_path"):
                    variables[name] = placeholder(name, body, root)
    (root / "shim.auto.tfvars.json").write_text(json.dumps(variables, indent=1))
    init = subprocess.run(
        [terraform, "init", "-backend=false", "-input=false", "-no-color"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    if init.returncode != 0:
        return init
    return subprocess.run(
        [terraform, "plan", "-input=false", "-no-color", "-refresh=false", "-lock=false"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
