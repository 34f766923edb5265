#!/bin/bash
# CanBridge installer for Venus OS (GX devices). Run it on the GX from the unpacked bundle:
#
#   bash install/install.sh [options]        install, or upgrade in place (keeps settings)
#   bash install/install.sh --status
#   bash install/install.sh --uninstall [--purge]
#
# Everything is installed under /data (the only place a firmware update keeps):
#   /data/apps/available/canbridge           code, vendored Python packages, GUI files, state
#   /data/apps/enabled/<Name>                the gui-v2 plugin (a link to the above)
#   /data/rc.local                           one line that runs install/boot.sh at every boot
# and, rebuilt at every boot by boot.sh: /service/<name> (daemontools) and the classic gui's
# Settings entry in /opt/victronenergy/gui/qml/PageSettings.qml (original kept, restorable; on
# the read-only rootfs, written through Victron's remount-rw.sh and left read-only again).
#
# Options:
#   --services LIST     parts to run: superb,sma,web (or "none"). First install: superb,web;
#                       later runs keep the previous choice unless this is given.
#   --sma-port PORT     CAN port of the Sunny Island (default: auto, the GX's CAN port that is
#                       not the VE.Can port: vecan1 on a Cerbo GX B1/Ekrano, can1 on a Cerbo
#                       GX); its Venus port profile is set to "Up, but no services (500 kbit/s)"
#                       when dbus-sma is enabled. The installer lists the CAN ports it found.
#   --no-can-setup      leave CAN port profiles alone.
#   --no-gui-v2 / --gui-v2              do not / do enable the gui-v2 plugin (default: do)
#   --no-classic-gui / --classic-gui    do not / do add the classic gui page (default: do)
#   --uninstall         remove exactly what the installer added; --purge: CanBridge's settings too
#   --status            show what is installed and running
#   --root DIR          act on DIR as if it were / (tests; default: $CANBRIDGE_ROOT or /)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUNDLE=$(dirname "$HERE")
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

DEFAULT_PARTS="superb,web"
# /Settings/Canbus/<port>/Profile values (gui-v2's CanBusProfile enumeration).
CAN_PROFILE_DISABLED=0
CAN_PROFILE_CANBMS500=3
CAN_PROFILE_NONE250=5
CAN_PROFILE_NONE500=8

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

ROOT=${CANBRIDGE_ROOT:-}
ACTION=install
PURGE=0
OPT_PARTS=""
OPT_SMA_PORT=""
OPT_CAN_SETUP=""
OPT_GUI_V2=""
OPT_CLASSIC=""
while [ $# -gt 0 ]; do
    case $1 in
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --root=*) ROOT=${1#*=} ;;
        --services) OPT_PARTS=${2:?--services needs a list}; shift ;;
        --services=*) OPT_PARTS=${1#*=} ;;
        --sma-port) OPT_SMA_PORT=${2:?--sma-port needs a port}; shift ;;
        --sma-port=*) OPT_SMA_PORT=${1#*=} ;;
        --no-can-setup) OPT_CAN_SETUP=0 ;;
        --can-setup) OPT_CAN_SETUP=1 ;;
        --gui-v2) OPT_GUI_V2=1 ;;
        --no-gui-v2) OPT_GUI_V2=0 ;;
        --classic-gui) OPT_CLASSIC=1 ;;
        --no-classic-gui) OPT_CLASSIC=0 ;;
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=1 ;;
        --status) ACTION=status ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
if [ $PURGE = 1 ] && [ $ACTION != uninstall ]; then die "--purge goes with --uninstall"; fi

ROOT=${ROOT%/}
case $ROOT in *[[:space:]]*) die "the root directory must not contain spaces" ;; esac
if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "$ROOT is not a directory"
    ROOT=$(cd "$ROOT" && pwd)
fi
APP_REL=/data/apps/available/canbridge
APP=$ROOT$APP_REL
RC_LINE="[ -f $APP/install/boot.sh ] && bash $APP/install/boot.sh >$APP/conf/boot.log 2>&1 & # CanBridge"
CREATED_DIRS=()
GUI_CHANGED=0

# ---------------------------------------------------------------------------------------------

venus_version() {
    local f=$ROOT/opt/victronenergy/version
    if [ -f "$f" ]; then head -n 1 "$f"; else echo "unknown"; fi
}

