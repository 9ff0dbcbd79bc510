#!/bin/bash
# scalehook runner boot script for Azure VM Scale Set instances (custom data; infra/azure/runners
# ships it). Same contract as runner/aws/boot.sh:
#
# 1. Reads the VM's computer name from the instance metadata service.
# 2. Waits, bounded, for its own JIT runner configuration: the blob
#    <container URL>/<computer name>, written by scalehook when its describe of the scale set
#    finds the new VM. It never comes: the VM powers off (scalehook's reconcile then sees a
#    stopped VM with no runner and removes it).
# 3. Reads the blob with the scale set's managed identity (a token from IMDS) and deletes it.
# 4. Installs the runner if needed (pinned, SHA-256 checked) and runs it as an unprivileged user,
#    after blocking that user from IMDS: jobs never get the identity's tokens, so they cannot read
#    another VM's pending configuration (see docs/azure.md, "Runner provisioning").
# 5. Powers off when the ephemeral runner exits.
#
# Needs bash, curl, sha256sum, tar, iptables. Every setting is an environment variable; paths
# are relative to SCALEHOOK_ROOT, so the tests run it unchanged against stand-ins.
set -euo pipefail

ROOT="${SCALEHOOK_ROOT:-}"
IMDS="${SCALEHOOK_IMDS_URL:-http://169.254.169.254}"
CONTAINER_URL="${SCALEHOOK_JIT_CONTAINER_URL:?the JIT configuration container URL}"
CLIENT_ID="${SCALEHOOK_IDENTITY_CLIENT_ID:-}"
WAIT_SECONDS="${SCALEHOOK_JIT_WAIT_SECONDS:-600}"
POLL_SECONDS="${SCALEHOOK_JIT_POLL_SECONDS:-5}"
RUNNER_USER="${SCALEHOOK_RUNNER_USER:-runner}"
RUNNER_DIR="${ROOT}${SCALEHOOK_RUNNER_DIR:-/opt/actions-runner}"
RUNNER_URL="${SCALEHOOK_RUNNER_URL:-}"
RUNNER_SHA256="${SCALEHOOK_RUNNER_SHA256:-}"
BLOCK_IMDS="${SCALEHOOK_BLOCK_IMDS_FOR_RUNNER:-1}"
LOG="${ROOT}${SCALEHOOK_LOG_FILE:-/var/log/scalehook-runner.log}"

log() {
  printf '%s scalehook-runner: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" | tee -a "$LOG" >&2
}

power_off() {
  local status=$?
  trap - EXIT
  log "powering off (exit status ${status})"
  shutdown -h now || poweroff || true
  exit "$status"
}
trap power_off EXIT

imds() {
  curl -fsS --max-time 2 --retry 5 --retry-delay 1 --retry-connrefused -H 'Metadata: true' "${IMDS}$1"
}

storage_token() {
  local query="api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F"
  [ -n "$CLIENT_ID" ] && query="${query}&client_id=${CLIENT_ID}"
  imds "/metadata/identity/oauth2/token?${query}" | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p'
}

mkdir -p "$(dirname "$LOG")"
name="$(imds '/metadata/instance/compute/osProfile/computerName?api-version=2021-02-01&format=text')" \
  || { log "no computer name from IMDS"; exit 1; }
if [[ ! "$name" =~ ^[A-Za-z0-9-]{1,64}$ ]]; then
  log "unexpected computer name from IMDS"
  exit 1
fi
blob="${CONTAINER_URL%/}/${name}"
log "VM ${name}: waiting up to ${WAIT_SECONDS}s for its runner configuration"

deadline=$((SECONDS + WAIT_SECONDS))
config=""
while :; do
  if token="$(storage_token)" && [ -n "$token" ] \
    && config="$(curl -fsS --max-time 10 -H "Authorization: Bearer ${token}" \
      -H 'x-ms-version: 2021-08-06' "$blob" 2>>"$LOG")" && [ -n "$config" ]; then
    break
  fi
  config=""
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "no runner configuration after ${WAIT_SECONDS}s: giving up"
    exit 1
  fi
  sleep "$POLL_SECONDS"
done

if curl -fsS --max-time 10 -X DELETE -H "Authorization: Bearer ${token}" \
  -H 'x-ms-version: 2021-08-06' "$blob" >/dev/null 2>>"$LOG"; then
  log "read and deleted the configuration of ${name}"
else
  log "read the configuration of ${name} but could not delete it"
fi
token=""

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
  iptables -I OUTPUT -d 169.254.169.254 -m owner --uid-owner "$RUNNER_USER" -j REJECT
fi

log "starting the ephemeral runner as ${RUNNER_USER}"
status=0
(cd "$RUNNER_DIR" && runuser -u "$RUNNER_USER" -- ./run.sh --jitconfig "$config") || status=$?
config=""
log "runner exited with status ${status}"
