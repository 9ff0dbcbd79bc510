#!/bin/bash
# scalehook runner boot script for EC2 (cloud-init user data; infra/aws/runners ships it).
#
# 1. Reads the instance id (and region) from the instance metadata service, IMDSv2 only.
# 2. Waits, bounded, for its own just-in-time runner configuration: the SSM SecureString
#    <prefix>/<instance id>, written by scalehook from the Auto Scaling launch lifecycle hook.
#    It never comes (minting failed, hook abandoned): the instance powers off, and the group
#    replaces or drops it.
# 3. Reads it with decryption and deletes it at once: the configuration exists only until this
#    instance has it. The instance role can read and delete that one parameter and nothing else.
# 4. Installs the runner if the image does not have it (pinned version, SHA-256 checked) and
#    runs it as an unprivileged user: `run.sh --jitconfig <config>` (ephemeral: one job).
# 5. Powers off when the runner exits, whatever way it ends (launch template:
#    instance_initiated_shutdown_behavior = "terminate"): one instance, one job.
#
# Needs bash, curl, sha256sum, tar, the AWS CLI (v1 or v2: Amazon Linux 2023 has it; on other
# images install it) and the runner's own dependencies (its bin/installdependencies.sh).
#
# Every setting is an environment variable (the launch template's user data sets them above
# this script); paths are relative to SCALEHOOK_ROOT and the metadata service is
# SCALEHOOK_IMDS_URL, so the tests run this script unchanged under a temporary root against
# stand-ins.
set -euo pipefail

ROOT="${SCALEHOOK_ROOT:-}"
IMDS="${SCALEHOOK_IMDS_URL:-http://169.254.169.254}"
PREFIX="${SCALEHOOK_JIT_PARAMETER_PREFIX:-/scalehook/jit}"
WAIT_SECONDS="${SCALEHOOK_JIT_WAIT_SECONDS:-600}"
POLL_SECONDS="${SCALEHOOK_JIT_POLL_SECONDS:-5}"
RUNNER_USER="${SCALEHOOK_RUNNER_USER:-runner}"
RUNNER_DIR="${ROOT}${SCALEHOOK_RUNNER_DIR:-/opt/actions-runner}"
# Empty: the runner is pre-baked in RUNNER_DIR. Set both to download it at boot.
RUNNER_URL="${SCALEHOOK_RUNNER_URL:-}"
RUNNER_SHA256="${SCALEHOOK_RUNNER_SHA256:-}"
# 1: jobs (the runner user) cannot reach the metadata service, so they cannot use the
# instance role's credentials at all.
BLOCK_IMDS="${SCALEHOOK_BLOCK_IMDS_FOR_RUNNER:-1}"
LOG="${ROOT}${SCALEHOOK_LOG_FILE:-/var/log/scalehook-runner.log}"

log() {
  printf '%s scalehook-runner: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" | tee -a "$LOG" >&2
}

# Whatever happens from here on, the instance ends by powering off: a runner that never
# started must not leave an idle instance behind, and an ephemeral runner's instance is
# done after its one job.
power_off() {
  local status=$?
  trap - EXIT
  log "powering off (exit status ${status})"
  shutdown -h now || poweroff || true
  exit "$status"
}
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
parameter="${PREFIX%/}/${instance_id}"
log "instance ${instance_id}: waiting up to ${WAIT_SECONDS}s for ${parameter}"

# Wait for the configuration. Every failure is retried until the bound: the parameter not
# written yet, and also credentials not ready yet right after boot.
deadline=$((SECONDS + WAIT_SECONDS))
config=""
while :; do
  if config="$(aws ssm get-parameter --name "$parameter" --with-decryption \
      --query Parameter.Value --output text 2>>"$LOG")" && [ -n "$config" ]; then
    break
  fi
  config=""
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "no runner configuration after ${WAIT_SECONDS}s: giving up"
    exit 1
  fi
  sleep "$POLL_SECONDS"
done

# Read once: delete it before anything else runs. A failed delete is not fatal (the runner
# configuration is single-use and the parameter's name is this instance's alone), but it is
# logged.
if aws ssm delete-parameter --name "$parameter" 2>>"$LOG"; then
  log "read and deleted ${parameter}"
else
  log "read ${parameter} but could not delete it"
fi

if [ ! -x "${RUNNER_DIR}/run.sh" ]; then
  if [ -z "$RUNNER_URL" ] || [ -z "$RUNNER_SHA256" ]; then
    log "no runner in ${RUNNER_DIR} and no SCALEHOOK_RUNNER_URL/SCALEHOOK_RUNNER_SHA256 to fetch one"
    exit 1
  fi
  archive="$(mktemp "${TMPDIR:-/tmp}/actions-runner.XXXXXX")"
  curl -fsSL --retry 5 --max-time 300 -o "$archive" "$RUNNER_URL"
  if ! printf '%s  %s\n' "$RUNNER_SHA256" "$archive" | sha256sum -c --status; then
    log "runner package checksum mismatch: refusing it"
    rm -f "$archive"
    exit 1
  fi
  mkdir -p "$RUNNER_DIR"
  tar -xzf "$archive" -C "$RUNNER_DIR"
  rm -f "$archive"
  log "installed the runner package (sha256 ${RUNNER_SHA256})"
fi

if ! id -u "$RUNNER_USER" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$RUNNER_USER"
fi
chown -R "$RUNNER_USER:" "$RUNNER_DIR"

if [ "$BLOCK_IMDS" = 1 ]; then
  # Root keeps the metadata service (this script needed it); the runner and its jobs do not.
  iptables -I OUTPUT -d 169.254.169.254 -m owner --uid-owner "$RUNNER_USER" -j REJECT
fi

log "starting the ephemeral runner as ${RUNNER_USER}"
status=0
(cd "$RUNNER_DIR" && runuser -u "$RUNNER_USER" -- ./run.sh --jitconfig "$config") || status=$?
config=""
log "runner exited with status ${status}"
# The EXIT trap powers off.
