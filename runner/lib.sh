#!/bin/bash
# scalehook runner boot: what the AWS and Azure boot scripts share. It is not delivered on its
# own: infra/aws/runners and infra/azure/runners render each instance's user data / custom data
# as one self-contained script, the settings, then this file, then runner/<cloud>/boot.sh
# (runner/render.sh <cloud> prints the same lib + boot part; the runner tests run exactly that).
#
# Settings shared by both (environment variables; paths are relative to SCALEHOOK_ROOT, so the
# tests run the rendered script unchanged under a temporary root against stand-ins).
set -euo pipefail

ROOT="${SCALEHOOK_ROOT:-}"
IMDS="${SCALEHOOK_IMDS_URL:-http://169.254.169.254}"
WAIT_SECONDS="${SCALEHOOK_JIT_WAIT_SECONDS:-600}"
POLL_SECONDS="${SCALEHOOK_JIT_POLL_SECONDS:-5}"
RUNNER_USER="${SCALEHOOK_RUNNER_USER:-runner}"
RUNNER_DIR="${ROOT}${SCALEHOOK_RUNNER_DIR:-/opt/actions-runner}"
# Empty: the runner is pre-baked in RUNNER_DIR. Set both to download it at boot.
RUNNER_URL="${SCALEHOOK_RUNNER_URL:-}"
RUNNER_SHA256="${SCALEHOOK_RUNNER_SHA256:-}"
# 1: jobs (the runner user) cannot reach the metadata service, so they cannot use the
# instance's credentials (role, managed identity) at all.
BLOCK_IMDS="${SCALEHOOK_BLOCK_IMDS_FOR_RUNNER:-1}"
LOG="${ROOT}${SCALEHOOK_LOG_FILE:-/var/log/scalehook-runner.log}"

log() {
  printf '%s scalehook-runner: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" | tee -a "$LOG" >&2
}

# Whatever happens once the boot script sets `trap power_off EXIT`, the instance ends by
# powering off: a runner that never started must not leave an idle instance behind, and an
# ephemeral runner's instance is done after its one job.
power_off() {
  local status=$?
  trap - EXIT
  log "powering off (exit status ${status})"
  shutdown -h now || poweroff || true
  exit "$status"
}

# wait_for FETCH: calls the function FETCH until it succeeds, pausing POLL_SECONDS between
# calls, until WAIT_SECONDS have passed since the first call; then logs and fails. Every failure
# counts as "not yet" (the configuration not written yet, credentials not ready right after
# boot).
wait_for() {
  local deadline
  deadline=$(($(date +%s) + WAIT_SECONDS))
  until "$1"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "no runner configuration after ${WAIT_SECONDS}s: giving up"
      return 1
    fi
    sleep "$POLL_SECONDS"
  done
}

# The runner in RUNNER_DIR, downloaded from RUNNER_URL (SHA-256 checked) when the image does not
# have it.
install_runner() {
  if [ -x "${RUNNER_DIR}/run.sh" ]; then
    return 0
  fi
  if [ -z "$RUNNER_URL" ] || [ -z "$RUNNER_SHA256" ]; then
    log "no runner in ${RUNNER_DIR} and no SCALEHOOK_RUNNER_URL/SCALEHOOK_RUNNER_SHA256 to fetch one"
    return 1
  fi
  local archive
  archive="$(mktemp "${TMPDIR:-/tmp}/actions-runner.XXXXXX")"
  curl -fsSL --retry 5 --max-time 300 -o "$archive" "$RUNNER_URL"
  if ! printf '%s  %s\n' "$RUNNER_SHA256" "$archive" | sha256sum -c --status; then
    log "runner package checksum mismatch: refusing it"
    rm -f "$archive"
    return 1
  fi
  mkdir -p "$RUNNER_DIR"
  tar -xzf "$archive" -C "$RUNNER_DIR"
  rm -f "$archive"
  log "installed the runner package (sha256 ${RUNNER_SHA256})"
}

# run_runner CONFIG: runs the ephemeral runner once, as RUNNER_USER (created if missing), with
# the metadata service blocked for that user unless BLOCK_IMDS=0. Its exit status is logged,
# not returned: the instance powers off either way.
run_runner() {
  if ! id -u "$RUNNER_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$RUNNER_USER"
  fi
  chown -R "$RUNNER_USER:" "$RUNNER_DIR"
  if [ "$BLOCK_IMDS" = 1 ]; then
    # Root keeps the metadata service (the boot script needed it); the runner and its jobs do not.
    iptables -I OUTPUT -d 169.254.169.254 -m owner --uid-owner "$RUNNER_USER" -j REJECT
  fi
  log "starting the ephemeral runner as ${RUNNER_USER}"
  local status=0
  (cd "$RUNNER_DIR" && runuser -u "$RUNNER_USER" -- ./run.sh --jitconfig "$1") || status=$?
  log "runner exited with status ${status}"
}
