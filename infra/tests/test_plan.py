"""`terraform plan` of the examples with every provider stood in by `terraform_data`
(plan_shim.py): a first plan must not need values known only after apply (for_each keys,
count), nor put sensitive values in for_each.

The buggy shape (for_each keyed by scale set ids that come from another module's resource,
issue 22 finding 2) is kept below as a fixture: the check must reject it, and accept the same
structure keyed by pool name.
"""

from __future__ import annotations

import pathlib
import textwrap

import plan_shim
import pytest
from conftest import INFRA, terraform_binary


@pytest.fixture(scope="module")
def shimmed(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("plan")
    plan_shim.shim(INFRA, out)
    return out / INFRA.name


@pytest.mark.parametrize("example", ["aws", "azure"])
def test_the_example_plans_before_anything_exists(shimmed, example):
    result = plan_shim.plan(shimmed / "examples" / example, terraform_binary())
    assert result.returncode == 0, f"terraform plan of examples/{example} (providers shimmed):\n{result.stderr}"
    assert "Plan:" in result.stdout


def write_tree(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


RUNNERS = """\
    variable "pool" {
      type = string
    }

    resource "azurerm_linux_virtual_machine_scale_set" "runners" {
      name                = "runners-${var.pool}"
      resource_group_name = "ci"
      location            = "westeurope"
      sku                 = "Standard_D4s_v5"
      admin_username      = "runner"
    }

    output "scale_set_id" {
      value = azurerm_linux_virtual_machine_scale_set.runners.id
    }
"""

EXAMPLE = """\
    module "runners_linux_x64" {
      source = "../runners"
      pool   = "linux-x64"
    }

    module "scalehook" {
      source = "../scalehook"
      pools  = [{ name = "linux-x64", azure_vmss = module.runners_linux_x64.scale_set_id }]
    }
"""

# infra/azure at fc878a6: main.tf's locals and rbac.tf, reduced to the keys.
SCALEHOOK_KEYED_BY_ID = """\
    variable "pools" {
      type = list(object({ name = string, azure_vmss = string }))
    }

    locals {
      scale_sets = { for p in var.pools : lower(p.azure_vmss) => p.azure_vmss }
    }

    resource "azurerm_role_assignment" "scale_set" {
      for_each             = local.scale_sets
      scope                = each.value
      role_definition_name = "scalehook scale set scaler"
      principal_id         = "00000000-0000-0000-0000-000000000000"
    }
"""


def plan_fixture(tmp_path: pathlib.Path, scalehook: str) -> str:
    tree = write_tree(
        tmp_path / "infra",
        {"runners/main.tf": RUNNERS, "example/main.tf": EXAMPLE, "scalehook/main.tf": scalehook},
    )
    plan_shim.shim(tree, tmp_path / "shimmed")
    result = plan_shim.plan(tmp_path / "shimmed" / "infra" / "example", terraform_binary())
    return result.stderr if result.returncode else ""


def test_for_each_keyed_by_ids_known_only_after_apply_fails(tmp_path):
    errors = plan_fixture(tmp_path, SCALEHOOK_KEYED_BY_ID)
    assert "Invalid for_each argument" in errors
    assert "local.scale_sets will be known only after apply" in errors


def test_for_each_keyed_by_pool_name_plans(tmp_path):
    keyed_by_name = SCALEHOOK_KEYED_BY_ID.replace("lower(p.azure_vmss) => p.azure_vmss", "p.name => p.azure_vmss")
    assert plan_fixture(tmp_path, keyed_by_name) == ""


def test_count_from_a_value_known_only_after_apply_fails(tmp_path):
    counted = SCALEHOOK_KEYED_BY_ID.replace(
        "for_each             = local.scale_sets\n      scope                = each.value",
        'count                = length([for id in values(local.scale_sets) : id if id != ""])\n'
        "      scope                = values(local.scale_sets)[count.index]",
    ).replace("lower(p.azure_vmss) => p.azure_vmss", "p.name => p.azure_vmss")
    assert "count" in counted
    assert "Invalid count argument" in plan_fixture(tmp_path, counted)


def test_a_sensitive_for_each_fails(tmp_path):
    sensitive = SCALEHOOK_KEYED_BY_ID.replace(
        "type = list(object({ name = string, azure_vmss = string }))",
        "type      = list(object({ name = string, azure_vmss = string }))\n      sensitive = true",
    ).replace("lower(p.azure_vmss) => p.azure_vmss", "p.name => p.name")
    assert "Invalid for_each argument" in plan_fixture(tmp_path, sensitive)


DATA_AFTER_A_RESOURCE = """\
    resource "azurerm_resource_group" "ci" {
      name     = "ci"
      location = "westeurope"
    }

    data "azurerm_key_vault" "ci" {
      name                = "kv-ci"
      resource_group_name = azurerm_resource_group.ci.name
    }

    resource "azurerm_role_assignment" "reader" {
      count                = data.azurerm_key_vault.ci.tenant_id == "" ? 0 : 1
      scope                = data.azurerm_key_vault.ci.id
      role_definition_name = "Reader"
      principal_id         = "00000000-0000-0000-0000-000000000000"
    }
"""


def plan_root(tmp_path: pathlib.Path, main: str) -> str:
    write_tree(tmp_path / "infra", {"root/main.tf": main})
    plan_shim.shim(tmp_path / "infra", tmp_path / "shimmed")
    result = plan_shim.plan(tmp_path / "shimmed" / "infra" / "root", terraform_binary())
    return result.stderr if result.returncode else ""


def test_a_data_source_that_refers_to_a_new_resource_is_read_at_apply(tmp_path):
    # Its name is known, but Terraform defers the read until the resource group exists.
    assert "Invalid count argument" in plan_root(tmp_path, DATA_AFTER_A_RESOURCE)


def test_a_data_source_of_known_arguments_is_read_at_plan(tmp_path):
    known = DATA_AFTER_A_RESOURCE.replace("azurerm_resource_group.ci.name", '"ci"')
    assert plan_root(tmp_path, known) == ""
