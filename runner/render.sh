#!/bin/bash
# render.sh CLOUD: the boot script an instance of CLOUD (aws, azure) runs, as one file:
# runner/lib.sh, then runner/CLOUD/boot.sh, joined by a newline. infra/*/runners render the
# same (after their settings lines); the runner tests and shellcheck use this output.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
case "${1:-}" in
  aws | azure) ;;
  *) echo "usage: $0 aws|azure" >&2; exit 2 ;;
esac
cat "${here}/lib.sh"
echo
cat "${here}/$1/boot.sh"
