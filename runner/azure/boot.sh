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
# 4. Installs the runner if needed (pinned, SHA-256 checked) and runs it as an unprivileged user
#    (refused if privileged), after blocking that user and containers from IMDS and the
#    wireserver: jobs never get the identity's tokens, so they cannot read another VM's
#    pending configuration (see docs/azure.md, "Runner provisioning").
# 5. Powers off when the ephemeral runner exits.
#
# Needs bash, curl, sha256sum, tar, iptables. Runs after runner/lib.sh (the shared settings
# and steps), which the custom data has above it: see runner/render.sh. Every setting is an
# environment variable, so the tests run the rendered script unchanged against stand-ins.
set -euo pipefail

CONTAINER_URL="${SCALEHOOK_JIT_CONTAINER_URL:?the JIT configuration container URL}"
CLIENT_ID="${SCALEHOOK_IDENTITY_CLIENT_ID:-}"
# The wireserver (VM agent goal state, extension settings, certificates): jobs keep its DNS
# (port 53), not its HTTP ports. Azure IMDS has no IPv6 address.
BLOCKED_TCP=("168.63.129.16 80 32526")

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

config=""
token=""
fetch_config() {
  token="$(storage_token)" && [ -n "$token" ] \
    && config="$(curl -fsS --max-time 10 -H "Authorization: Bearer ${token}" \
      -H 'x-ms-version: 2021-08-06' "$blob" 2>>"$LOG")" && [ -n "$config" ]
}
wait_for fetch_config

if curl -fsS --max-time 10 -X DELETE -H "Authorization: Bearer ${token}" \
  -H 'x-ms-version: 2021-08-06' "$blob" >/dev/null 2>>"$LOG"; then
  log "read and deleted the configuration of ${name}"
else
  log "read the configuration of ${name} but could not delete it"
fi
token=""

install_runner
run_runner "$config"
config=""
