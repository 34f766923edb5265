#!/bin/bash
# CanBridge at boot: run from /data/rc.local (one line, added by install.sh) in the background.
#
# /service and the root file system are rebuilt at every boot and by every firmware update;
# /data is kept. This script puts back what lives outside /data, from the copies under
# /data/apps/available/canbridge: the daemontools services, the classic gui's Settings entry
# (patching the then-current stock PageSettings.qml again) and, for a CAN port Venus does not
# manage, the Sunny Island's bitrate. It changes nothing else and can run any number of times.
#
# The root directory is derived from this script's location (…/data/apps/available/canbridge/
# install/boot.sh), so the same script serves a GX ("/") and the tests' simulated GX root.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
APP=$(dirname "$HERE")
APP_REL=/data/apps/available/canbridge
case $APP in
    *"$APP_REL") ROOT=${APP%"$APP_REL"} ;;
    *) echo "canbridge: boot.sh must be run from $APP_REL/install" >&2; exit 1 ;;
esac
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

log "boot: $(date '+%Y-%m-%d %H:%M:%S') CanBridge $(cat "$APP/VERSION" 2>/dev/null)"
state_load

started=$(activate_services | tr '\n' ' ')
log "boot: services ${started:-already in place}"

if [ "$(state_get classic_gui)" = 1 ] && [ -f "$APP/gui-v1/PageSettings.snippet" ] &&
    [ -f "$(classic_gui_dir)/PageSettings.qml" ]; then
    if out=$(classic_gui_apply); then
        if [ "$out" = changed ]; then
            log "boot: classic gui page added again"
            restart_gui
        fi
    else
        warn "boot: classic gui page not added"
    fi
fi

port=$(state_get can_link)
if [ -n "$port" ]; then
    if [ -z "$ROOT" ]; then
        can_link_setup "$port" 500000 && log "boot: $port up at 500 kbit/s"
    else
        log "boot: would set $port to 500 kbit/s (not done under a test root)"
    fi
fi
log "boot: done"
