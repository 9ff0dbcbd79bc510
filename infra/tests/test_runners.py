"""The runner modules (infra/aws/runners): least privilege of the instance role, the launch
lifecycle hook, the group settings scalehook relies on, the user data, and the examples'
pools (architecture, GPU, routing order)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import EXAMPLES, INFRA, ROOT, Module, terraform_binary

RUNNERS = INFRA / "aws" / "runners"
ACCOUNT = "111122223333"
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def runners() -> Module:
    return Module(RUNNERS)


def statements(doc: dict) -> dict:
    out = list(doc.get("statement", []))
    for dyn in doc.get("dynamic", []):
        out.extend({**c, "dynamic": True} for c in dyn["statement"]["content"])
    return {s["sid"]: s for s in out}


def resolve(text: str, module: Module) -> str:
    """Interpolates the module's locals and variable defaults the policy uses, with a fixed
    partition, region and account; IAM policy variables (`$${...}`) become `${...}`."""
    values = {
        "local.partition": "aws",
        "local.region": REGION,
        "local.account_id": ACCOUNT,
        "var.jit_parameter_prefix": module.variables["jit_parameter_prefix"]["default"],
        "local.name": "github-runners-linux-x64",
    }
    for name in ("jit_parameters", "jit_path", "instance_tag_key"):
        values[f"local.{name}"] = None
    text = text.replace("$${", "\0{")

    def sub(m):
        key = m.group(1)
        if key in values and values[key] is not None:
            return values[key]
        if key.startswith("local."):
            return resolve(module.locals[key[6:]], module)
        raise AssertionError(f"cannot resolve {key}")

    while "${" in text:
        text = re.sub(r"\$\{([a-z_.]+)\}", sub, text)
    return text.replace("\0{", "${")


class Policy:
    """IAM evaluation for the statement shapes these policies use: Allow/Deny, actions,
    ARN wildcards, Null / StringEquals / StringNotEqualsIfExists / StringLike on request
    keys, policy variables from the request context (a statement whose variable does not
    resolve is left out). Explicit deny wins; no allow is a deny."""

    def __init__(self, stmts: list[dict]):
        self.stmts = stmts

    @staticmethod
    def _sub(value: str, ctx: dict) -> str:
        # A variable the request context lacks raises KeyError: IAM then leaves the
        # statement out ("If AWS cannot resolve a variable this might cause the entire
        # statement to be invalid"), which is what _matches does.
        return re.sub(r"\$\{([^}]+)\}", lambda m: ctx[m.group(1)], value)

    def _matches(self, s: dict, action: str, resource: str, ctx: dict) -> bool:
        try:
            return self._matches_resolved(s, action, resource, ctx)
        except KeyError:
            return False

    def _matches_resolved(self, s: dict, action: str, resource: str, ctx: dict) -> bool:
        if not any(fnmatch.fnmatchcase(action, a) for a in s["actions"]):
            return False
        if not any(fnmatch.fnmatchcase(resource, self._sub(r, ctx)) for r in s["resources"]):
            return False
        for c in s.get("condition", []):
            key, values = c["variable"], [self._sub(v, ctx) for v in c["values"]]
            have = ctx.get(key)
            if c["test"] == "Null":
                ok = (have is None) == (values == ["true"])
            elif c["test"] == "StringEquals":
                ok = have is not None and have in values
            elif c["test"] == "StringNotEqualsIfExists":
                ok = have is None or have not in values
            elif c["test"] == "StringLike":
                ok = have is not None and any(fnmatch.fnmatchcase(have, v) for v in values)
            else:
                raise AssertionError(f"unmodelled condition {c['test']}")
            if not ok:
                return False
        return True

    def allows(self, action: str, resource: str, ctx: dict) -> bool:
        hits = [s for s in self.stmts if self._matches(s, action, resource, ctx)]
        if any(s.get("effect") == "Deny" for s in hits):
            return False
        return any(s.get("effect", "Allow") == "Allow" for s in hits)


def instance_policy(runners: Module) -> list[dict]:
    doc = runners.data["aws_iam_policy_document"]["instance"]
    out = []
    for s in statements(doc).values():
        if s.get("dynamic"):
            continue  # the optional KMS statement: kms:Decrypt only, checked below
        s = json.loads(resolve(json.dumps(s), runners))
        for c in s.get("condition", []):
            c["variable"] = resolve(c["variable"], runners)
        out.append(s)
    return out


def test_instance_role_has_exactly_its_own_parameter(runners):
    stmts = statements(runners.data["aws_iam_policy_document"]["instance"])
    assert set(stmts) == {
        "ReadAndDeleteOwnJitParameter",
        "DenyOtherInstancesJitParameters",
        "DenyUntaggedJitParameters",
        "DecryptOwnJitParameter",
    }
    allow = stmts["ReadAndDeleteOwnJitParameter"]
    assert sorted(allow["actions"]) == ["ssm:DeleteParameter", "ssm:GetParameter"]
    assert allow["resources"] == ["${local.jit_parameters}"]
    # The only wildcard is the parameter name under the JIT path, and the condition binds it
    # to the caller: its ec2:SourceInstanceARN (a condition key, what instance-profile
    # credentials carry) must equal the parameter's tag, read through the global key
    # aws:ResourceTag as the policy variable (global keys are documented as variables).
    assert resolve(runners.locals["jit_parameters"], runners) == (
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/scalehook/jit/*"
    )
    (cond,) = allow["condition"]
    assert cond["test"] == "StringEquals"
    assert cond["variable"] == "ec2:SourceInstanceARN"
    assert [resolve(v, runners) for v in cond["values"]] == ["${aws:ResourceTag/scalehook-instance-arn}"]
    # No service-specific key is used as a policy variable anywhere in the module.
    text = (RUNNERS / "iam.tf").read_text()
    assert "$${ec2:" not in text and "$${ssm:" not in text
    # The tag is the one the AWS crate writes.
    provision = (ROOT / "crates/scalehook-aws/src/provision.rs").read_text()
    assert 'INSTANCE_TAG_KEY: &str = "scalehook-instance-arn"' in provision
    assert runners.locals["instance_tag_key"] == "scalehook-instance-arn"
    kms = stmts["DecryptOwnJitParameter"]
    assert kms["actions"] == ["kms:Decrypt"] and kms["resources"] == ["${statement.value}"]
    # No statement anywhere in the module grants ssm:* or any action on "*".
    assert '"ssm:*"' not in text
    assert 'resources = ["*"]' not in text


def test_instance_cannot_read_another_instances_parameter(runners):
    policy = Policy(instance_policy(runners))
    me = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0aaaaaaaaaaaaaaaa"
    other = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0bbbbbbbbbbbbbbbb"
    param = lambda i: f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/scalehook/jit/{i}"  # noqa: E731
    tag = "aws:ResourceTag/scalehook-instance-arn"

    def ctx(resource_tag):
        c = {"ec2:SourceInstanceARN": me}
        if resource_tag is not None:
            c[tag] = resource_tag
        return c

    own = param("i-0aaaaaaaaaaaaaaaa")
    theirs = param("i-0bbbbbbbbbbbbbbbb")
    assert policy.allows("ssm:GetParameter", own, ctx(me))
    assert policy.allows("ssm:DeleteParameter", own, ctx(me))
    # Another instance's parameter, whatever its name: refused.
    assert not policy.allows("ssm:GetParameter", theirs, ctx(other))
    assert not policy.allows("ssm:DeleteParameter", theirs, ctx(other))
    # A parameter named after this instance but tagged for another (or untagged): refused.
    assert not policy.allows("ssm:GetParameter", own, ctx(other))
    assert not policy.allows("ssm:GetParameter", own, ctx(None))
    # Credentials that are not an instance's (no ec2:SourceInstanceARN): refused.
    assert not policy.allows("ssm:GetParameter", own, {tag: me})
    # No listing, no history, no writes, nothing outside the path.
    path = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/scalehook/jit"
    assert not policy.allows("ssm:GetParametersByPath", path, ctx(None))
    assert not policy.allows("ssm:PutParameter", own, ctx(me))
    assert not policy.allows("ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/scalehook/webhook-secret", ctx(None))
    # The Denies hold even if someone attaches a broad read policy to the role later,
    # untagged parameters (where the Deny's variable cannot resolve) included.
    broad = Policy(policy.stmts + [{"effect": "Allow", "actions": ["ssm:Get*"], "resources": ["*"]}])
    assert broad.allows("ssm:GetParameter", own, ctx(me))
    assert not broad.allows("ssm:GetParameter", theirs, ctx(other))
    assert not broad.allows("ssm:GetParameterHistory", theirs, ctx(other))
    assert not broad.allows("ssm:GetParametersByPath", path, ctx(None))
    assert not broad.allows("ssm:GetParameter", theirs, ctx(None))


def test_runner_module_adds_nothing_to_scalehooks_role(runners):
    """scalehook's JIT and launch-hook permissions are one statement set in its own module's
    policy (infra/aws/iam.tf), not one inline policy per pool: 10 pools of those exhausted
    the role's 10,240-character inline budget."""
    assert list(runners.resources["aws_iam_role_policy"]) == ["instance"]
    assert runners.resources["aws_iam_role_policy"]["instance"]["role"] == "${aws_iam_role.instance.id}"
    assert "scalehook_role_arn" not in runners.variables
    assert "aws_iam_role_policy_attachment" not in runners.resources


