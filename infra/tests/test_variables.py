"""Every variable says what it is for and what type it takes; outputs are described; the
variables users expect exist with the expected shape."""

import re
import textwrap

import pytest

from conftest import EXAMPLES, INFRA, MODULES, Module

ALL_DIRS = {**{f"module:{k}": v for k, v in MODULES.items()}, **{f"example:{k}": v for k, v in EXAMPLES.items()}}


@pytest.mark.parametrize("where", sorted(ALL_DIRS))
def test_every_variable_has_a_description_and_a_type(where):
    module = Module(ALL_DIRS[where])
    assert module.variables, where
    for name, v in module.variables.items():
        assert len(v.get("description", "").strip()) >= 10, f"{where}: variable {name} has no description"
        assert v.get("type"), f"{where}: variable {name} has no type"


@pytest.mark.parametrize("where", sorted(ALL_DIRS))
def test_every_output_has_a_description(where):
    module = Module(ALL_DIRS[where])
    for name, o in module.outputs.items():
        assert len(o.get("description", "").strip()) >= 10, f"{where}: output {name} has no description"


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_secret_variables_are_sensitive(cloud):
    module = Module(MODULES[cloud])
    secrets = [n for n in module.variables if re.fullmatch(r"webhook_secret(_previous)?", n)]
    if cloud == "azure":
        # Azure takes the webhook secret as Key Vault references only: no value variable.
        assert secrets == []
        assert "default" not in module.variables["webhook_secret_key_vault_secret"]
    else:
        assert "webhook_secret" in secrets
    for name in secrets:
        assert module.variables[name].get("sensitive") is True, name
    # Nothing else looks like a secret and goes unmarked.
    for name, v in module.variables.items():
        if name.endswith(("_password", "_key")) and "arn" not in name:
            assert v.get("sensitive") is True, name


@pytest.mark.parametrize("cloud,fleet", [("aws", "aws_asg"), ("azure", "azure_vmss")])
def test_pools_mirror_the_config_file(cloud, fleet):
    module = Module(MODULES[cloud])
    pools_type = module.variables["pools"]["type"]
    for field in ("name", "labels", "min", "max", "standby", "runners_per_instance", fleet):
        assert re.search(rf"\b{field}\b", pools_type), f"{cloud}: pools lacks {field}"
    # Defaults as in the core: min 0, standby 0, runners_per_instance 1.
    assert "optional(number, 0)" in pools_type
    assert "optional(number, 1)" in pools_type


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_webhook_url_output_exists(cloud):
    module = Module(MODULES[cloud])
    assert "webhook_url" in module.outputs


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_readme_documents_every_input_and_output(cloud):
    """The module README is the deployment guide: its tables list every input and output."""
    module = Module(MODULES[cloud])
    text = (MODULES[cloud] / "README.md").read_text()
    assert "\n## Inputs and outputs\n" in text, f"{cloud} README: no 'Inputs and outputs' section"
    readme = text.split("\n## Inputs and outputs\n", 1)[1].split("\n## ", 1)[0]
    for name in module.variables:
        assert f"| `{name}` |" in readme, f"{cloud} README: input {name} missing"
    for name in module.outputs:
        assert f"| `{name}` |" in readme, f"{cloud} README: output {name} missing"
    # And nothing stale.
    documented = set(re.findall(r"^\| `(\w+)` \|", readme, re.M))
    assert documented <= set(module.variables) | set(module.outputs), documented - (
        set(module.variables) | set(module.outputs)
    )


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_examples_call_the_module_with_its_inputs(cloud):
    """Without `terraform validate` here, check the examples' module calls by hand: every
    argument is an input of the module, every required input is given, and each pool has
    the fields the pools type requires."""
    module = Module(MODULES[cloud])
    example = Module(EXAMPLES[cloud])
    calls = {name: c for name, c in example.modules.items() if c["source"] == f"../../{cloud}"}
    assert list(calls) == ["scalehook"]
    call = calls["scalehook"]
    meta = {"source", "version", "providers", "depends_on", "count", "for_each"}
    args = set(call) - meta
    assert args <= set(module.variables), args - set(module.variables)
    required = {n for n, v in module.variables.items() if "default" not in v}
    assert required <= args, required - args
    fleet = "aws_asg" if cloud == "aws" else "azure_vmss"
    for pool in call["pools"]:
        assert {"name", "labels", "max", fleet} <= set(pool), pool
    # The example's outputs read outputs the module has.
    for name, out in example.outputs.items():
        for ref in re.findall(r"module\.scalehook\.(\w+)", out["value"]):
            assert ref in module.outputs, f"example output {name} reads missing output {ref}"


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_examples_ignore_capacity_drift_and_warn_about_cpu_autoscaling(cloud):
    example = Module(EXAMPLES[cloud])
    kind = "aws_autoscaling_group" if cloud == "aws" else "azurerm_linux_virtual_machine_scale_set"
    groups = dict(example.resources.get(kind, {}))
    # Groups the example creates through the runner module (infra/<cloud>/runners).
    if any(c["source"] == f"../../{cloud}/runners" for c in example.modules.values()):
        groups.update(Module(INFRA / cloud / "runners").resources.get(kind, {}))
    assert groups, "the example has runner groups"
    field = "desired_capacity" if cloud == "aws" else "instances"
    for name, group in groups.items():
        assert group["lifecycle"][0]["ignore_changes"] == [field], name
    assert re.search(r"WARNING: do not (attach CPU|create a Microsoft\.Insights/autoscalesettings)", example.text)
    assert "WARNING: ignore" in example.text
    # And no autoscaling policy of the clouds' own in the examples.
    assert "aws_autoscaling_policy" not in example.resources
    assert "azurerm_monitor_autoscale_setting" not in example.resources


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_readme_snippets_parse_and_use_real_inputs(cloud):
    """The README's HCL snippets are valid HCL, and its module call uses real inputs."""
    import hcl2

    from conftest import plain

    module = Module(MODULES[cloud])
    readme = (MODULES[cloud] / "README.md").read_text()
    snippets = re.findall(r"```hcl\n(.*?)```", readme, re.S)
    assert snippets
    calls = 0
    for snippet in snippets:
        doc = plain(hcl2.loads(textwrap.dedent(snippet)))
        for block in doc.get("module", []):
            for call in block.values():
                calls += 1
                args = set(call) - {"source"}
                assert args <= set(module.variables), args - set(module.variables)
                required = {n for n, v in module.variables.items() if "default" not in v}
                assert required <= args, required - args
    assert calls == 1


def test_ledger_ttl_descriptions_state_the_cores_defaults():
    """Every ledger_ttl description names the core's defaults in seconds: a user who copies
    the figure "to keep the default" gets the default (in_progress is 6 days, not 24 h)."""
    from conftest import core_source

    src = core_source("config.rs")
    default = src[src.index("impl Default for LedgerTtl"):]
    secs = {}
    for field in ("queued", "in_progress", "retention"):
        expr = re.search(field + r": Duration::from_secs\(([0-9* ]+)\)", default).group(1)
        secs[field] = eval(expr)  # a product of integer literals, e.g. 6 * 24 * 3600
    assert secs["in_progress"] == 518400
    for where in (MODULES["aws"], MODULES["azure"], INFRA / "modules" / "pool-config"):
        desc = Module(where).variables["ledger_ttl"]["description"]
        for field, value in secs.items():
            assert f"{field}_{'secs' if field == 'retention' else 'ttl_secs'} {value}" in desc, (where.name, field)
        assert "24 h" not in desc.replace("48 h", ""), where.name
