"""The modules render scalehook's TOML configuration from the `pools` variable. The
template is evaluated by terraform itself (`terraform console` needs no provider) and the
result parsed as TOML, with awkward strings, and checked against the core's config schema."""

import json
import os
import subprocess
import tempfile
import tomllib

import pytest

from conftest import MODULES, core_source, rust_struct_fields, terraform_binary


def hcl(value) -> str:
    """A Python value as an HCL expression (JSON is valid HCL for these)."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {hcl(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(hcl(v) for v in value) + "]"
    return json.dumps(value)


def render(cloud: str, variables: dict) -> str:
    template = MODULES[cloud] / "templates" / "config.toml.tftpl"
    # jsonencode: console prints a JSON string we can decode exactly.
    expr = f"jsonencode(templatefile({json.dumps(str(template))}, {hcl(variables)}))\n"
    with tempfile.TemporaryDirectory() as empty:
        out = subprocess.run(
            [terraform_binary(), "console"],
            input=expr,
            capture_output=True,
            text=True,
            cwd=empty,
            env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"},
            timeout=120,
        )
    assert out.returncode == 0, out.stderr
    # console prints the HCL string literal of the JSON text; both decode as JSON.
    return json.loads(json.loads(out.stdout.strip()))


def variables(fleet_key="aws_asg", **over):
    v = {
        "max_body_bytes": None,
        "cloud_timeout_ms": None,
        "allowed_repositories": [],
        "allowed_organizations": [],
        "ledger": {},
        "fleet_key": fleet_key,
        "pools": [
            {
                "name": "linux-x64",
                "labels": ["self-hosted", "linux", "x64"],
                "min": 0,
                "max": 20,
                "standby": 1,
                "runners_per_instance": 1,
                "fleet": "github-runners-linux",
            }
        ],
    }
    v.update(over)
    return v


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_templates_are_the_same(cloud):
    # One template, copied into each module so each module stands alone.
    other = "azure" if cloud == "aws" else "aws"
    a = (MODULES[cloud] / "templates" / "config.toml.tftpl").read_text()
    b = (MODULES[other] / "templates" / "config.toml.tftpl").read_text()
    assert a == b


def test_minimal_config_round_trips():
    doc = tomllib.loads(render("aws", variables()))
    assert doc == {
        "pools": [
            {
                "name": "linux-x64",
                "labels": ["self-hosted", "linux", "x64"],
                "min": 0,
                "max": 20,
                "standby": 1,
                "runners_per_instance": 1,
                "aws_asg": "github-runners-linux",
            }
        ]
    }


def test_awkward_strings_survive_exactly():
    labels = ['quote"d', "back\\slash", "tab\there", "é<>&", "new\nline", "#not-a-comment"]
    text = render("aws", variables(pools=[
        {"name": "gpu.a_1", "labels": labels, "min": 1, "max": 2, "standby": 0,
         "runners_per_instance": 2, "fleet": "group with 'quotes' \"too\""},
    ]))
    doc = tomllib.loads(text)
    assert doc["pools"][0]["labels"] == labels
    assert doc["pools"][0]["aws_asg"] == "group with 'quotes' \"too\""
    assert doc["pools"][0]["runners_per_instance"] == 2


def test_all_options_and_several_pools_for_azure():
    vmss = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/{}"
    text = render("azure", variables(
        fleet_key="azure_vmss",
        max_body_bytes=2097152,
        cloud_timeout_ms=6000,
        allowed_repositories=["org/repo"],
        allowed_organizations=["org", "other"],
        ledger={"queued_ttl_secs": 3600, "retention_secs": 345600},
        pools=[
            {"name": n, "labels": ["self-hosted", n], "min": 0, "max": 3, "standby": 0,
             "runners_per_instance": 1, "fleet": vmss.format(n)}
            for n in ("a", "b", "c")
        ],
    ))
    doc = tomllib.loads(text)
    assert doc["max_body_bytes"] == 2097152
    assert doc["cloud_timeout_ms"] == 6000
    assert doc["allowed_repositories"] == ["org/repo"]
    assert doc["allowed_organizations"] == ["org", "other"]
    assert doc["ledger"] == {"queued_ttl_secs": 3600, "retention_secs": 345600}
    assert [p["name"] for p in doc["pools"]] == ["a", "b", "c"]
    assert doc["pools"][2]["azure_vmss"] == vmss.format("c")


def test_rendered_keys_are_the_cores_config_keys():
    """The core parses with deny_unknown_fields: every key we render must be one it knows."""
    src = core_source("config.rs")
    top = rust_struct_fields(src, "RawConfig")
    pool = rust_struct_fields(src, "RawPool")
    ledger = rust_struct_fields(src, "RawLedger")
    doc = tomllib.loads(render("aws", variables(
        max_body_bytes=1, cloud_timeout_ms=1, allowed_repositories=["a/b"],
        allowed_organizations=["a"],
        ledger={"queued_ttl_secs": 1, "in_progress_ttl_secs": 1, "retention_secs": 259200},
    )))
    assert set(doc) <= top
    assert set(doc) == top, "every top-level option is reachable from the module"
    assert set(doc["ledger"]) == ledger
    assert set(doc["pools"][0]) <= pool
    azure = tomllib.loads(render("azure", variables(fleet_key="azure_vmss")))
    assert set(doc["pools"][0]) | set(azure["pools"][0]) == pool


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_module_passes_every_template_variable(cloud):
    """The module's templatefile call gives the template what it uses."""
    from conftest import Module

    call = Module(MODULES[cloud]).locals["config_toml"]
    for name in variables():
        assert f"{name} " in call or f"{name}=" in call, f"{cloud}: {name} not passed"