def test_group_has_the_launch_hook_and_scalehooks_settings(runners):
    group = runners.resource("aws_autoscaling_group", "runners")
    (hook,) = group["initial_lifecycle_hook"]
    assert hook["lifecycle_transition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    assert hook["default_result"] == "ABANDON"
    assert hook["heartbeat_timeout"] == "${var.lifecycle_heartbeat_seconds}"
    v = runners.variables["lifecycle_heartbeat_seconds"]
    assert 30 <= v["default"] <= 7200
    assert group["suspended_processes"] == ["AZRebalance"]
    assert group["lifecycle"][0]["ignore_changes"] == ["desired_capacity"]
    # The scalehook module's below-desired alarm reads these, at one-minute periods.
    assert set(group["enabled_metrics"]) >= {"GroupDesiredCapacity", "GroupInServiceInstances"}
    assert group["metrics_granularity"] == "1Minute"
    assert "protect_from_scale_in" not in group, "no group-level scale-in protection"
    assert "aws_autoscaling_policy" not in runners.resources


def test_launch_template_runs_the_boot_script_with_imdsv2(runners):
    lt = runners.resource("aws_launch_template", "runner")
    assert lt["user_data"] == "${base64encode(local.user_data)}"
    (md,) = lt["metadata_options"]
    assert md["http_tokens"] == "required" and md["http_put_response_hop_limit"] == 1
    assert lt["instance_initiated_shutdown_behavior"] == "terminate"
    assert lt["iam_instance_profile"][0]["arn"] == "${aws_iam_instance_profile.instance.arn}"
    assert lt["block_device_mappings"][0]["ebs"][0]["encrypted"] is True


def test_launch_events_go_to_scalehook(runners):
    rule = runners.resource("aws_cloudwatch_event_rule", "launch")
    assert "EC2 Instance-launch Lifecycle Action" in rule["event_pattern"]
    assert "aws.autoscaling" in rule["event_pattern"]
    target = runners.resource("aws_cloudwatch_event_target", "launch")
    # The launch alias (retried invocations), not the unqualified function (0 retries).
    assert target["arn"] == "${var.scalehook_function_arn}:${var.scalehook_launch_alias}"
    perm = runners.resource("aws_lambda_permission", "launch")
    # function_name unqualified with qualifier: a qualified ARN in function_name reads back
    # without it and would replace the permission on every plan.
    assert perm["function_name"] == "${var.scalehook_function_arn}"
    assert perm["qualifier"] == "${var.scalehook_launch_alias}"
    assert perm["principal"] == "events.amazonaws.com"
    assert perm["source_arn"] == "${aws_cloudwatch_event_rule.launch.arn}"


def test_user_data_renders_to_settings_then_the_boot_script():
    """The module's own userdata.tf and variables.tf through `terraform console` (no
    providers), in a copy of the repository layout it reads the script from."""
    with tempfile.TemporaryDirectory() as work:
        mod = os.path.join(work, "infra/aws/runners")
        os.makedirs(mod)
        for f in ("variables.tf", "userdata.tf"):
            shutil.copy(RUNNERS / f, mod)
        os.makedirs(os.path.join(work, "runner/aws"))
        shutil.copy(ROOT / "runner/lib.sh", os.path.join(work, "runner"))
        shutil.copy(ROOT / "runner/aws/boot.sh", os.path.join(work, "runner/aws"))
        tfvars = {
            "pool": "linux-x64",
            "ami_id": "ami-1",
            "instance_type": "m7i.large",
            "subnet_ids": ["subnet-1"],
            "max_size": 2,
            "scalehook_function_arn": "arn:aws:lambda:eu-west-1:111122223333:function:scalehook",
            "scalehook_launch_alias": "launch",
            "runner_package": {"url": "https://example.com/r.tar.gz", "sha256": "a" * 64},
            "runner_dir": "/opt/it's runner",
        }
        with open(os.path.join(mod, "t.tfvars.json"), "w") as fh:
            json.dump(tfvars, fh)
        out = subprocess.run(
            [terraform_binary(), "console", "-no-color", "-var-file=t.tfvars.json"],
            input="jsonencode(local.user_data)\n",
            capture_output=True,
            text=True,
            cwd=mod,
            env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null", "TF_IN_AUTOMATION": "1"},
            timeout=120,
        )
    assert out.returncode == 0 and "Error" not in out.stdout + out.stderr, out.stdout + out.stderr
    last = [line for line in out.stdout.splitlines() if line.startswith('"')][-1]
    user_data = json.loads(json.loads(last))
    assert user_data.startswith("#!/bin/bash\n")
    assert "export SCALEHOOK_RUNNER_SHA256='" + "a" * 64 + "'\n" in user_data
    assert "export SCALEHOOK_RUNNER_DIR='/opt/it'\\''s runner'\n" in user_data
    # One self-contained script: the settings, then exactly what runner/render.sh prints (the
    # script the runner tests run).
    rendered = subprocess.run(
        ["bash", str(ROOT / "runner/render.sh"), "aws"], capture_output=True, text=True, check=True
    ).stdout
    assert user_data.endswith("\n" + rendered)
    assert user_data.count("\nset -euo pipefail\n") == 2, "lib.sh and boot.sh, nothing else"
    # The rendered settings parse in bash to exactly the values given.
    check = subprocess.run(
        ["bash", "-c", user_data.split("#!/bin/bash\n", 2)[1] + 'printf "%s" "$SCALEHOOK_RUNNER_DIR"'],
        capture_output=True,
        text=True,
    )
    assert check.stdout == "/opt/it's runner"
    assert len(user_data.encode()) < 16384, "EC2 user data limit"


# ---- The examples ---------------------------------------------------------------------------

ARM_FAMILIES = re.compile(r"^[a-z]+\d+g[a-z]*\.|^a1\.")  # m7g, c7gn, r8g, t4g, a1: Graviton
GPU_FAMILIES = re.compile(r"^(g\d|p\d)")


def example_pools():
    ex = Module(EXAMPLES["aws"])
    return ex, ex.modules["scalehook"]["pools"]


def route(pools, labels):
    """The core's routing (Config::route): the first pool, in order, whose labels contain all
    of the job's labels, compared case-insensitively."""
    want = {l.lower() for l in labels}
    for p in pools:
        if want <= {l.lower() for l in p["labels"]}:
            return p["name"]
    return None


def test_example_runner_types_match_their_pools():
    ex, pools = example_pools()
    runner_calls = {n: c for n, c in ex.modules.items() if c["source"] == "../../aws/runners"}
    by_pool = {c["pool"]: c for c in runner_calls.values()}
    assert set(by_pool) == {p["name"] for p in pools}
    for p in pools:
        call = by_pool[p["name"]]
        assert p["aws_asg"] == f"github-runners-{p['name']}", "the group name the module creates"
        labels = {l.lower() for l in p["labels"]}
        if "x64" in labels:
            assert not ARM_FAMILIES.match(call["instance_type"]), f"{p['name']}: {call['instance_type']} is arm64"
        if "gpu" in labels:
            assert GPU_FAMILIES.match(call["instance_type"]), f"{p['name']}: {call['instance_type']} has no GPU"
            assert "gpu" in call["ami_id"] or "nvidia" in ex.text.lower()
        assert "protect_from_scale_in" not in call


def test_example_routing_keeps_general_jobs_off_the_gpu_pool():
    _, pools = example_pools()
    assert route(pools, ["self-hosted", "linux"]) == "linux-x64"
    assert route(pools, ["self-hosted", "Linux", "X64"]) == "linux-x64"
    assert route(pools, ["self-hosted", "linux", "gpu"]) == "linux-gpu"
    assert route(pools, ["self-hosted", "linux", "x64", "gpu"]) == "linux-gpu"
    assert route(pools, ["ubuntu-latest"]) is None
    # And the core routes the same way: first match in config order.
    core = (ROOT / "crates/scalehook-core/src/config.rs").read_text()
    assert re.search(r"fn route\b", core)
    # On GitHub's side a job goes to any idle runner of its runner group having all its
    # labels: no pool's labels may contain another's in one group (the core refuses it:
    # config::label_overlaps). The modules write runner_group_id, default 1.
    for a in pools:
        for b in pools:
            inside = {l.lower() for l in a["labels"]} <= {l.lower() for l in b["labels"]}
            same = a.get("runner_group_id", 1) == b.get("runner_group_id", 1)
            assert a is b or not (inside and same), f"{b['name']}'s runners would take {a['name']}'s jobs"


def test_azure_runner_scale_set_is_uniform_with_custom_data_and_identity():
    m = Module(INFRA / "azure" / "runners")
    vmss = m.resource("azurerm_linux_virtual_machine_scale_set", "runners")
    assert vmss["upgrade_mode"] == "Manual" and vmss["overprovision"] is False
    assert vmss["custom_data"] == "${base64encode(local.custom_data)}"
    assert vmss["identity"][0]["type"] == "UserAssigned"
    assert vmss["lifecycle"][0]["ignore_changes"] == ["instances"]
    # One self-contained script, in runner/render.sh's order: the shared lib, then the boot script.
    custom = m.locals["custom_data"]
    lib, boot = (f'file("${{path.module}}/../../../runner/{f}")' for f in ("lib.sh", "azure/boot.sh"))
    assert custom.index(lib) < custom.index(boot), custom
    # Blob access for the VMs and scalehook: on the pool's container only.
    for name in ("runners_read_delete", "scalehook_write"):
        ra = m.resource("azurerm_role_assignment", name)
        assert ra["scope"] == "${azurerm_storage_container.jit.id}"
    assert m.resource("azurerm_role_assignment", "scalehook_write")["role_definition_name"] == "Storage Blob Data Contributor"
    # The VMs read and delete, never write: root on one VM cannot plant the configuration of
    # the pool's next VMs. A custom role with exactly the two data actions.
    vms = m.resource("azurerm_role_assignment", "runners_read_delete")
    assert "role_definition_name" not in vms
    assert vms["role_definition_id"] == "${azurerm_role_definition.jit_reader.role_definition_resource_id}"
    assert vms["principal_id"] == "${azurerm_user_assigned_identity.runners.principal_id}"
    role = m.resource("azurerm_role_definition", "jit_reader")
    (perms,) = role["permissions"]
    assert perms["actions"] == []
    assert perms["data_actions"] == "${local.jit_reader_data_actions}"
    assert m.locals["jit_reader_data_actions"] == [
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
    ]
    assert not any("write" in a or "*" in a for a in m.locals["jit_reader_data_actions"])
    # And the boot script uses nothing else: a GET and a DELETE of its blob.
    boot = (ROOT / "runner/azure/boot.sh").read_text()
    assert re.findall(r"curl [^\n]*-X (\w+)", boot) == ["DELETE"]


def test_example_wires_the_github_app_and_jit_prefix_on_aws():
    ex, pools = example_pools()
    call = ex.modules["scalehook"]
    assert set(call["github"]) >= {"app_id", "installation_id", "organization"}
    assert call["github_app_key_ssm_parameter_name"].startswith("/")
    # scalehook writes where the runner modules' boot scripts read.
    runners = [c for c in ex.modules.values() if c["source"] == "../../aws/runners"]
    prefixes = {c.get("jit_parameter_prefix", "/scalehook/jit") for c in runners}
    assert prefixes == {call["jit_parameter_prefix"]}
    assert all(p.get("ephemeral") for p in pools), "JIT runners are ephemeral"


def test_azure_example_runs_its_pool_on_the_runner_module():
    ex = Module(EXAMPLES["azure"])
    # No scale set of its own any more: the runner module's, with the boot script.
    assert "azurerm_linux_virtual_machine_scale_set" not in ex.resources
    runners = {n: c for n, c in ex.modules.items() if c["source"] == "../../azure/runners"}
    call = ex.modules["scalehook"]
    by_pool = {c["pool"]: n for n, c in runners.items()}
    for p in call["pools"]:
        assert p["azure_vmss"] == f"${{module.{by_pool[p['name']]}.scale_set_id}}"
        assert p.get("ephemeral") is True
    for c in runners.values():
        # scalehook may write the pool's container; the account is the JIT one.
        assert c["scalehook_principal_id"] == "${module.scalehook.identity_principal_id}"
        assert c["storage_account_id"] == "${module.jit_storage.storage_account_id}"
        assert c["storage_blob_endpoint"] == "${module.jit_storage.storage_blob_endpoint}"
    assert call["jit_blob_endpoint"] == "${module.jit_storage.storage_blob_endpoint}"
    assert call["github_app_key_key_vault_secret"]["secret_name"] == (
        "${azurerm_key_vault_secret.github_app_key.name}"
    )
    # The JIT account comes from the jit-storage module, with a rule for every pool.
    jit = ex.modules["jit_storage"]
    assert jit["source"] == "../../azure/jit-storage"
    assert jit["pools"] == [c["pool"] for c in runners.values()]
    assert "azurerm_storage_management_policy" not in ex.resources
    # The example's own account and policy moved into the module, state included.
    moved = re.findall(r"moved \{\s*from = ([\w.]+)\s*to\s*= ([\w.]+)", ex.text)
    assert ("azurerm_storage_account.jit", "module.jit_storage.azurerm_storage_account.jit") in moved
    assert ("azurerm_storage_management_policy.jit", "module.jit_storage.azurerm_storage_management_policy.jit") in moved
    # The example applies as shipped: no package needed (a local build is published after).
    assert ex.variables["package_url"]["default"] is None


def test_jit_storage_expires_leftovers_under_each_pool():
    m = Module(INFRA / "azure" / "jit-storage")
    sa = m.resource("azurerm_storage_account", "jit")
    assert sa["shared_access_key_enabled"] is False
    assert sa["allow_nested_items_to_be_public"] is False
    policy = m.resource("azurerm_storage_management_policy", "jit")
    (rule,) = policy["dynamic"]
    assert rule["rule"]["for_each"] == "${var.pools}"
    (content,) = rule["rule"]["content"]
    assert content["filters"][0]["prefix_match"] == ["jit-${rule.value}/"]
    assert content["actions"][0]["base_blob"][0]["delete_after_days_since_modification_greater_than"] == 1
    # The container names match the runner module's.
    assert Module(INFRA / "azure" / "runners").locals["container"] == "jit-${var.pool}"


def test_group_warm_pool_is_never_reused_and_spot_is_price_capacity_optimized(runners):
    group = runners.resource("aws_autoscaling_group", "runners")
    (warm,) = [d["warm_pool"] for d in group["dynamic"] if "warm_pool" in d]
    content = warm["content"][0]
    assert content["instance_reuse_policy"][0]["reuse_on_scale_in"] is False
    # Exactly `size` warm instances whatever the desired capacity.
    assert content["min_size"] == content["max_group_prepared_capacity"] == "${warm_pool.value.size}"
    (mixed,) = [d["mixed_instances_policy"] for d in group["dynamic"] if "mixed_instances_policy" in d]
    dist = mixed["content"][0]["instances_distribution"][0]
    assert dist["spot_allocation_strategy"] == "price-capacity-optimized"
    assert dist["on_demand_base_capacity"] == "${mixed_instances_policy.value.on_demand_base}"
    # One of launch_template and mixed_instances_policy, never both.
    (lt,) = [d["launch_template"] for d in group["dynamic"] if "launch_template" in d]
    assert lt["for_each"] == "${var.spot == null ? [1] : []}"
    assert mixed["for_each"] == "${var.spot == null ? [] : [var.spot]}"


WARM_OR_SPOT = """\
module "runners" {{
  source                 = "../../aws/runners"
  pool                   = "linux-x64"
  ami_id                 = "ami-0123456789abcdef0"
  instance_type          = "m7i.large"
  subnet_ids             = ["subnet-0123456789abcdef0"]
  max_size               = 10
  scalehook_function_arn = "arn:aws:lambda:eu-west-1:111122223333:function:scalehook"
  scalehook_launch_alias = "launch"
  {extra}
}}
"""


@pytest.mark.parametrize(
    "extra, error",
    [
        ('warm_pool = { size = 3 }', None),
        ('warm_pool = { size = 2, pool_state = "Hibernated" }', None),
        ('spot = { instance_types = ["m6i.large", "m5.large"], on_demand_base = 1 }', None),
        (
            'warm_pool = { size = 2 }\n  spot = { instance_types = ["m6i.large"] }',
            "warm_pool and spot: choose one",
        ),
        ('warm_pool = { size = 11 }', "warm_pool: size between 1 and max_size"),
        ('warm_pool = { size = 2, pool_state = "Running" }', "pool_state Stopped or Hibernated"),
    ],
)
def test_runner_module_plans_warm_or_spot_never_both(tmp_path, extra, error):
    import plan_shim

    plan_shim.shim(INFRA, tmp_path)
    root = tmp_path / INFRA.name / "examples" / "warm-or-spot"
    root.mkdir(parents=True)
    (root / "main.tf").write_text(WARM_OR_SPOT.format(extra=extra))
    result = plan_shim.plan(root, terraform_binary())
    if error is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert error in " ".join(result.stderr.split()), result.stderr


def test_azure_spot_vms_are_deleted_on_eviction():
    vmss = Module(INFRA / "azure" / "runners").resource("azurerm_linux_virtual_machine_scale_set", "runners")
    assert vmss["priority"] == '${var.spot ? "Spot" : "Regular"}'
    assert vmss["eviction_policy"] == '${var.spot ? "Delete" : null}'
    assert vmss["max_bid_price"] == "${var.spot ? -1 : null}"