check_system() {
    [ -d "$ROOT/data" ] || die "$ROOT/data does not exist: this does not look like a GX device"
    local need have py
    need=$(( $(du -sk "$BUNDLE" | cut -f1) * 2 + 2048 ))
    have=$(df -Pk "$ROOT/data" | awk 'NR==2 {print $4}')
    if [ -n "$have" ] && [ "$have" -lt "$need" ]; then
        die "not enough free space on /data: ${have} KiB free, ${need} KiB needed"
    fi
    py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
        die "no $PYTHON on this system"
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        die "Python $py is too old: CanBridge needs Venus OS v3.60 or later (Python 3.12); " \
            "this is Venus OS $(venus_version)"
    fi
    log "Venus OS $(venus_version), Python $py"
}

verify_bundle() {
    [ -f "$BUNDLE/SHA256SUMS" ] || die "$BUNDLE/SHA256SUMS missing: not an unpacked CanBridge bundle"
    if ! (cd "$BUNDLE" && sha256sum -c SHA256SUMS >/dev/null 2>&1); then
        (cd "$BUNDLE" && sha256sum -c SHA256SUMS 2>&1 | grep -v ': OK$' | head -n 5) >&2 || true
        die "the bundle is damaged (checksums do not match); copy it again"
    fi
}

# Copy the bundle to $APP, keeping $APP/conf (installer state, local overrides). Sets
# CODE_CHANGED=1 when the installed code changed.
install_code() {
    CODE_CHANGED=0
    if [ -d "$APP" ] && [ "$(cd "$BUNDLE" && pwd -P)" = "$(cd "$APP" && pwd -P)" ]; then
        return 0  # run from the installed copy: reconfigure only
    fi
    if [ -f "$APP/SHA256SUMS" ] && cmp -s "$BUNDLE/SHA256SUMS" "$APP/SHA256SUMS" &&
        (cd "$APP" && sha256sum -c SHA256SUMS >/dev/null 2>&1); then
        return 0  # the same release is installed and intact
    fi
    local new=$APP.new old=$APP.old
    rm -rf "$new" "$old"
    mkdir "$new"
    cp -a "$BUNDLE/." "$new/"
    rm -rf "$new/conf" "$new/service"
    if [ -d "$APP/conf" ]; then mv "$APP/conf" "$new/conf"; fi
    if [ -d "$APP/service" ]; then mv "$APP/service" "$new/service"; fi
    if [ -d "$APP" ]; then mv "$APP" "$old"; fi
    mv "$new" "$APP"
    rm -rf "$old"
    CODE_CHANGED=1
}

# Remember the directories this run created (the uninstaller removes them if empty).
record_created_dirs() {
    local all d
    all=$(state_get created_dirs)
    for d in "${CREATED_DIRS[@]}"; do
        case ",$all," in *",$d,"*) ;; *) all=${all:+$all,}$d ;; esac
    done
    state_set created_dirs "$all"
    CREATED_DIRS=()
}

rc_add_line() {
    local rc=$ROOT/data/rc.local disabled=$ROOT/data/rc.local.disabled file
    if [ -f "$rc" ]; then
        file=$rc
    elif [ -f "$disabled" ]; then
        file=$disabled
        warn "start-up scripts are disabled on this GX ($disabled exists)."
        warn "CanBridge runs now, but after a reboot or firmware update it only comes back once"
        warn "you enable them again (Venus 3.70+: Settings > General > Support status >"
        warn "Re-enable custom startup scripts; before 3.70: Settings > General > Modification"
        warn "checks). The line has been added to rc.local.disabled so that it is in place then."
    else
        file=$rc
        printf '#!/bin/bash\n' >"$rc"
        chmod 755 "$rc"
        state_set rc_created 1
    fi
    # Venus runs /data/rc.local only when it is executable (custom-rc-late.sh in
    # meta-victronenergy: "if [ -x /data/rc.local ]"); one copied over without its mode would
    # silently never run. (rc.local.disabled is left as it is: Venus renames it back.)
    if [ "$file" = "$rc" ] && [ ! -x "$rc" ]; then
        chmod a+x "$rc"
        state_set rc_made_executable 1
        warn "${rc#"$ROOT"} was not executable, so Venus did not run it at boot; made it" \
             "executable (everything in it now runs at boot; --uninstall reverts the mode)"
    fi
    if grep -qxF "$RC_LINE" "$file"; then return 0; fi
    if [ -s "$file" ] && [ "$(tail -c 1 "$file" | od -An -c | tr -d ' ')" != '\n' ]; then
        printf '\n' >>"$file"
        state_set rc_added_newline 1
    fi
    printf '%s\n' "$RC_LINE" >>"$file"
    log "added the boot line to ${file#"$ROOT"}"
}

