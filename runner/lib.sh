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
# 1: jobs (the runner user, and containers they start) cannot reach the metadata service, so
# they cannot use the instance's credentials (role, managed identity) at all.
BLOCK_IMDS="${SCALEHOOK_BLOCK_IMDS_FOR_RUNNER:-1}"
# 1: start the runner even if its user can become root or drive Docker (groups below, sudo
# rights). Then a job can undo every rule below and use the instance's credentials.
ALLOW_PRIVILEGED_USER="${SCALEHOOK_ALLOW_PRIVILEGED_RUNNER_USER:-0}"
# What the boot script adds for its cloud: the metadata service's IPv6 address (AWS), and
# addresses whose TCP ports jobs must not reach ("address port..."; Azure's wireserver).
METADATA_V6=""
BLOCKED_TCP=()
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

# Groups that make a user root in effect: sudo/wheel/admin (sudo rights), docker and lxd
# (their daemons run containers as root, host network included, past every rule below),
# adm (reads the system logs).
PRIVILEGED_GROUPS=" sudo wheel admin docker lxd adm "

# privileges USER: prints why USER is privileged (uid 0, a group above, sudo rights), one
# reason a line; nothing for an ordinary user.
privileges() {
  local group rights=""
  [ "$(id -u "$1")" = 0 ] && echo "uid 0"
  for group in $(id -nG "$1"); do
    [[ "$PRIVILEGED_GROUPS" == *" ${group} "* ]] && echo "group ${group}"
  done
  if command -v sudo >/dev/null 2>&1; then
    rights="$(LC_ALL=C sudo -n -l -U "$1" 2>/dev/null || true)"
  fi
  [[ "$rights" == *"may run the following commands"* ]] && echo "sudo rights"
  return 0
}

# reject_for_runner TOOL RULE...: rejects RULE's packets from the runner user (OUTPUT) and from
# containers (Docker's DOCKER-USER chain, which FORWARD passes first; created here if Docker
# has not yet: Docker keeps an existing chain's rules).
reject_for_runner() {
  local tool="$1"
  shift
  "$tool" -I OUTPUT "$@" -m owner --uid-owner "$RUNNER_USER" -j REJECT
  "$tool" -N DOCKER-USER 2>/dev/null || true
  "$tool" -C FORWARD -j DOCKER-USER 2>/dev/null || "$tool" -I FORWARD -j DOCKER-USER
  "$tool" -I DOCKER-USER "$@" -j REJECT
}

# block_for_runner: the metadata service (unless BLOCK_IMDS=0) and BLOCKED_TCP, for the runner
# user and containers. Root keeps them (the boot script needed the metadata service).
block_for_runner() {
  local entry address ports port
  if [ "$BLOCK_IMDS" = 1 ]; then
    reject_for_runner iptables -d 169.254.169.254
    if [ -n "$METADATA_V6" ]; then
      reject_for_runner ip6tables -d "$METADATA_V6"
    fi
  fi
  for entry in "${BLOCKED_TCP[@]}"; do
    read -r address ports <<<"$entry"
    for port in $ports; do
      reject_for_runner iptables -d "$address" -p tcp --dport "$port"
    done
  done
}

# run_runner CONFIG: runs the ephemeral runner once, as RUNNER_USER (created if missing; refused
# if privileged, unless ALLOW_PRIVILEGED_USER=1), with block_for_runner's rules in place. The
# configuration goes in the environment, where the runner reads its inputs
# (ACTIONS_RUNNER_INPUT_<NAME>), not on the command line every local user can read. The
# runner's exit status is logged, not returned: the instance powers off either way.
run_runner() {
  if ! id -u "$RUNNER_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$RUNNER_USER"
  fi
  local reasons
  reasons="$(privileges "$RUNNER_USER" | paste -sd, -)"
  if [ -n "$reasons" ]; then
    if [ "$ALLOW_PRIVILEGED_USER" != 1 ]; then
      log "runner user ${RUNNER_USER} is privileged (${reasons}): refusing to start the runner"
      return 1
    fi
    log "runner user ${RUNNER_USER} is privileged (${reasons}): starting anyway, as allowed"
  fi
  chown -R "$RUNNER_USER:" "$RUNNER_DIR"
  block_for_runner
  log "starting the ephemeral runner as ${RUNNER_USER}"
  local status=0
  (cd "$RUNNER_DIR" && ACTIONS_RUNNER_INPUT_JITCONFIG="$1" runuser -u "$RUNNER_USER" -- ./run.sh) \
    || status=$?
  log "runner exited with status ${status}"
}
