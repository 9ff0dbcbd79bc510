"""Write the provider schema extracts under infra/tests/schemas/ that test_schema.py checks against.

Run by `make infra-schema-extract` (needs npm; not part of `make test`). The committed extracts
hold only the resource and data source types infra/ uses, so `make test` never downloads a
provider binding; a type infra/ starts using fails test_schema.py with a message that says to
run this.

Sources:
- hashicorp/aws and hashicorp/azurerm: the CDK Terrain bindings on npm (`@cdktn/provider-aws`,
  `@cdktn/provider-azurerm`), generated from the provider's own schema. `npm view <pkg>@<v>
  cdktf` names the provider version. The jsii assembly (`package/.jsii`) lists, per resource,
  the config struct (arguments, nested blocks, which are required; each property's docs link
  carries its Terraform name) and the class's getters (every readable attribute).
- Azure/azapi: the type data azapi validates `body` against, `internal/azure/generated/` of
  github.com/Azure/terraform-provider-azapi at a release tag (pass a clone with --azapi-repo).

Extract format (one JSON file per provider version), per type a node:
  {"args": {name: required}, "types": {name: "string"|"number"|"bool"|"list"|"map"|"object"|"any"},
   "blocks": {name: {"required": bool, "single": bool, "node": node}},
   "attrs": {name: node-or-null}}
`args` are the attributes one may set, `blocks` the nested blocks, `attrs` every readable
attribute (settable or computed), with the readable shape of nested objects for references.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import re
import subprocess
import sys
import tarfile
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCHEMAS = HERE / "schemas"
CACHE = ROOT / ".tools" / "provider-schemas"

# provider -> the bindings to extract: (package, package version, provider version). Packages
# named @scope/name come from npm; azapi's binding is published on PyPI only (its wheel
# carries the same jsii assembly).
BINDINGS = {
    # Newest binding; infra/ pins ~> 2.4: schemas/README.md lists what infra/ uses and when
    # azapi added it.
    "azapi": [("cdktn-provider-azapi", "1.0.0", "2.13.0")],
    "aws": [
        # The nearest binding to the floor of infra/'s range (>= 6.28): see schemas/README.md
        # for what changed between 6.28.0 and 6.40.0 in the types infra/ uses.
        ("@cdktn/provider-aws", "23.7.0", "6.40.0"),
        # The newest binding inside the range (< 7.0).
        ("@cdktn/provider-aws", "25.7.0", "6.66.0"),
    ],
    # The nearest binding to the pin (4.81.0); schemas/README.md lists 4.74.0-4.81.0's changes.
    "azurerm": [("@cdktn/provider-azurerm", "16.1.0", "4.73.0")],
}
PREFIX = {"aws": "aws_", "azurerm": "azurerm_", "azapi": "azapi_"}

# azapi: the provider release whose type data is extracted, and type@api-version pairs
# extracted besides those infra/ uses today.
AZAPI_REF = "v2.4.0"
AZAPI_EXTRA = [
    # The ledger table through the management plane (issue 22, finding 1).
    "Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01",
    "Microsoft.Storage/storageAccounts/tableServices/tables@2024-01-01",
]


def used_types(prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    """Resource and data source types named in infra/ (by regex: this must not need hcl2)."""
    found: dict[str, set[str]] = {"resource": set(), "data": set()}
    for tf in (ROOT / "infra").rglob("*.tf"):
        for kind, name in re.findall(r'^\s*(resource|data)\s+"([a-z0-9_]+)"', tf.read_text(), re.M):
            if name.startswith(prefixes):
                found[kind].add(name)
    return found


def binding_jsii(package: str, version: str) -> pathlib.Path:
    """The binding's .jsii, from `npm pack` or `pip download` into .tools/provider-schemas (once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if not package.startswith("@"):
        return pypi_jsii(package, version)
    tgz = CACHE / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    out = CACHE / f"{tgz.stem}.jsii"
    if out.exists():
        return out
    if not tgz.exists():
        subprocess.run(
            ["npm", "pack", "--silent", "--pack-destination", str(CACHE), f"{package}@{version}"],
            check=True,
        )
    with tarfile.open(tgz) as tar:
        member = tar.getmember("package/.jsii")
        src = tar.extractfile(member)
        assert src is not None
        out.write_bytes(src.read())
    return out


def pypi_jsii(package: str, version: str) -> pathlib.Path:
    out = CACHE / f"{package}-{version}.jsii"
    if out.exists():
        return out
    wheel = CACHE / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    if not wheel.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", str(CACHE), f"{package}=={version}"],
            check=True,
        )
    with zipfile.ZipFile(wheel) as whl:
        inner = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(inner))) as tar:
            src = tar.extractfile("package/.jsii")
            assert src is not None
            out.write_bytes(src.read())
    return out


