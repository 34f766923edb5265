#!/bin/bash
# CanBridge's CAN monitor on the GX: decodes SuperB (CANopen) and Sunny Island frames on a port.
#   bash /data/apps/available/canbridge/install/canmon.sh --help
set -euo pipefail
APP=$(dirname "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)")
export PYTHONPATH="$APP:$APP/vendor${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m driver.canmon "$@"
