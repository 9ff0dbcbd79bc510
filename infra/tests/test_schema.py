"""infra/ against the providers' schemas (schema_check.py, extracts in schemas/), and broken
copies of infra/ that the check must reject: each mutation is one mistake `terraform validate`
(or azapi's body validation) would report, so a check that lets one through is itself broken.

The mutations find their place by resource type and block name, not by line, so they keep
working while the modules change; a mutation that finds nothing to change fails its test.
"""

from __future__ import annotations

import pathlib
import re
import shutil

import pytest
import schema_check
from conftest import INFRA


def test_infra_matches_the_provider_schemas():
    findings = schema_check.check(INFRA)
    assert not findings, "infra/ does not match the providers' schemas:\n" + "\n".join(findings)


def test_every_provider_infra_uses_has_a_schema():
    versions = {p: [d["version"] for d in docs] for p, docs in schema_check.provider_schemas().items()}
    # aws: both ends of the pinned range; azurerm: the pin; azapi: both ends of ~> 2.4.
    assert versions == {"aws": ["6.40.0", "6.66.0"], "azurerm": ["4.81.0"], "azapi": ["2.4.0", "2.13.0"]}


# ---- broken copies ----------------------------------------------------------------------


@pytest.fixture
def copy(tmp_path) -> pathlib.Path:
    root = tmp_path / "infra"
    shutil.copytree(INFRA, root, ignore=shutil.ignore_patterns("tests", ".terraform*"))
    return root


def block_of(root: pathlib.Path, header: str, under: str = "") -> tuple[pathlib.Path, re.Match]:
    """The first `header ... {` line (a regex) in a .tf file under root (or root/under)."""
    for tf in sorted((root / under).rglob("*.tf")):
        m = re.search(r"^[ \t]*" + header + r'[^\n]*\{[ \t]*\n', tf.read_text(), re.M)
        if m:
            return tf, m
    pytest.fail(f"no block matching {header!r} to break")


def insert_into(root: pathlib.Path, header: str, lines: str, under: str = "") -> str:
    """Insert lines at the top of the first block matching header; returns its module dir."""
    tf, m = block_of(root, header, under)
    text = tf.read_text()
    tf.write_text(text[: m.end()] + lines + "\n" + text[m.end() :])
    return str(tf.parent.relative_to(root))


def delete_in(root: pathlib.Path, header: str, line: str) -> str:
    """Delete the first line matching `line` (a regex) inside the block matching header."""
    tf, m = block_of(root, header)
    text = tf.read_text()
    body = text[m.end() :]
    hit = re.search(r"^[ \t]*" + line + r"[^\n]*\n", body, re.M)
    assert hit, f"no line {line!r} in {header!r} to delete"
    tf.write_text(text[: m.end()] + body[: hit.start()] + body[hit.end() :])
    return str(tf.parent.relative_to(root))


def findings(root: pathlib.Path, module: str) -> str:
    return "\n".join(schema_check.check(root / module))


def delete_block(root: pathlib.Path, header: str) -> str:
    """Delete the first whole block matching header (to its closing brace)."""
    tf, m = block_of(root, header)
    text = tf.read_text()
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    tf.write_text(text[: m.start()] + text[i:].lstrip("\n"))
    return str(tf.parent.relative_to(root))


# One mistake inserted at the top of the first block matching the header: what the check says.
INSERTED = {
    "an_unknown_argument": (
        r'resource "aws_lambda_function"',
        "  memory_sizee = 256",
        "unknown argument `memory_sizee` (did you mean `memory_size`?) [aws 6.40.0]",
    ),
    "an_unknown_argument_in_a_nested_block": (r"  os_disk", '    caching_mode = "ReadOnly"', "unknown argument `os_disk.caching_mode`"),
    "a_block_the_type_does_not_have": (
        r'resource "aws_launch_template"',
        '  metadata {\n    http_tokens = "required"\n  }',
        "unknown block `metadata` (did you mean `metadata_options`?)",
    ),
    "an_argument_written_as_a_block": (r'resource "aws_sns_topic"', "  display_name {\n  }", "`display_name` is an argument, not a block"),
    "a_block_written_as_an_argument": (
        r'resource "aws_autoscaling_group"',
        '  instance_refresh = { strategy = "Rolling" }',
        "`instance_refresh` is a block, not an argument",
    ),
    "a_single_block_given_twice": (
        r'resource "aws_lambda_function_url"',
        "  cors {\n  }\n  cors {\n  }",
        "block `cors` may appear once, given 2 times",
    ),
    "an_ignore_changes_of_no_argument": (
        r'resource "aws_lambda_function"',
        "  lifecycle {\n    ignore_changes = [memory_sizes]\n  }",
        "lifecycle.ignore_changes: no argument `memory_sizes` (did you mean `memory_size`?)",
    ),
    "a_module_argument_the_module_does_not_declare": (r'module "scalehook"', "  not_a_variable = 1", "has no variable `not_a_variable`"),
}


@pytest.mark.parametrize("case", sorted(INSERTED))
def test_an_inserted_mistake_fails(copy, case):
    header, lines, expected = INSERTED[case]
    assert expected in findings(copy, insert_into(copy, header, lines))


