#!/bin/bash
# CanBridge diagnostic bundle on the GX (docs/config.md): logs, settings, versions, D-Bus
# snapshots and a listen-only capture of each CAN bus in one .tar.gz, without any password.
#   bash /data/apps/available/canbridge/install/diag.sh -o /data/diag.tar.gz --seconds 20
set -euo pipefail
APP=$(dirname "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)")
export PYTHONPATH="$APP:$APP/vendor${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m driver.diag "$@"
