"""The modules render scalehook's TOML configuration from their variables. The tests run
the modules' own variables.tf, config.tf and template through `terraform console` (they
use no provider, so no `terraform init`), parse the result as TOML and check it against the
core's config schema; they also check that bad pools are refused at plan time."""

import json
import re
import os
import shutil
import subprocess
import tempfile
import tomllib

import pytest

from conftest import INFRA, MODULES, Module, core_source, rust_struct_fields, terraform_binary

SHARED = INFRA / "modules" / "pool-config"

# The variables each module requires besides `pools`.
REQUIRED = {
    "aws": {"lambda_zip_path": "scalehook-arm64.zip"},
    "azure": {
        "name": "scalehook-ci",
        "resource_group_name": "rg",
        "location": "westeurope",
        "storage_account_name": "stscalehookci",
        "webhook_secret_key_vault_secret": {
            "key_vault_id": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
            "secret_name": "scalehook-webhook-secret",
        },
    },
}
FLEET = {"aws": "aws_asg", "azure": "azure_vmss"}
VMSS = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/{}"


def fleet_value(cloud, name):
    return f"runners-{name}" if cloud == "aws" else VMSS.format(name)


def console(cloud: str, variables: dict, expr: str):
    """Evaluates `expr` in the module's variables and config (no providers involved).
    Returns (value or None, error text)."""
    env = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "TF_IN_AUTOMATION": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        # The module's layout: <cloud>/ beside modules/pool-config, which config.tf calls.
        work = os.path.join(tmp, cloud)
        os.mkdir(work)
        for f in ("variables.tf", "config.tf"):
            shutil.copy(MODULES[cloud] / f, work)
        shutil.copytree(SHARED, os.path.join(tmp, "modules", "pool-config"))
        with open(os.path.join(work, "test.tfvars.json"), "w") as fh:
            json.dump({**REQUIRED[cloud], **variables}, fh)
        # A local module only: init installs nothing from the network.
        init = subprocess.run(
            [terraform_binary(), "init", "-backend=false", "-input=false", "-no-color"],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=120,
        )
        assert init.returncode == 0, init.stdout + init.stderr
        out = subprocess.run(
            [terraform_binary(), "console", "-no-color", "-var-file=test.tfvars.json"],
            input=f"jsonencode({expr})\n",
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=120,
        )
    text = out.stdout + out.stderr
    if "Error:" in text:
        return None, text
    assert out.returncode == 0, text
    # console prints the JSON text as an HCL string literal, which is also a JSON string.
    last = [line for line in out.stdout.splitlines() if line.startswith('"')][-1]
    return json.loads(json.loads(last)), ""


def render(cloud: str, **variables) -> dict:
    value, error = console(cloud, variables, "local.config_toml")
    assert not error, error
    return tomllib.loads(value)


def pool(cloud, name="linux-x64", **over):
    # The fleet id stays valid whatever the name, so each case meets only its own check.
    fleet = fleet_value(cloud, re.sub(r"[^A-Za-z0-9._-]", "-", name))
    p = {"name": name, "labels": ["self-hosted", "linux", "x64"], "max": 20, FLEET[cloud]: fleet}
    p.update(over)
    return p