def test_a_missing_required_argument_fails(copy):
    module = delete_in(copy, r'resource "aws_sns_topic_subscription"', r"protocol\s*=")
    assert "missing required argument `protocol`" in findings(copy, module)


def test_a_missing_required_block_fails(copy):
    module = delete_block(copy, r"os_disk")
    assert "missing required block `os_disk`" in findings(copy, module)


def test_a_dynamic_block_the_type_does_not_have_fails(copy):
    tf, m = block_of(copy, r'dynamic "tag"')
    tf.write_text(tf.read_text().replace('dynamic "tag"', 'dynamic "tags"', 1))
    assert "dynamic `tags`: no such block (did you mean `tag`?)" in findings(copy, str(tf.parent.relative_to(copy)))


def test_a_dynamic_blocks_content_is_checked(copy):
    tf, m = block_of(copy, r'dynamic "')
    label = re.search(r'dynamic "([^"]+)"', m.group(0)).group(1)
    module = insert_into(copy, r"    content", "      not_an_argument = true")
    assert f"unknown argument `{label}.not_an_argument`" in findings(copy, module)


def test_a_reference_to_an_attribute_the_type_does_not_have_fails(copy):
    tf, m = block_of(copy, r'resource "aws_lambda_function" "')
    name = re.search(r'"aws_lambda_function" "([^"]+)"', m.group(0)).group(1)
    (tf.parent / "broken.tf").write_text(f'output "broken" {{\n  value = aws_lambda_function.{name}.invoke_url\n}}\n')
    out = findings(copy, str(tf.parent.relative_to(copy)))
    assert f"`aws_lambda_function.{name}`: no attribute `invoke_url` (did you mean `invoke_arn`?)" in out


def test_a_reference_into_a_nested_block_is_checked(copy):
    tf, m = block_of(copy, r'resource "azurerm_linux_virtual_machine_scale_set" "')
    name = re.search(r'scale_set" "([^"]+)"', m.group(0)).group(1)
    (tf.parent / "broken.tf").write_text(
        f'output "broken" {{\n  value = azurerm_linux_virtual_machine_scale_set.{name}.identity[0].object_id\n}}\n'
    )
    out = findings(copy, str(tf.parent.relative_to(copy)))
    assert "no attribute `identity.object_id`" in out


def test_a_reference_to_an_undeclared_resource_or_variable_fails(copy):
    (copy / "aws" / "broken.tf").write_text(
        'output "broken" {\n  value = [aws_iam_role.nobody.arn, var.not_declared, local.nothing]\n}\n'
    )
    out = findings(copy, "aws")
    assert "`aws_iam_role.nobody` is not declared in this module" in out
    assert "`var.not_declared` is not declared" in out
    assert "`local.nothing` is not declared" in out


def test_a_module_call_without_a_required_variable_fails(copy):
    tf, _ = block_of(copy, r'module "scalehook"')
    text = tf.read_text()
    head, call = text.split('module "scalehook"', 1)
    assert re.search(r"^\s+pools\s*=", call, re.M), "no `pools = ` in the module call to break"
    tf.write_text(head + 'module "scalehook"' + re.sub(r"^(\s+)pools(\s*=)", r"\1poolz\2", call, count=1, flags=re.M))
    out = findings(copy, str(tf.parent.relative_to(copy)))
    assert "missing argument `pools`" in out
    assert "has no variable `poolz` (did you mean `pools`?)" in out


def test_a_module_output_the_module_does_not_have_fails(copy):
    (copy / "examples" / "aws" / "broken.tf").write_text('output "broken" {\n  value = module.scalehook.no_such_output\n}\n')
    assert "has no output `no_such_output`" in findings(copy, "examples/aws")


def test_a_type_missing_from_the_extract_says_to_extract_it(copy):
    (copy / "aws" / "broken.tf").write_text('resource "aws_sqs_queue" "broken" {\n  name = "x"\n}\n')
    assert "`aws_sqs_queue` is not in the aws 6.40.0 extract: run `make infra-schema-extract`" in findings(copy, "aws")


def test_an_azapi_body_property_the_api_version_does_not_have_fails(copy):
    module = insert_into(copy, r"siteConfig =", '        minimumTlsVersion = "1.2"', under="azure")
    out = findings(copy, module)
    assert "`.properties.siteConfig.minimumTlsVersion` is not a property of SiteConfig (did you mean `minTlsVersion`?)" in out


def test_an_azapi_read_only_property_fails(copy):
    module = insert_into(copy, r"properties =", '      defaultHostName = "x.azurewebsites.net"', under="azure")
    assert "`.properties.defaultHostName` is read-only" in findings(copy, module)


def test_an_azapi_value_of_the_wrong_type_fails(copy):
    # (Azure's enums are open, string literals or any string, so a wrong type it is.)
    tf, _ = block_of(copy, r"siteConfig =", under="azure")
    text = tf.read_text()
    old = re.search(r"http20Enabled\s*=\s*true", text)
    assert old, "no `http20Enabled = true` to break"
    tf.write_text(text.replace(old.group(0), 'http20Enabled = "yes"', 1))
    assert "`.properties.siteConfig.http20Enabled` must be a boolean" in findings(copy, "azure")


