"""Check Terraform modules against the providers' schemas (the extracts in schemas/), offline.

What a `terraform validate` with the providers would reject, found without them:
- a resource or data source type the provider does not have;
- an argument it does not have, a block written as an argument or the reverse, a block
  given twice where the schema allows one, a `dynamic` block of an unknown block;
- a required argument or block missing; a literal value Terraform cannot convert to the
  argument's type (a string for a list, a list for a map, "five" for a number);
- a reference `type.name.attr` (or `data.type.name.attr`, nested `...[0].x`) to a resource
  the module does not declare or to an attribute the type does not have; `var.x`, `local.x`
  and `module.x` of undeclared names;
- a module call's argument the called module has no variable for, a variable without
  default it does not set, `module.x.y` of an output the called module does not have;
- an azapi `body` that the provider's own validation would reject (properties the API
  version's type does not have, read-only ones, missing required ones, a literal outside
  an enum), unless the resource sets `schema_validation_enabled = false`.

`check(directory)` returns the findings as "file:resource: message" lines; test_schema.py runs
it over infra/ and over broken copies.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import pathlib
import re

import hcl2

SCHEMAS = pathlib.Path(__file__).resolve().parent / "schemas"
EXTRACT_HINT = "run `make infra-schema-extract` to extract it from the provider's binding"

# Arguments and blocks Terraform itself gives every resource, data source and module call.
META_ARGS = {"count", "for_each", "depends_on", "provider"}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}
MODULE_META = {"source", "version", "count", "for_each", "depends_on", "providers"}
# Types Terraform provides without a provider.
BUILTIN = {"terraform_data", "null_resource"}
PROVIDER_PREFIXES = ("aws_", "azurerm_", "azapi_")


@functools.cache
def provider_schemas() -> dict[str, list[dict]]:
    """provider name -> the schemas to check against (aws: both ends of its range).

    An overlay (*.overlay.json) derives the schema of a version no binding was generated
    from: its base extract plus the changes the provider's changelog lists.
    """
    docs = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.json")}
    out: dict[str, list[dict]] = {}
    replaced = set()
    for name, doc in sorted(docs.items()):
        if name.endswith(".overlay.json"):
            derived = apply_overlay(docs[doc["base"]], doc)
            out.setdefault(doc["provider"], []).append(derived)
            if doc["replaces_base"]:
                replaced.add(doc["base"])
    for name, doc in sorted(docs.items()):
        if "resource" in doc and name not in replaced:
            out.setdefault(doc["provider"], []).append(doc)
    return out


def apply_overlay(base: dict, overlay: dict) -> dict:
    doc = copy.deepcopy(base)
    doc["version"] = overlay["version"]
    for change in overlay["changes"]:
        node = doc[change["kind"]][change["type"]]
        for name, required in change.get("add_args", {}).items():
            node["args"][name] = required
            node["attrs"].setdefault(name, None)
        for name in change.get("add_attrs", []):
            node["attrs"].setdefault(name, None)
        for name in change.get("optional", []):
            node["args"][name] = False
        for name in change.get("remove", []):
            node["args"].pop(name, None)
            node["blocks"].pop(name, None)
            node["attrs"].pop(name, None)
    return doc


@functools.cache
def azapi_types() -> dict:
    [path] = sorted(SCHEMAS.glob("azapi-types-*.json"))
    doc = json.loads(path.read_text())
    doc["index"] = {k.lower(): v for k, v in doc["resources"].items()}
    return doc


def unquote(s):
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def is_block_list(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) and x.get("__is_block__") for x in v)


def body_items(body: dict):
    for k, v in body.items():
        if k in ("__is_block__", "__comments__", "__inline_comments__"):
            continue
        yield unquote(k), v


def suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


# ---- expressions ------------------------------------------------------------------------


def interpolations(s: str) -> list[str]:
    """The expression text inside a value: all of `${...}`, or the `${...}` parts of a string."""
    if s.startswith("${") and s.endswith("}") and not s.startswith('"'):
        return [s[2:-1]]
    parts, i = [], 0
    while (start := s.find("${", i)) != -1:
        depth, j = 0, start + 1
        while j < len(s):
            if s[j] == "{":
                depth += 1
            elif s[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        parts.append(s[start + 2 : j])
        i = j + 1
    return parts


# A traversal: root name, then `.name`, `[...]` (one level of nested brackets) or `.*`.
TRAVERSAL = re.compile(
    r"(?<![\w.\]\"'])([a-z_][a-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_-]*|\.\*|\[(?:[^\[\]]|\[[^\[\]]*\])*\])+)"
)
STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\.\*|\[(?:[^\[\]]|\[[^\[\]]*\])*\]")


def traversals(value):
    """Every (root, [steps]) in the expressions of a value; steps are names or None (index)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in ("__is_block__", "__comments__", "__inline_comments__"):
                yield from traversals(k)
                yield from traversals(v)
    elif isinstance(value, list):
        for v in value:
            yield from traversals(v)
    elif isinstance(value, str):
        for expr in interpolations(value):
            # String literals inside an expression are not references.
            expr = re.sub(r'"(?:[^"\\$]|\\.|\$(?!\{))*"', '""', expr)
            for m in TRAVERSAL.finditer(expr):
                steps = [s.group(1) for s in STEP.finditer(m.group(2))]
                yield m.group(1), steps