def test_one_shared_config_module():
    """The pools, options and rendering live once, in modules/pool-config; each cloud module
    passes its inputs through and keeps only its fleet id check."""
    shared = Module(SHARED)
    assert set(shared.variables) == {
        "fleet_key",
        "pools",
        "allowed_repositories",
        "allowed_organizations",
        "max_body_bytes",
        "cloud_timeout_ms",
        "ledger_ttl",
        "github",
    }
    assert not shared.resources and not shared.data, "the shared module renders text only"
    assert "required_providers" not in shared.text
    for cloud, fleet in FLEET.items():
        module = Module(MODULES[cloud])
        assert not (MODULES[cloud] / "templates" / "config.toml.tftpl").exists(), cloud
        call = module.modules["config"]
        assert call["source"] == "../modules/pool-config"
        assert call["fleet_key"] == fleet
        assert f"fleet                = p.{fleet}" in call["pools"] or f"p.{fleet}" in call["pools"]
        for name in set(shared.variables) - {"fleet_key", "pools"}:
            assert call[name] == f"${{var.{name}}}", (cloud, name)
            # Declared for the user, validated once in the shared module.
            assert "validation" not in module.variables[name], (cloud, name)
        assert module.locals["config_toml"] == "${module.config.toml}"
        # The pools variable keeps validations of its own about the fleet ids only (Azure:
        # the id's form, and one scale set per pool).
        checks = module.variables["pools"]["validation"]
        assert len(checks) == (1 if cloud == "aws" else 2), cloud
        for check in checks:
            assert f"pools[*].{fleet}" in check["error_message"]
    # Both clouds' config.tf are the same file but for the fleet field.
    assert (MODULES["aws"] / "config.tf").read_text().replace("aws_asg", "FLEET") == (
        MODULES["azure"] / "config.tf"
    ).read_text().replace("azure_vmss", "FLEET")


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_minimal_pool_gets_the_cores_defaults(cloud):
    doc = render(cloud, pools=[pool(cloud)])
    assert doc == {
        "pools": [
            {
                "name": "linux-x64",
                "labels": ["self-hosted", "linux", "x64"],
                "min": 0,
                "max": 20,
                "standby": 0,
                "runners_per_instance": 1,
                FLEET[cloud]: fleet_value(cloud, "linux-x64"),
                "ephemeral": False,
                "runner_group_id": 1,
            }
        ]
    }


def test_awkward_strings_survive_exactly():
    labels = ['quote"d', "back\\slash", "tab\there", "é<>&${x}%{y}", "new\nline", "#not-a-comment"]
    doc = render("aws", pools=[pool("aws", "gpu.a_1", labels=labels, min=1, max=2, runners_per_instance=2)])
    assert doc["pools"][0]["labels"] == labels
    assert doc["pools"][0]["name"] == "gpu.a_1"
    assert doc["pools"][0]["runners_per_instance"] == 2


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_all_options_and_pool_order(cloud):
    doc = render(
        cloud,
        pools=[pool(cloud, n, labels=["self-hosted", n], max=3) for n in ("b", "a", "c")],
        max_body_bytes=2097152,
        cloud_timeout_ms=6000,
        allowed_repositories=["org/repo"],
        allowed_organizations=["org", "other"],
        ledger_ttl={"queued_ttl_secs": 3600, "retention_secs": 345600},
    )
    assert doc["max_body_bytes"] == 2097152
    assert doc["cloud_timeout_ms"] == 6000
    assert doc["allowed_repositories"] == ["org/repo"]
    assert doc["allowed_organizations"] == ["org", "other"]
    assert doc["ledger"] == {"queued_ttl_secs": 3600, "retention_secs": 345600}
    # Config order decides routing: it must be kept.
    assert [p["name"] for p in doc["pools"]] == ["b", "a", "c"]
    assert doc["pools"][2][FLEET[cloud]] == fleet_value(cloud, "c")


def test_rendered_keys_are_the_cores_config_keys():
    """The core parses with deny_unknown_fields: every key rendered must be one it knows,
    and every option it knows is reachable from the modules."""
    src = core_source("config.rs")
    top = rust_struct_fields(src, "RawConfig")
    pool_fields = rust_struct_fields(src, "RawPool")
    ledger = rust_struct_fields(src, "RawLedger")
    github = rust_struct_fields(src, "RawGitHub")
    doc = render(
        "aws",
        pools=[pool("aws", runner_group="gpu", label_less_queued_repositories=["a/b"], warm_pool=2)],
        max_body_bytes=1,
        cloud_timeout_ms=1,
        allowed_repositories=["a/b"],
        allowed_organizations=["a"],
        ledger_ttl={"queued_ttl_secs": 1, "in_progress_ttl_secs": 1, "retention_secs": 259200},
        github=GITHUB,
    )
    assert set(doc) == top
    assert set(doc["ledger"]) == ledger
    # organization and repository are exclusive: one document shows each (and the second
    # names a repository webhook as the deliveries source).
    repo = render(
        "azure",
        pools=[pool("azure")],
        github={**GITHUB, "organization": None, "repository": "o/r", "hook_id": 7, "hook_repository": "o/web"},
    )
    assert set(doc["github"]) | set(repo["github"]) == github
    azure = render(
        "azure",
        pools=[
            pool("azure", "spot", capacity="spot", overflow="od", rerun_interrupted=True),
            pool("azure", "od"),
        ],
    )
    assert set(doc["pools"][0]) | set(azure["pools"][0]) == pool_fields