# The CDK runtime's own types (cdktn; cdktf in the older HashiCorp-published bindings).
RUNTIME = ("cdktn.", "cdktf.")
TF_NAME = re.compile(r"#([a-z0-9_]+) [A-Za-z0-9]+#")


def snake(camel: str) -> str:
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", camel).lower()


class Jsii:
    def __init__(self, path: pathlib.Path):
        self.types: dict = json.loads(path.read_text())["types"]
        # Terraform type name -> class fqn, from each class's "Represents a {@link ... name}".
        self.by_tf: dict[tuple[str, str], str] = {}
        self.provider: str | None = None
        for fqn, t in self.types.items():
            if t.get("kind") == "class" and t.get("base", "").endswith(".TerraformProvider"):
                self.provider = fqn
            base = t.get("base", "").split(".")[-1]
            if t.get("kind") != "class" or base not in ("TerraformResource", "TerraformDataSource"):
                continue
            m = re.search(r"/docs/(resources|data-sources)/\S+ (?:data\.)?([a-z0-9_]+)\}", t["docs"]["summary"])
            if m:
                self.by_tf[("resource" if m.group(1) == "resources" else "data", m.group(2))] = fqn

    @staticmethod
    def struct_of(typ: dict) -> tuple[str | None, bool]:
        """(struct fqn, single) of a property type naming a provider struct, else (None, _)."""
        if "fqn" in typ:
            return (typ["fqn"] if not typ["fqn"].startswith(RUNTIME) else None), True
        for inner in typ.get("union", {}).get("types", []):
            fqn, single = Jsii.struct_of(inner)
            if fqn:
                return fqn, single
        coll = typ.get("collection")
        if coll:
            fqn, _ = Jsii.struct_of(coll["elementtype"])
            return fqn, False
        return None, True

    @staticmethod
    def value_type(typ: dict) -> str:
        """The Terraform kind of an argument: string, number, bool, list, map, object or any."""
        if "primitive" in typ:
            return {"string": "string", "number": "number", "boolean": "bool"}.get(typ["primitive"], "any")
        if "collection" in typ:
            if typ["collection"]["elementtype"] == {"primitive": "any"}:
                return "any"  # a dynamic attribute (cdktn's map of any): list, map or scalar
            return "list" if typ["collection"]["kind"] == "array" else "map"
        if "fqn" in typ:
            return "any" if typ["fqn"].startswith(RUNTIME) else "object"
        kinds = {Jsii.value_type(t) for t in typ.get("union", {}).get("types", [])} - {"any"}
        return kinds.pop() if len(kinds) == 1 else "any"

    def config(self, fqn: str) -> dict:
        """args (with their types) and blocks of a config/block struct."""
        node: dict = {"args": {}, "blocks": {}, "types": {}}
        for p in self.types[fqn].get("properties", []):
            docs = p.get("docs", {})
            text = docs.get("summary", "") + " " + docs.get("remarks", "")
            m = TF_NAME.search(text)
            name = m.group(1) if m else snake(p["name"])
            required = not p.get("optional", False)
            struct, single = self.struct_of(p["type"])
            if struct and docs.get("summary", "").endswith(" block."):
                node["blocks"][name] = {"required": required, "single": single, "node": self.config(struct)}
            else:
                node["args"][name] = required
                node["types"][name] = self.value_type(p["type"])
        return node

    def readable(self, fqn: str, seen: frozenset = frozenset()) -> dict:
        """Readable attributes of a class (resource or OutputReference), nested shapes too."""
        attrs: dict = {}
        t = self.types[fqn]
        for p in t.get("properties", []):
            name = p["name"]
            if p.get("static") or name.endswith("Input") or name == "internalValue":
                continue
            shape = None
            ref = p["type"].get("fqn", "")
            if ref and not ref.startswith(RUNTIME) and ref not in seen:
                inner = self.types[ref]
                getter = next((m for m in inner.get("methods", []) if m["name"] == "get"), None)
                target = getter["returns"]["type"].get("fqn", "") if getter else ref
                if target and not target.startswith(RUNTIME) and target in self.types:
                    shape = self.readable(target, seen | {ref})
            attrs[snake(name)] = shape
        return attrs

    def node(self, kind: str, tf_type: str) -> dict | None:
        fqn = self.by_tf.get((kind, tf_type))
        if not fqn:
            return None
        node = self.config(fqn + "Config")
        node["attrs"] = self.readable(fqn)
        # Settable names are readable too (the getters' camel case may not map back).
        for name in list(node["args"]) + list(node["blocks"]):
            node["attrs"].setdefault(name, None)
        return node