# Remove our line from rc.local and rc.local.disabled, byte for byte.
rc_remove_line() {
    local file content new
    for file in "$ROOT/data/rc.local" "$ROOT/data/rc.local.disabled"; do
        if [ ! -f "$file" ] || ! grep -qxF "$RC_LINE" "$file"; then continue; fi
        content=$(cat "$file"; printf x)
        content=${content%x}
        new=${content//$'\n'"$RC_LINE"$'\n'/$'\n'}
        if [[ $new == "$RC_LINE"$'\n'* ]]; then new=${new#"$RC_LINE"$'\n'}; fi
        if [ "$(state_get rc_added_newline)" = 1 ] && [[ $new == *$'\n' ]]; then
            new=${new%$'\n'}
        fi
        if [ "$file" = "$ROOT/data/rc.local" ] && [ "$(state_get rc_created)" = 1 ] &&
            [ "$new" = $'#!/bin/bash\n' ]; then
            rm -f "$file"
        else
            printf '%s' "$new" >"$file"
            if [ "$file" = "$ROOT/data/rc.local" ] && [ "$(state_get rc_made_executable)" = 1 ]
            then
                chmod a-x "$file"
            fi
        fi
        log "removed the boot line from ${file#"$ROOT"}"
    done
}

gui_v2_plugin() {
    local f
    for f in "$APP"/gui-v2/*.json; do
        [ -f "$f" ] && { basename "$f" .json; return 0; }
    done
    return 1
}

gui_v2_enable() {
    local name link
    if ! name=$(gui_v2_plugin); then
        warn "this bundle has no gui-v2 plugin (gui-v2/*.json): skipped"
        return 0
    fi
    mkdir_tracked "$ROOT/data/apps/enabled"
    link=$ROOT/data/apps/enabled/$name
    if [ -L "$link" ] && [ "$(readlink "$link")" = "../available/canbridge" ]; then return 0; fi
    if [ -e "$link" ] || [ -L "$link" ]; then
        warn "${link#"$ROOT"} exists and is not CanBridge's: gui-v2 plugin not enabled"
        return 0
    fi
    ln -s ../available/canbridge "$link"
    state_set gui_v2_link "$name"
    log "enabled the gui-v2 plugin $name (Settings > Integrations > UI plugins)"
}

gui_v2_disable() {
    local name
    name=$(state_get gui_v2_link)
    [ -n "$name" ] || return 0
    local link=$ROOT/data/apps/enabled/$name
    if [ -L "$link" ] && [ "$(readlink "$link")" = "../available/canbridge" ]; then
        rm -f "$link"
        log "disabled the gui-v2 plugin $name"
    fi
    state_set gui_v2_link ""
}

classic_gui_install() {
    if [ ! -f "$APP/gui-v1/PageSettings.snippet" ]; then
        warn "this bundle has no classic gui page (gui-v1/PageSettings.snippet): skipped"
        return 0
    fi
    if [ ! -f "$(classic_gui_dir)/PageSettings.qml" ]; then
        log "no classic gui on this GX: classic page skipped"
        return 0
    fi
    local out
    if out=$(classic_gui_apply); then
        if [ "$out" = changed ]; then
            GUI_CHANGED=1
            log "added CanBridge to the classic gui's Settings menu"
        fi
    else
        warn "classic gui page not installed (see the message above); everything else is"
    fi
}

classic_gui_uninstall() {
    [ -d "$APP/conf/classic-gui" ] || return 0
    local out
    if out=$(classic_gui_restore); then
        if [ "$out" = changed ]; then
            GUI_CHANGED=1
            log "removed CanBridge from the classic gui"
        fi
    else
        warn "could not restore the classic gui; the original is in $APP/conf/classic-gui"
        return 1
    fi
}

# Give the Sunny Island's port 500 kbit/s without Venus's CAN-bus BMS driver on it
# ("Up, but no services (500 kbit/s)", which the GUI does not offer).
can_setup() {
    local port=$1 profile rc=0 superb_port
    case $port in
        *:*) log "dbus-sma uses $port (python-can sets its bitrate): no port profile to set"
             return 0 ;;
    esac
    # names differ per GX model: resolve both ports on this GX (driver/canports.py)
    if ! port=$(can_resolve sma "$port" 2>&1); then
        warn "Sunny Island port: $port"
        return 0
    fi
    superb_port=$(can_resolve superb auto 2>/dev/null) || superb_port=""
    if [[ " $(enabled_services | tr '\n' ' ') " == *" dbus-superb "* ]]; then
        if [ "$port" = "$superb_port" ]; then
            warn "the Sunny Island needs its own CAN port at 500 kbit/s; $port is the SuperB" \
                 "port (VE.Can, 250 kbit/s). Choose another port with --sma-port."
            return 0
        fi
    fi
    profile=$("$PYTHON" "$APP/install/venus_settings.py" get "/Settings/Canbus/$port/Profile" \
        2>/dev/null) || rc=$?
    case $rc in
        0) ;;
        3)
            log "$port is not managed by Venus: its bitrate is set to 500 kbit/s at every boot"
            state_set can_link "$port"
            if [ -z "$ROOT" ]; then can_link_setup "$port" 500000 || warn "could not set up $port"; fi
            return 0 ;;
        *)
            warn "could not read the CAN profile of $port (settings service not reachable);" \
                 "set it in Settings > Connectivity > (the port) > CAN-bus profile (Venus" \
                 "3.70+; before: Settings > Services), or run the installer again"
            return 0 ;;
    esac
    case $profile in
        "$CAN_PROFILE_NONE500") return 0 ;;
        "$CAN_PROFILE_DISABLED" | "$CAN_PROFILE_NONE250" | "$CAN_PROFILE_CANBMS500") ;;
        *)
            warn "$port is in use by Venus (profile $profile, e.g. VE.Can at 250 kbit/s);" \
                 "not changing it. Give the Sunny Island its own port (--sma-port)."
            return 0 ;;
    esac
    if "$PYTHON" "$APP/install/venus_settings.py" set "/Settings/Canbus/$port/Profile" \
        "$CAN_PROFILE_NONE500"; then
        if [ -z "$(state_get can_profile_port)" ]; then
            state_set can_profile_port "$port"
            state_set can_profile_old "$profile"
        fi
        log "set $port to 'Up, but no services (500 kbit/s)' (was profile $profile)"
    else
        warn "could not set the CAN profile of $port"
    fi
}

can_restore() {
    local port old now
    port=$(state_get can_profile_port)
    old=$(state_get can_profile_old)
    [ -n "$port" ] || return 0
    now=$("$PYTHON" "$APP/install/venus_settings.py" get "/Settings/Canbus/$port/Profile" \
        2>/dev/null) || { warn "could not restore the CAN profile of $port (was $old)"; return 0; }
    if [ "$now" = "$CAN_PROFILE_NONE500" ]; then
        "$PYTHON" "$APP/install/venus_settings.py" set "/Settings/Canbus/$port/Profile" "$old" &&
            log "restored the CAN profile of $port ($old)"
    fi
}

# The GX's CAN interfaces: network interfaces of type 280 with Venus's udev names
# (driver/canports.py, the drivers' own discovery). Lines "iface<TAB>name<TAB>config".
can_ports_found() {
    (cd "$APP" && PYTHONPATH=$APP "$PYTHON" -m driver.canports --root "${ROOT:-/}")
}

# can_resolve ROLE VALUE: the interface VALUE ("auto" or a name) stands for on this GX, as the
# driver resolves it; the reason on stderr and non-zero when there is none.
can_resolve() {
    (cd "$APP" && PYTHONPATH=$APP "$PYTHON" -m driver.canports --root "${ROOT:-/}" \
        --resolve "$1" "$2")
}

# Show what was found and what "auto" means here, so the user can choose.
offer_can_ports() {
    local list iface name config desc superb sma
    list=$(can_ports_found 2>/dev/null) || return 0
    if [ -z "$list" ]; then
        warn "no CAN interfaces found on this GX (ip link shows them); plug in the CAN" \
             "adapter or check the GX model"
        return 0
    fi
    log "CAN ports found on this GX:"
    while IFS=$'\t' read -r iface name config; do
        desc=$name
        if [ -n "$config" ]; then desc=${desc:+$desc, }$config; fi
        log "  $iface${desc:+ ($desc)}"
    done <<<"$list"
    superb=$(can_resolve superb auto 2>&1) || superb="none ($superb)"
    sma=$(can_resolve sma auto 2>&1) || sma="none ($sma)"
    log "'auto' here: SuperB batteries on $superb, Sunny Island on $sma. Choose others in" \
        "Settings > CanBridge or on the web page (CAN interface), and with --sma-port."
}

restart_changed_services() {
    local name
    for name in "$@"; do
        svc_if_supervised -t "$ROOT/service/$name"
    done
}

# ---------------------------------------------------------------------------------------------

do_install() {
    check_system
    verify_bundle
    local first=0 existed=0
    [ -d "$APP" ] && existed=1
    mkdir_tracked "$ROOT/data/apps/available"
    state_load
    if [ -z "$(state_get parts)" ] && [ ! -f "$APP/conf/install.conf" ]; then first=1; fi
    install_code
    state_load  # the state moved along with $APP/conf
    if [ $first = 1 ]; then
        state_set parts "$DEFAULT_PARTS"
        state_set gui_v2 1
        state_set classic_gui 1
        state_set can_setup 1
        state_set sma_port auto
    fi
    if [ -n "$OPT_PARTS" ]; then
        local part parts=""
        [ "$OPT_PARTS" = none ] && OPT_PARTS=""
        for part in ${OPT_PARTS//,/ }; do
            service_name "$part" >/dev/null || die "unknown part '$part' (superb, sma, web)"
            parts=${parts:+$parts,}$part
        done
        state_set parts "$parts"
    fi
    [ -n "$OPT_GUI_V2" ] && state_set gui_v2 "$OPT_GUI_V2"
    [ -n "$OPT_CLASSIC" ] && state_set classic_gui "$OPT_CLASSIC"
    [ -n "$OPT_CAN_SETUP" ] && state_set can_setup "$OPT_CAN_SETUP"
    [ -n "$OPT_SMA_PORT" ] && state_set sma_port "$OPT_SMA_PORT"
    state_set version "$(cat "$APP/VERSION")"
    offer_can_ports

    # services: stop the ones no longer wanted, (re)write the rest
    local name
    for name in dbus-superb dbus-sma canbridge-web; do
        if ! enabled_services | grep -qxF "$name" && [ -d "$ROOT/service/$name" ]; then
            remove_service "$name"
            log "stopped $name"
        fi
    done
    generate_services >/dev/null
    rc_add_line
    if [ "$(state_get gui_v2)" = 1 ]; then gui_v2_enable; else gui_v2_disable; fi
    if [ "$(state_get classic_gui)" = 1 ]; then classic_gui_install; else classic_gui_uninstall; fi
    if enabled_services | grep -qxF dbus-sma && [ "$(state_get can_setup)" = 1 ]; then
        can_setup "$(state_get sma_port)"
    fi
    record_created_dirs
    state_save

    local started=()
    mapfile -t started < <(activate_services)
    if [ $CODE_CHANGED = 1 ] && [ $existed = 1 ]; then
        local running=()
        mapfile -t running < <(enabled_services)
        restart_changed_services "${running[@]}"
    else
        # a changed run script of a running service takes effect at the next start
        restart_changed_services "${started[@]}"
    fi
    if [ $GUI_CHANGED = 1 ]; then restart_gui; fi
    if [ $existed = 1 ] && [ $CODE_CHANGED = 1 ]; then
        log "upgraded to CanBridge $(state_get version); settings kept"
    elif [ $existed = 1 ]; then
        log "CanBridge $(state_get version) is installed; configuration updated"
    else
        log "installed CanBridge $(state_get version)"
    fi
    log "services: $(enabled_services | tr '\n' ' ')(logs in /var/log/<service>/current)"
    if enabled_services | grep -qxF canbridge-web; then
        log "settings page: http://<GX address>:8090/"
    fi
}

do_uninstall() {
    if [ ! -d "$APP" ]; then
        log "CanBridge is not installed"
        rc_remove_line
        return 0
    fi
    state_load
    local name failed=0
    for name in dbus-superb dbus-sma canbridge-web; do
        if [ -d "$ROOT/service/$name" ]; then
            remove_service "$name"
            log "stopped and removed $name"
        fi
        rm -rf "$ROOT/var/log/$name"
    done
    classic_gui_uninstall || failed=1
    gui_v2_disable
    can_restore
    if [ $PURGE = 1 ]; then
        local n
        if n=$("$PYTHON" "$APP/install/venus_settings.py" purge); then
            log "removed $n CanBridge settings"
        else
            warn "could not remove CanBridge's settings (is the settings service running?)"
            failed=1
        fi
        if [ -d "$ROOT/data/conf/canbridge" ]; then
            rm -rf "$ROOT/data/conf/canbridge"
            log "removed /data/conf/canbridge (energy counters)"
        fi
    fi
    rc_remove_line
    if [ $failed = 1 ] && [ -d "$APP/conf/classic-gui" ]; then
        warn "kept $APP_REL/conf/classic-gui (the saved classic gui original)"
        find "$APP" -mindepth 1 -maxdepth 1 ! -name conf -exec rm -rf {} +
    else
        rm -rf "$APP"
    fi
    if [ $GUI_CHANGED = 1 ]; then restart_gui; fi
    local dirs=() i
    IFS=, read -r -a dirs <<<"$(state_get created_dirs)"
    for ((i = ${#dirs[@]} - 1; i >= 0; i--)); do
        if [ -n "${dirs[i]}" ]; then rmdir "$ROOT${dirs[i]}" 2>/dev/null || true; fi
    done
    if [ $PURGE = 1 ]; then log "CanBridge removed, settings too"; else log "CanBridge removed"; fi
    return $failed
}

do_status() {
    if [ ! -d "$APP" ]; then
        echo "CanBridge: not installed"
        return 0
    fi
    state_load
    echo "CanBridge $(state_get version) in $APP_REL (Venus OS $(venus_version))"
    local name dir
    for name in dbus-superb dbus-sma canbridge-web; do
        dir=$ROOT/service/$name
        if ! enabled_services | grep -qxF "$name"; then
            echo "  $name: not enabled"
        elif [ ! -d "$dir" ]; then
            echo "  $name: enabled, not in /service (reboot or run the installer again)"
        elif command -v svstat >/dev/null 2>&1 && is_supervised "$dir"; then
            echo "  $name: $(svstat "$dir" | sed "s|^$dir: ||")"
        else
            echo "  $name: in /service, not supervised yet"
        fi
    done
    if grep -qxF "$RC_LINE" "$ROOT/data/rc.local" 2>/dev/null; then
        echo "  boot: /data/rc.local runs install/boot.sh"
    elif grep -qxF "$RC_LINE" "$ROOT/data/rc.local.disabled" 2>/dev/null; then
        echo "  boot: start-up scripts are DISABLED (line is in /data/rc.local.disabled)"
    else
        echo "  boot: MISSING from /data/rc.local (run the installer again)"
    fi
    if [ -n "$(state_get gui_v2_link)" ]; then
        echo "  gui-v2 plugin: enabled as $(state_get gui_v2_link)"
    else
        echo "  gui-v2 plugin: not enabled"
    fi
    echo "  classic gui: $("$PYTHON" "$APP/install/classic_gui.py" status \
        --gui "$(classic_gui_dir)" --state "$APP/conf/classic-gui" 2>/dev/null || echo unknown)"
    local ports
    ports=$(can_ports_found 2>/dev/null |
        awk -F '\t' '{ printf "%s%s%s", sep, $1, ($2 != "" ? " (" $2 ")" : ""); sep = ", " }')
    echo "  CAN ports: ${ports:-none found}"
    if [ -n "$(state_get can_profile_port)" ]; then
        echo "  CAN: $(state_get can_profile_port) set to 500 kbit/s without services" \
             "(was profile $(state_get can_profile_old))"
    fi
    if [ -f "$APP/conf/boot.log" ]; then
        echo "  last boot: $(tail -n 1 "$APP/conf/boot.log")"
    fi
}

case $ACTION in
    install) do_install ;;
    uninstall) do_uninstall ;;
    status) do_status ;;
esac
