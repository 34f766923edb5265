#!/bin/bash
# CanBridge configuration export / import on the GX (docs/config.md):
#   bash /data/apps/available/canbridge/install/config.sh export /data/canbridge-config.json
#   bash /data/apps/available/canbridge/install/config.sh diff   /data/canbridge-config.json
#   bash /data/apps/available/canbridge/install/config.sh import /data/canbridge-config.json
set -euo pipefail
APP=$(dirname "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)")
export PYTHONPATH="$APP:$APP/vendor${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m driver.configio "$@"
