#!/bin/bash
# scalehook runner boot script for EC2 (cloud-init user data; infra/aws/runners ships it).
#
# 1. Reads the instance id (and region) from the instance metadata service, IMDSv2 only.
# 2. In a warm pool (infra/aws/runners `warm_pool`): an instance launched into the group's
#    warm pool (target lifecycle state Warmed:*) installs the runner, copies this script to
#    cloud-init's per-boot scripts (user data runs on the first boot only, and a Stopped pool
#    starts the instance again) and waits until the group takes it into service (a Hibernated
#    pool resumes this very process). Nothing secret reaches a warm instance: scalehook
#    mints its runner only when the group takes it.
# 3. Waits, bounded, for its own just-in-time runner configuration: the SSM SecureString
#    <prefix>/<instance id>, written by scalehook from the Auto Scaling launch lifecycle hook.
#    It never comes (minting failed, hook abandoned): the instance powers off, and the group
#    replaces or drops it.
# 4. Reads it with decryption and deletes it at once: the configuration exists only until this
#    instance has it. The instance role can read and delete that one parameter and nothing else.
# 5. Installs the runner if the image does not have it (pinned version, SHA-256 checked) and
#    runs it as an unprivileged user (refused if privileged), the metadata service blocked
#    for that user and containers: `run.sh` with the configuration in
#    ACTIONS_RUNNER_INPUT_JITCONFIG (ephemeral: one job).
# 6. Powers off when the runner exits, whatever way it ends (launch template:
#    instance_initiated_shutdown_behavior = "terminate"): one instance, one job.
#
# Needs bash, curl, sha256sum, tar, iptables and ip6tables, the AWS CLI (v1 or v2: Amazon Linux 2023 has it; on other
# images install it) and the runner's own dependencies (its bin/installdependencies.sh).
#
# Runs after runner/lib.sh (the shared settings and steps), which the user data has above it:
# see runner/render.sh. Every setting is an environment variable (the launch template's user
# data sets them first); the metadata service is SCALEHOOK_IMDS_URL, so the tests run the
# rendered script unchanged under a temporary root against stand-ins.
set -euo pipefail

PREFIX="${SCALEHOOK_JIT_PARAMETER_PREFIX:-/scalehook/jit}"
# IMDS's IPv6 address (Nitro instances, when the launch template enables it): blocked too.
METADATA_V6="fd00:ec2::254"

trap power_off EXIT

imds_token() {
  curl -fsS --max-time 2 --retry 5 --retry-delay 1 --retry-connrefused -X PUT \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "${IMDS}/latest/api/token"
}

imds_get() {
  curl -fsS --max-time 2 --retry 5 --retry-delay 1 --retry-connrefused \
    -H "X-aws-ec2-metadata-token: $1" "${IMDS}/latest/meta-data/$2"
}

mkdir -p "$(dirname "$LOG")"
token="$(imds_token)" || { log "no IMDSv2 token from ${IMDS}"; exit 1; }
instance_id="$(imds_get "$token" instance-id)" || { log "no instance id from IMDS"; exit 1; }
if [[ ! "$instance_id" =~ ^i-[0-9a-f]{8,17}$ ]]; then
  log "unexpected instance id from IMDS"
  exit 1
fi
if [ -z "${AWS_REGION:-}" ]; then
  AWS_REGION="$(imds_get "$token" placement/region)" || { log "no region from IMDS"; exit 1; }
fi
export AWS_REGION AWS_DEFAULT_REGION="$AWS_REGION"
# The group's plan for this instance (Auto Scaling user guide, "Retrieve the target lifecycle
# state through instance metadata"); absent outside an Auto Scaling group. A fresh token each
# time: a warm instance may wait for days.
lifecycle_state() {
  local t
  t="$(imds_token)" && imds_get "$t" autoscaling/target-lifecycle-state
}

state="$(lifecycle_state 2>/dev/null)" || state=""
if [[ "$state" == Warmed:* ]]; then
  install_runner
  per_boot="${ROOT}/var/lib/cloud/scripts/per-boot/scalehook-runner.sh"
  mkdir -p "$(dirname "$per_boot")"
  cp "${BASH_SOURCE[0]}" "$per_boot"
  chmod 0700 "$per_boot"
  log "instance ${instance_id}: warming (${state}); runner installed, waiting to be taken into service"
  until [ "$(lifecycle_state 2>/dev/null || true)" = InService ]; do
    sleep "$POLL_SECONDS"
  done
  log "instance ${instance_id}: taken into service from the warm pool"
fi

parameter="${PREFIX%/}/${instance_id}"
log "instance ${instance_id}: waiting up to ${WAIT_SECONDS}s for ${parameter}"

config=""
fetch_config() {
  config="$(aws ssm get-parameter --name "$parameter" --with-decryption \
    --query Parameter.Value --output text 2>>"$LOG")" && [ -n "$config" ]
}
wait_for fetch_config

# Read once: delete it before anything else runs. A failed delete is not fatal (the runner
# configuration is single-use and the parameter's name is this instance's alone), but it is
# logged.
if aws ssm delete-parameter --name "$parameter" 2>>"$LOG"; then
  log "read and deleted ${parameter}"
else
  log "read ${parameter} but could not delete it"
fi

install_runner
run_runner "$config"
config=""
# The EXIT trap powers off.