def test_an_azapi_type_missing_from_the_extract_says_to_extract_it(copy):
    (copy / "azure" / "broken.tf").write_text(
        'resource "azapi_resource" "broken" {\n  type      = "Microsoft.Web/sites@2099-01-01"\n'
        '  name      = "x"\n  parent_id = "y"\n  body      = {}\n}\n'
    )
    assert "`Microsoft.Web/sites@2099-01-01` is not in the azapi type extract" in findings(copy, "azure")


def test_an_azapi_argument_newer_than_the_pinned_floor_fails(copy):
    module = insert_into(copy, r'resource "azapi_resource" "app"', "  ignore_null_property = true")
    out = findings(copy, module)
    assert "unknown argument `ignore_null_property`" in out and "[azapi 2.4.0]" in out
    assert "[azapi 2.13.0]" not in out


def test_a_provider_argument_the_provider_does_not_have_fails(copy):
    module = insert_into(copy, r'provider "azurerm"', "  storage_use_azure_ad = true")
    assert "provider.azurerm: unknown argument `storage_use_azure_ad` (did you mean `storage_use_azuread`?)" in findings(
        copy, module
    )


def test_a_moved_block_to_an_address_nothing_declares_fails(copy):
    (copy / "aws" / "broken.tf").write_text("moved {\n  from = aws_iam_role.old\n  to   = aws_iam_role.nobody\n}\n")
    assert "moved: `aws_iam_role.nobody`: aws declares no resource `aws_iam_role.nobody`" in findings(copy, "aws")


def test_a_literal_of_the_wrong_type_fails(copy):
    module = insert_into(
        copy,
        r'resource "aws_autoscaling_group"',
        '  termination_policies = "OldestInstance"\n  default_cooldown     = "five minutes"',
    )
    out = findings(copy, module)
    assert "`termination_policies`: a list is expected, not a single value" in out
    assert '`default_cooldown`: a number is expected, not "five minutes"' in out


# ---- the extracts' versions against the pins --------------------------------------------


def version(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.strip().split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def allows(constraint: str, v: tuple[int, ...]) -> bool:
    """Terraform's version constraint syntax: `>= 6.28, < 7.0`, `~> 2.4`, `4.81.0`."""
    for part in constraint.split(","):
        m = re.fullmatch(r"\s*(=|!=|>=|<=|>|<|~>)?\s*([0-9.]+)\s*", part)
        assert m, f"cannot read the version constraint {constraint!r}"
        op, bound = m.group(1) or "=", m.group(2)
        b = version(bound)
        if op == "~>":
            n = len(bound.split("."))
            upper = (b[0] + 1, 0, 0) if n <= 2 else (b[0], b[1] + 1, 0)
            ok = b <= v < upper
        else:
            ok = {"=": v == b, "!=": v != b, ">=": v >= b, "<=": v <= b, ">": v > b, "<": v < b}[op]
        if not ok:
            return False
    return True


def constraints() -> dict[str, list[tuple[str, str]]]:
    """provider -> (module, version constraint) from every required_providers in infra/."""
    out: dict[str, list[tuple[str, str]]] = {}
    for d in schema_check.module_dirs(INFRA):
        for f in d.glob("*.tf"):
            for block in schema_check.parse(f.read_text()).get("terraform", []):
                for req in block.get("required_providers", []):
                    for name, spec in schema_check.body_items(req):
                        if isinstance(spec, dict) and "version" in spec:
                            out.setdefault(name, []).append((str(d.relative_to(INFRA)), schema_check.unquote(spec["version"])))
    return out


# The oldest version each provider's constraints allow, below the oldest schema checked: what
# changed in between is in schemas/README.md. Moving a floor means reading that again.
FLOORS = {"aws": (6, 28, 0), "azapi": (2, 4, 0), "azurerm": (4, 81, 0)}


def test_the_schemas_checked_are_versions_every_pin_allows():
    pins = constraints()
    assert set(pins) == set(schema_check.provider_schemas()), "a provider without a schema extract, or the reverse"
    for provider, docs in schema_check.provider_schemas().items():
        for doc in docs:
            for module, constraint in pins[provider]:
                assert allows(constraint, version(doc["version"])), (
                    f"{module} requires {provider} {constraint}: the {doc['version']} schema is not a version it allows"
                )


def test_the_oldest_version_allowed_is_the_one_the_schemas_readme_covers():
    for provider, pins in constraints().items():
        candidates = [version(m.group(1)) for _, c in pins for m in re.finditer(r"(?:>=|~>|^=?)\s*([0-9][0-9.]*)", c)]
        allowed = [v for v in candidates if all(allows(c, v) for _, c in pins)]
        assert allowed, f"{provider}: the modules' constraints allow no version in common: {pins}"
        floor = min(allowed)
        assert floor == FLOORS[provider], (
            f"{provider}: the pins now allow {'.'.join(map(str, floor))} and up; check what changed from there to "
            "the oldest schema checked (schemas/README.md) and update FLOORS"
        )