def extract_providers(extra: list[str]) -> None:
    for provider, bindings in BINDINGS.items():
        used = used_types((PREFIX[provider],))
        for item in extra:  # "resource:aws_x" or "data:aws_x"
            kind, _, tf_type = item.partition(":")
            if tf_type.startswith(PREFIX[provider]):
                used[kind].add(tf_type)
        for package, version, provider_version in bindings:
            out = SCHEMAS / f"{provider}-{provider_version}.json"
            wanted = {k: set(v) for k, v in used.items()}
            if out.exists():  # keep what an earlier run extracted
                old = json.loads(out.read_text())
                for kind in ("resource", "data"):
                    wanted[kind] |= set(old[kind])
            jsii = Jsii(binding_jsii(package, version))
            doc = {
                "source": f"{'npm' if package.startswith('@') else 'PyPI'} {package}@{version} (.jsii), generated from "
                f"registry.terraform.io/{'azure' if provider == 'azapi' else 'hashicorp'}/{provider} {provider_version}",
                "provider": provider,
                "version": provider_version,
                "resource": {},
                "data": {},
                # The provider block's own arguments.
                "provider_config": jsii.config(jsii.provider + "Config") if jsii.provider else None,
            }
            for kind in ("resource", "data"):
                for tf_type in sorted(wanted[kind]):
                    node = jsii.node(kind, tf_type)
                    if node is None:
                        sys.exit(f"{package}@{version} has no {kind} {tf_type}")
                    doc[kind][tf_type] = node
            out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            print(f"wrote {out.relative_to(ROOT)}: {len(doc['resource'])} resources, {len(doc['data'])} data sources")


# ---- azapi ------------------------------------------------------------------------------


def azapi_used() -> set[str]:
    found = set()
    for tf in (ROOT / "infra").rglob("*.tf"):
        found |= set(re.findall(r'^\s*type\s*=\s*"([A-Za-z]+\.[A-Za-z]+/[^"@]+@[0-9a-z-]+)"', tf.read_text(), re.M))
    return found


def extract_azapi(repo: pathlib.Path) -> None:
    out = SCHEMAS / f"azapi-types-{AZAPI_REF.lstrip('v')}.json"
    wanted = azapi_used() | set(AZAPI_EXTRA)
    if out.exists():
        wanted |= set(json.loads(out.read_text())["resources"])
    files = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", AZAPI_REF, "internal/azure/generated/"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    types: list = []
    resources: dict[str, int] = {}
    for want in sorted(wanted):
        rtype, version = want.split("@")
        namespace = rtype.split("/")[0].lower()
        path = next(
            (f for f in files if f.lower().endswith(f"/{namespace}/{version}/types.json")), None
        )
        if path is None:
            sys.exit(f"azapi {AZAPI_REF} has no type data for {want}")
        data = json.loads(
            subprocess.run(["git", "-C", str(repo), "show", f"{AZAPI_REF}:{path}"], check=True, capture_output=True).stdout
        )
        index = next(
            (i for i, t in enumerate(data) if t.get("$type") == "ResourceType" and t["name"].lower() == want.lower()),
            None,
        )
        if index is None:
            sys.exit(f"azapi {AZAPI_REF} {path} has no {want}")
        # Copy the closure of the body type, renumbered into one list.
        remap: dict[int, int] = {}

        def copy(i: int) -> int:
            if i in remap:
                return remap[i]
            remap[i] = len(types)
            types.append(None)
            t = dict(data[i])
            t.pop("description", None)

            def fix(v):
                if isinstance(v, dict):
                    if set(v) == {"$ref"}:
                        return {"$ref": f"#/{copy(int(v['$ref'].split('/')[-1]))}"}
                    return {k: fix(x) for k, x in v.items() if k != "description"}
                if isinstance(v, list):
                    return [fix(x) for x in v]
                return v

            types[remap[i]] = fix(t)
            return remap[i]

        resources[want] = copy(int(data[index]["body"]["$ref"].split("/")[-1]))
    doc = {
        "source": f"github.com/Azure/terraform-provider-azapi {AZAPI_REF}, internal/azure/generated/ (bicep type data)",
        "version": AZAPI_REF.lstrip("v"),
        "resources": resources,
        "types": types,
    }
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out.relative_to(ROOT)}: {len(resources)} resource types, {len(types)} types")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--azapi-repo", type=pathlib.Path, help="a clone of Azure/terraform-provider-azapi (with tags)")
    ap.add_argument("--type", action="append", default=[], metavar="KIND:TYPE",
                    help="also extract this type (resource:aws_x or data:aws_x) before infra/ uses it")
    args = ap.parse_args()
    SCHEMAS.mkdir(exist_ok=True)
    extract_providers(args.type)
    if args.azapi_repo:
        extract_azapi(args.azapi_repo)
    else:
        print("azapi extract kept (pass --azapi-repo to rewrite it)")


if __name__ == "__main__":
    main()
