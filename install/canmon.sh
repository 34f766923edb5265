#!/bin/bash
# CanBridge's CAN monitor on the GX: decodes SuperB (CANopen) and Sunny Island frames on a port.
#   bash /data/apps/available/canbridge/install/canmon.sh [PORT] [--help]
# Without a PORT it listens on this GX's VE.Can port (can0 on a Cerbo GX, vecan0 on an Ekrano),
# found by driver/canports.py; the installer lists the GX's CAN ports.
set -euo pipefail
APP=$(dirname "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)")
export PYTHONPATH="$APP:$APP/vendor${PYTHONPATH:+:$PYTHONPATH}"
if [ $# -eq 0 ] || [[ $1 == -* ]]; then
    if port=$(python3 -m driver.canports --resolve superb auto 2>/dev/null); then
        set -- "$port" "$@"
    fi
fi
exec python3 -m driver.canmon "$@"