# ---- modules ----------------------------------------------------------------------------


@functools.cache
def parse(text: str) -> dict:
    """python-hcl2's raw form of one file (cached by content: the broken copies share most)."""
    return hcl2.loads(text)


class Module:
    """The top-level blocks of one directory's .tf files (python-hcl2's raw form)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.blocks: list[tuple[str, str, dict]] = []  # (file, kind, block)
        self.resources: dict[tuple[str, str], tuple[str, dict]] = {}
        self.data: dict[tuple[str, str], tuple[str, dict]] = {}
        self.variables: dict[str, dict] = {}
        self.outputs: dict[str, dict] = {}
        self.locals: set[str] = set()
        self.modules: dict[str, tuple[str, dict]] = {}
        for f in sorted(path.glob("*.tf")):
            doc = parse(f.read_text())
            for kind, entries in doc.items():
                for entry in entries:
                    self.blocks.append((f.name, kind, entry))
                    if kind in ("resource", "data"):
                        target = self.resources if kind == "resource" else self.data
                        for rtype, named in body_items(entry):
                            for name, body in body_items(named):
                                target[(rtype, name)] = (f.name, body)
                    elif kind == "variable":
                        for name, body in body_items(entry):
                            self.variables[name] = body
                    elif kind == "output":
                        for name, body in body_items(entry):
                            self.outputs[name] = body
                    elif kind == "locals":
                        self.locals |= {k for k, _ in body_items(entry)}
                    elif kind == "module":
                        for name, body in body_items(entry):
                            self.modules[name] = (f.name, body)


def module_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted({p.parent for p in root.rglob("*.tf") if ".terraform" not in p.parts})


def check(root: pathlib.Path) -> list[str]:
    """Findings for every module directory under root."""
    findings: list[str] = []
    for d in module_dirs(root):
        findings += [f"{d.relative_to(root)}/{f}" for f in check_module(Module(d))]
    return findings


def check_module(mod: Module) -> list[str]:
    out: list[str] = []
    for (rtype, name), (f, body) in mod.resources.items():
        out += [f"{f}: {rtype}.{name}: {m}" for m in check_typed("resource", rtype, body)]
        if rtype == "azapi_resource":
            out += [f"{f}: {rtype}.{name}: {m}" for m in check_azapi_body(body)]
    for (dtype, name), (f, body) in mod.data.items():
        out += [f"{f}: data.{dtype}.{name}: {m}" for m in check_typed("data", dtype, body)]
    for name, (f, body) in mod.modules.items():
        out += [f"{f}: module.{name}: {m}" for m in check_module_call(mod, body)]
    for f, kind, entry in mod.blocks:
        if kind == "provider":
            for name, body in body_items(entry):
                out += [f"{f}: provider.{name}: {m}" for m in check_provider(name, body)]
    for f, kind, entry in mod.blocks:
        if kind in ("moved", "removed", "import"):
            # Addresses, not expressions: `to` must name something this configuration declares.
            target = entry.get("to")
            if kind == "moved" and isinstance(target, str):
                problem = check_address(mod, interpolations(target)[0] if "${" in target else target)
                if problem:
                    out.append(f"{f}: moved: {problem}")
            continue
        for root, steps in traversals(entry):
            problem = check_reference(mod, root, steps)
            if problem:
                out.append(f"{f}: {kind}: {problem}")
    return sorted(set(out))


def check_typed(kind: str, tf_type: str, body: dict) -> list[str]:
    if tf_type in BUILTIN:
        return []
    provider = tf_type.split("_", 1)[0]
    extracts = provider_schemas().get(provider)
    if not extracts:
        return [f"no schema extract for provider `{provider}`: {EXTRACT_HINT}"]
    out = []
    for doc in extracts:
        node = doc[kind].get(tf_type)
        label = f"{provider} {doc['version']}"
        if node is None:
            out.append(f"{kind} type `{tf_type}` is not in the {label} extract: {EXTRACT_HINT}")
            continue
        out += [f"{m} [{label}]" for m in check_body(node, body, top=True)]
    return out


def check_provider(name: str, body: dict) -> list[str]:
    out = []
    for doc in provider_schemas().get(name, []):
        node = doc.get("provider_config")
        if node is None:
            out.append(f"no provider configuration schema for `{name}` in its extract: {EXTRACT_HINT}")
            continue
        meta = {k: v for k, v in body.items() if unquote(k) not in ("alias",)}
        out += [f"{m} [{name} {doc['version']}]" for m in check_body(node, meta)]
    return out


def check_body(node: dict, body: dict, top: bool = False, path: str = "") -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for key, value in body_items(body):
        where = f"{path}{key}"
        if top and key in META_ARGS and not is_block_list(value):
            continue
        if top and key in META_BLOCKS and is_block_list(value):
            if key == "lifecycle":
                out += [m for b in value for m in check_ignore_changes(node, b.get("ignore_changes"))]
            continue
        if key == "dynamic" and isinstance(value, list):
            for dyn in value:
                for label, spec in body_items(dyn):
                    block = node["blocks"].get(label)
                    if block is None:
                        out.append(f"dynamic `{path}{label}`: no such block{suggest(label, node['blocks'])}")
                        continue
                    seen.add(label)
                    contents = spec.get("content")
                    if not is_block_list(contents):
                        out.append(f"dynamic `{path}{label}`: no content block")
                        continue
                    for c in contents:
                        out += check_body(block["node"], c, path=f"{path}{label}.")
            continue
        if is_block_list(value):
            block = node["blocks"].get(key)
            if block is None:
                if key in node["args"]:
                    out.append(f"`{where}` is an argument, not a block: write `{key} = ...`")
                else:
                    out.append(f"unknown block `{where}`{suggest(key, list(node['blocks']) + list(node['args']))}")
                continue
            seen.add(key)
            if block["single"] and len(value) > 1:
                out.append(f"block `{where}` may appear once, given {len(value)} times")
            for b in value:
                out += check_body(block["node"], b, path=f"{where}.")
            continue
        if key in node["args"]:
            seen.add(key)
            problem = literal_type_problem(node.get("types", {}).get(key, "any"), value)
            if problem:
                out.append(f"`{where}`: {problem}")
        elif key in node["blocks"]:
            out.append(f"`{where}` is a block, not an argument: write `{key} {{ ... }}`")
        else:
            out.append(f"unknown argument `{where}`{suggest(key, list(node['args']) + list(node['blocks']))}")
    for name, required in node["args"].items():
        if required and name not in seen:
            out.append(f"missing required argument `{path}{name}`")
    for name, block in node["blocks"].items():
        if block["required"] and name not in seen:
            out.append(f"missing required block `{path}{name}`")
    return out


def check_ignore_changes(node: dict, value) -> list[str]:
    """lifecycle.ignore_changes names arguments or blocks of the type (terraform validate checks)."""
    if not isinstance(value, list):
        return []  # `all`, or nothing
    out = []
    for item in value:
        text = item[2:-1] if isinstance(item, str) and item.startswith("${") else str(item)
        m = re.match(r"[a-z0-9_]+", text)
        name = m.group(0) if m else text
        if name != "all" and name not in node["args"] and name not in node["blocks"]:
            out.append(f"lifecycle.ignore_changes: no argument `{name}`{suggest(name, list(node['args']) + list(node['blocks']))}")
    return out


def literal_type_problem(expected: str, value) -> str | None:
    """What Terraform's conversion of a literal to the argument's type would reject."""
    if isinstance(value, str) and (not value.startswith('"') or "${" in value):
        return None  # an expression or a template: known at plan at best
    if isinstance(value, list) and value and all(isinstance(x, dict) and x.get("__is_block__") for x in value):
        return None
    got = "list" if isinstance(value, list) else "object" if isinstance(value, dict) else "scalar"
    if expected in ("list",) and got != "list":
        return f"a list is expected, not {'an object' if got == 'object' else 'a single value'}"
    if expected in ("map", "object") and got != "object":
        return f"{'a map' if expected == 'map' else 'an object'} is expected, not {'a list' if got == 'list' else 'a single value'}"
    if expected in ("string", "number", "bool") and got != "scalar":
        return f"a {expected} is expected, not {'a list' if got == 'list' else 'an object'}"
    if got == "scalar" and isinstance(value, str):
        text = value[1:-1]
        if expected == "number":
            try:
                float(text)
            except ValueError:
                return f"a number is expected, not {value}"
        if expected == "bool" and text not in ("true", "false"):
            return f"a bool is expected, not {value}"
    return None


# ---- references -------------------------------------------------------------------------


def check_reference(mod: Module, root: str, steps: list) -> str | None:
    names = [s for s in steps]
    if root == "var":
        if names and names[0] and names[0] not in mod.variables:
            return f"`var.{names[0]}` is not declared{suggest(names[0], mod.variables)}"
        return None
    if root == "local":
        if names and names[0] and names[0] not in mod.locals:
            return f"`local.{names[0]}` is not declared{suggest(names[0], mod.locals)}"
        return None
    if root == "module":
        if not names or not names[0]:
            return None
        call = mod.modules.get(names[0])
        if call is None:
            return f"`module.{names[0]}` is not declared{suggest(names[0], mod.modules)}"
        called = called_module(mod, call[1])
        rest = [s for s in names[1:] if s is not None]
        if called is not None and rest and rest[0] not in called.outputs:
            return f"`module.{names[0]}.{rest[0]}`: {called.path.name} has no output `{rest[0]}`{suggest(rest[0], called.outputs)}"
        return None
    if root == "data":
        if len(names) < 2 or not names[0] or not names[1]:
            return None
        kind, rtype, name, rest, declared = "data", names[0], names[1], names[2:], mod.data
        ref = f"data.{rtype}.{name}"
    elif root.startswith(PROVIDER_PREFIXES):
        if not names or not names[0]:
            return None
        kind, rtype, name, rest, declared = "resource", root, names[0], names[1:], mod.resources
        ref = f"{rtype}.{name}"
    else:
        return None
    if (rtype, name) not in declared:
        return f"`{ref}` is not declared in this module"
    for doc in provider_schemas().get(rtype.split("_", 1)[0], []):
        node = doc[kind].get(rtype)
        if node is None:
            continue  # reported with the resource itself
        problem = check_attr_path(node["attrs"], rest)
        if problem:
            return f"`{ref}`: {problem} [{rtype.split('_', 1)[0]} {doc['version']}]"
    return None


def check_attr_path(attrs: dict, steps: list) -> str | None:
    path = ""
    shape = attrs
    i = 0
    while i < len(steps) and steps[i] is None:  # count/for_each index: aws_x.a[0].arn
        i += 1
    while i < len(steps):
        name = steps[i]
        if name is None:
            i += 1
            continue
        if name not in shape:
            return f"no attribute `{path}{name}`{suggest(name, shape)}"
        path += f"{name}."
        shape = shape[name]
        if shape is None:  # a scalar, map or dynamic value: what follows is not schema
            return None
        i += 1
    return None


def check_address(mod: Module, address: str) -> str | None:
    """A resource address (module.a.module.b.type.name) declared in the configuration."""
    parts = re.sub(r"\[[^\]]*\]", "", address).split(".")
    here = mod
    while parts and parts[0] == "module" and len(parts) >= 2:
        call = here.modules.get(parts[1])
        if call is None:
            return f"`{address}`: no module `{parts[1]}` in {here.path.name}"
        called = called_module(here, call[1])
        if called is None:
            return None  # not a local module: nothing to read
        here, parts = called, parts[2:]
    if len(parts) == 2 and (parts[0], parts[1]) not in here.resources:
        return f"`{address}`: {here.path.name} declares no resource `{parts[0]}.{parts[1]}`"
    if len(parts) == 3 and parts[0] == "data" and (parts[1], parts[2]) not in here.data:
        return f"`{address}`: {here.path.name} declares no data source `{parts[1]}.{parts[2]}`"
    return None


def _load_module(path: str) -> Module:
    return Module(pathlib.Path(path))


def called_module(mod: Module, call: dict) -> Module | None:
    source = unquote(call.get("source", ""))
    if not isinstance(source, str) or not source.startswith(("./", "../")):
        return None
    target = (mod.path / source).resolve()
    if not any(target.glob("*.tf")):
        return None
    return _load_module(str(target))


def check_module_call(mod: Module, call: dict) -> list[str]:
    called = called_module(mod, call)
    source = unquote(call.get("source", ""))
    if called is None:
        if isinstance(source, str) and source.startswith(("./", "../")):
            return [f"source `{source}` is not a module directory"]
        return []
    out = []
    given = set()
    for key, _ in body_items(call):
        if key in MODULE_META:
            continue
        given.add(key)
        if key not in called.variables:
            out.append(f"`{key}`: {source} has no variable `{key}`{suggest(key, called.variables)}")
    for name, var in called.variables.items():
        if "default" not in var and name not in given:
            out.append(f"missing argument `{name}` ({source} declares it without a default)")
    return out


# ---- azapi body -------------------------------------------------------------------------

REQUIRED, READ_ONLY = 1, 2
# Set by azapi_resource's own arguments (azapi merges them into the body it sends).
AZAPI_TOP = {"name", "location", "tags", "identity", "type", "apiVersion", "id"}


def check_azapi_body(body: dict) -> list[str]:
    rtype = unquote(body.get("type", ""))
    if not isinstance(rtype, str) or "${" in rtype:
        return []
    if str(body.get("schema_validation_enabled", True)).lower() == "false":
        return []
    data = azapi_types()
    index = data["index"].get(rtype.lower())
    if index is None:
        return [f"`{rtype}` is not in the azapi type extract ({data['version']}): {EXTRACT_HINT}"]
    value = body.get("body")
    if not isinstance(value, dict):
        return []  # jsonencode(...) or an expression: nothing literal to check
    value = {k: v for k, v in body_items(value)}
    name = unquote(body.get("name", ""))
    if isinstance(name, str) and "${" not in name:
        value.setdefault("name", f'"{name}"')
    return [f"azapi body ({rtype}): {m}" for m in validate_azapi(data["types"], index, value, "", top=True)]


def literal(v):
    """(known, python value) of an HCL value as python-hcl2 gives it."""
    if isinstance(v, bool) or isinstance(v, (int, float)):
        return True, v
    if isinstance(v, str):
        if v.startswith('"') and v.endswith('"') and "${" not in v:
            return True, v[1:-1]
        return False, None
    return True, v


def validate_azapi(types: list, index: int, value, path: str, top: bool = False) -> list[str]:
    t = types[index]
    kind = t["$type"]
    known, v = literal(value)
    if not known:
        return []
    ref = lambda r: int(r["$ref"].split("/")[-1])  # noqa: E731
    where = path or "body"
    if kind == "ObjectType" or kind == "DiscriminatedObjectType":
        if not isinstance(v, dict):
            return [f"`{where}` must be an object"]
        props = dict(t.get("properties", {}))
        if kind == "DiscriminatedObjectType":
            props = dict(t.get("baseProperties", {}))
            disc = t["discriminator"]
            dknown, dval = literal(v.get(disc, ""))
            if not dknown:
                return []
            element = t["elements"].get(dval)
            if element is None:
                return [f"`{path}.{disc}` = {dval!r}: not one of {sorted(t['elements'])}"]
            props.update(types[ref(element)].get("properties", {}))
        out = []
        for key, sub in v.items():
            key = unquote(key)
            if key in ("__is_block__",):
                continue
            if top and key in AZAPI_TOP:
                continue
            prop = props.get(key)
            if prop is None:
                extra = t.get("additionalProperties")
                if extra:
                    out += validate_azapi(types, ref(extra), sub, f"{path}.{key}")
                else:
                    out.append(f"`{path}.{key}` is not a property of {t.get('name', 'this object')}{suggest(key, props)}")
                continue
            if prop.get("flags", 0) & READ_ONLY and not prop.get("flags", 0) & REQUIRED:
                out.append(f"`{path}.{key}` is read-only")
                continue
            out += validate_azapi(types, ref(prop["type"]), sub, f"{path}.{key}")
        for key, prop in props.items():
            flags = prop.get("flags", 0)
            if flags & REQUIRED and not flags & READ_ONLY and key not in v and not (top and key in AZAPI_TOP):
                out.append(f"missing required property `{path}.{key}`")
        return out
    if kind == "ArrayType":
        if not isinstance(v, list):
            return [f"`{where}` must be an array"]
        return [m for i, x in enumerate(v) for m in validate_azapi(types, ref(t["itemType"]), x, f"{path}[{i}]")]
    if kind == "StringLiteralType":
        return [] if v == t["value"] else [f"`{where}` = {v!r}: must be {t['value']!r}"]
    if kind == "UnionType":
        options = [types[ref(e)] for e in t["elements"]]
        if all(o["$type"] == "StringLiteralType" for o in options):
            values = [o["value"] for o in options]
            return [] if v in values else [f"`{where}` = {v!r}: not one of {values}"]
        return []
    if kind == "BooleanType":
        return [] if isinstance(v, bool) else [f"`{where}` must be a boolean"]
    if kind == "IntegerType":
        return [] if isinstance(v, int) and not isinstance(v, bool) else [f"`{where}` must be an integer"]
    if kind == "StringType":
        return [] if isinstance(v, str) else [f"`{where}` must be a string"]
    return []