GITHUB = {
    "app_id": 4242,
    "installation_id": 77,
    "api_url": "https://ghe.example.com/api/v3",
    "organization": "acme",
    "boot_grace_secs": 900,
    "recheck_after_secs": 120,
}


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_github_section_and_pool_options(cloud):
    doc = render(
        cloud,
        pools=[
            pool(
                cloud,
                "eph",
                ephemeral=True,
                runner_group_id=5,
                runner_group="Build farm",
                label_less_queued_repositories=["acme/app"],
            ),
            pool(cloud, "plain"),
        ],
        github={"app_id": 1, "installation_id": 2, "repository": "acme/app"},
    )
    # Unset options are left to the core's defaults (api.github.com, its grace and recheck).
    assert doc["github"] == {"app_id": 1, "installation_id": 2, "repository": "acme/app"}
    eph, plain = doc["pools"]
    assert (eph["ephemeral"], eph["runner_group_id"], eph["runner_group"]) == (True, 5, "Build farm")
    assert eph["label_less_queued_repositories"] == ["acme/app"]
    assert (plain["ephemeral"], plain["runner_group_id"]) == (False, 1)
    assert "runner_group" not in plain and "label_less_queued_repositories" not in plain
    full = render(cloud, pools=[pool(cloud)], github=GITHUB)
    assert full["github"] == GITHUB
    assert "github" not in render(cloud, pools=[pool(cloud)]), "webhook-only without it"


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_github_hook_id_names_the_deliveries_source(cloud):
    """`hook_id` (and `hook_repository`) reach [github] as the core reads them: an
    organization or repository webhook whose deliveries redelivery reads instead of the
    App's own; without them the section has neither (the App's webhook)."""
    org = render(cloud, pools=[pool(cloud)], github={**GITHUB, "hook_id": 412345678})
    assert org["github"] == {**GITHUB, "hook_id": 412345678}
    repo = render(cloud, pools=[pool(cloud)], github={**GITHUB, "hook_id": 7, "hook_repository": "acme/web"})
    assert (repo["github"]["hook_id"], repo["github"]["hook_repository"]) == (7, "acme/web")
    app = render(cloud, pools=[pool(cloud)], github=GITHUB)
    assert "hook_id" not in app["github"] and "hook_repository" not in app["github"]


BAD_GITHUB = [
    ("both scopes", {"repository": "a/b"}, "exactly one of organization or repository"),
    ("no scope", {"organization": None}, "exactly one of organization or repository"),
    ("bad repository", {"organization": None, "repository": "just-a-name"}, "owner/name"),
    ("zero app", {"app_id": 0}, "numeric ids"),
    ("api url", {"api_url": "ghe.example.com"}, "http(s) URL"),
    ("grace", {"boot_grace_secs": 0}, "seconds, at least 1"),
    # As config.rs refuses them: hook_id 0, hook_repository without hook_id or not owner/name.
    ("zero hook", {"hook_id": 0}, "github.hook_id: the webhook's numeric id"),
    ("fraction hook", {"hook_id": 4.5}, "github.hook_id: the webhook's numeric id"),
    ("hook repository alone", {"hook_repository": "acme/web"}, "github.hook_repository: needs github.hook_id"),
    ("bad hook repository", {"hook_id": 7, "hook_repository": "acme"}, "github.hook_repository: owner/name"),
]


@pytest.mark.parametrize("case,over,message", BAD_GITHUB, ids=[c[0] for c in BAD_GITHUB])
def test_bad_github_sections_are_refused_at_plan_time(case, over, message):
    value, error = console("aws", {"pools": [pool("aws")], "github": {**GITHUB, **over}}, "local.config_toml")
    assert value is None and message in error, error


BAD_POOLS = [
    ("name", {"name": "a b"}, "use only letters, digits"),
    ("min above max", {"min": 5, "max": 2}, "0 <= min <= max"),
    ("max zero", {"max": 0}, "max >= 1"),
    ("runners_per_instance zero", {"runners_per_instance": 0}, "runners_per_instance >= 1"),
    ("no labels", {"labels": []}, "at least one non-empty label"),
    ("blank label", {"labels": ["self-hosted", " "]}, "at least one non-empty label"),
    ("fraction", {"max": 2.5}, "whole numbers"),
    ("runner group id", {"runner_group_id": 0}, "runner group's numeric id"),
    ("blank runner group", {"runner_group": " "}, "a runner group name"),
    ("label-less without group", {"label_less_queued_repositories": ["a/b"]}, "owner/name repositories"),
    ("warm spot pool", {"warm_pool": 2, "capacity": "spot"}, "a pool is either warm or spot"),
    ("warm pool above max", {"warm_pool": 30}, "a whole number from 0 to max"),
    ("unknown capacity", {"capacity": "reserved"}, "on-demand or spot"),
    ("overflow to itself", {"overflow": "linux-x64"}, "another, on-demand pool"),
]


@pytest.mark.parametrize("cloud", ["aws", "azure"])
@pytest.mark.parametrize("case,over,message", BAD_POOLS, ids=[c[0] for c in BAD_POOLS])
def test_bad_pools_are_refused_at_plan_time(cloud, case, over, message):
    value, error = console(cloud, {"pools": [pool(cloud, **over)]}, "local.config_toml")
    assert value is None and message in error, error


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_warm_spot_and_overflow_options_render_as_the_core_reads_them(cloud):
    doc = render(
        cloud,
        pools=[
            pool(cloud, "spot", capacity="spot", overflow="od", rerun_interrupted=True),
            pool(cloud, "od", warm_pool=3),
            pool(cloud, "plain"),
        ],
    )
    spot, od, plain = doc["pools"]
    assert (spot["capacity"], spot["overflow"], spot["rerun_interrupted"]) == ("spot", "od", True)
    assert od["warm_pool"] == 3
    # Defaults stay out of the document (the core's defaults apply).
    assert not {"warm_pool", "capacity", "overflow", "rerun_interrupted"} & (set(plain) | set(od) - {"warm_pool"})
    # An overflow to a spot pool is refused.
    _, error = console(
        cloud,
        {"pools": [pool(cloud, "a", capacity="spot", overflow="b"), pool(cloud, "b", capacity="spot")]},
        "local.config_toml",
    )
    assert "another, on-demand pool" in error, error


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_duplicate_pool_names_and_bad_fleets_are_refused(cloud):
    # The same name on two fleets.
    other = pool(cloud, **{FLEET[cloud]: fleet_value(cloud, "other")})
    _, error = console(cloud, {"pools": [pool(cloud), other]}, "local.config_toml")
    assert "must be unique" in error
    if cloud == "azure":
        # Two pools on one scale set: each would undo the other's capacity.
        _, error = console(cloud, {"pools": [pool(cloud), pool(cloud, name="gpu", azure_vmss=pool(cloud)["azure_vmss"].upper())]}, "var.pools")
        assert "one scale set per pool" in error
    bad = "a*group" if cloud == "aws" else "/subscriptions/x/resourceGroups/rg"
    _, error = console(cloud, {"pools": [pool(cloud, **{FLEET[cloud]: bad})]}, "var.pools")
    assert f"pools[*].{FLEET[cloud]}" in error


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_bad_options_are_refused_at_plan_time(cloud):
    base = {"pools": [pool(cloud)]}
    _, error = console(cloud, {**base, "cloud_timeout_ms": 9500}, "var.cloud_timeout_ms")
    assert "between 1 and 9000" in error
    _, error = console(cloud, {**base, "ledger_ttl": {"retention_secs": 3600}}, "var.ledger_ttl")
    assert "259200" in error
    if cloud == "aws":
        _, error = console(cloud, {**base, "webhook_secret": "short"}, "var.pools")
        assert "at least 16 characters" in error
    _, error = console(cloud, {**base, "ledger_ttl": {"queued_ttl_secs": 0}}, "var.ledger_ttl")
    assert "at least 1" in error
    _, error = console(cloud, {**base, "max_body_bytes": 0.5}, "var.max_body_bytes")
    assert "whole number of bytes" in error


def test_module_refers_to_the_config_local():
    """The rendered document is what the function gets."""
    aws = Module(MODULES["aws"])
    assert aws.locals["function_env"].count("local.config_toml") == 1
    azure = Module(MODULES["azure"])
    settings = azure.locals["app_settings"]
    assert re.search(r"SCALEHOOK_CONFIG_TOML\s*=\s*local\.config_toml", settings)
    assert "local.app_settings" in str(azure.resources["azapi_resource"]["app"]["body"])
