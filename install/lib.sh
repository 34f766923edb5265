# shellcheck shell=bash
# CanBridge installer functions, shared by install.sh and boot.sh (sourced, not run).
#
# The caller sets ROOT ("" on a GX; a directory that looks like a GX in the tests) and APP
# ("$ROOT/data/apps/available/canbridge"). Every path used here is under "$ROOT".
# Commands that act on running services go through variables, so tests can replace them:
#   CANBRIDGE_SVC (svc), CANBRIDGE_SVOK (svok), CANBRIDGE_PYTHON (python3, for the helpers).

SVC=${CANBRIDGE_SVC:-svc}
# The machine architecture (uname -m); the tests set it to simulate another GX.
ARCH=${CANBRIDGE_ARCH:-$(uname -m)}
SVOK=${CANBRIDGE_SVOK:-svok}
PYTHON=${CANBRIDGE_PYTHON:-python3}

log() { printf 'canbridge: %s\n' "$*"; }
warn() { printf 'canbridge: WARNING: %s\n' "$*" >&2; }
die() { printf 'canbridge: ERROR: %s\n' "$*" >&2; exit 1; }

# Parts the user can choose: part name -> daemontools service -> Python module.
service_name() {
    case $1 in
        superb) echo dbus-superb ;;
        sma) echo dbus-sma ;;
        web) echo canbridge-web ;;
        *) return 1 ;;
    esac
}

service_module() {
    case $1 in
        dbus-superb) echo driver.superb.main ;;
        dbus-sma) echo driver.sma.main ;;
        canbridge-web) echo webui.main ;;
        *) return 1 ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Installer state: KEY=value lines in $APP/conf/install.conf (kept across upgrades).

declare -A STATE=()

state_load() {
    STATE=()
    local file=$APP/conf/install.conf key value
    [ -f "$file" ] || return 0
    while IFS='=' read -r key value; do
        case $key in '' | '#'*) continue ;; esac
        STATE[$key]=$value
    done <"$file"
}

state_get() { printf '%s' "${STATE[$1]:-${2:-}}"; }

state_set() { STATE[$1]=$2; }

state_save() {
    local tmp key
    mkdir -p "$APP/conf"
    tmp=$(mktemp "$APP/conf/.install.conf.XXXXXX")
    {
        echo "# CanBridge installer state (written by install.sh; do not edit)"
        for key in $(printf '%s\n' "${!STATE[@]}" | sort); do
            printf '%s=%s\n' "$key" "${STATE[$key]}"
        done
    } >"$tmp"
    install_file "$tmp" "$APP/conf/install.conf" 644 || true
    rm -f "$tmp"
}

# Enabled daemontools services, one per line.
enabled_services() {
    local part
    for part in ${STATE[parts]//,/ }; do
        service_name "$part"
    done
}

# ---------------------------------------------------------------------------------------------
# Files

# install_file SRC DEST MODE: copy unless DEST already has the same bytes and mode.
# Returns 0 when DEST was (re)written, 1 when it was already right.
install_file() {
    local src=$1 dest=$2 mode=$3 tmp
    if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "$mode" ]; then
        return 1
    fi
    tmp=$(mktemp "$(dirname "$dest")/.canbridge.XXXXXX")
    cat "$src" >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
    return 0
}

# mkdir_tracked DIR: create DIR (and missing parents), remembering each directory created so
# the uninstaller removes exactly those (if empty then).
mkdir_tracked() {
    local dir=$1 missing=()
    while [ ! -d "$dir" ]; do
        missing=("$dir" "${missing[@]}")
        dir=$(dirname "$dir")
    done
    for dir in "${missing[@]}"; do
        mkdir "$dir"
        CREATED_DIRS+=("${dir#"$ROOT"}")
    done
}

# ---------------------------------------------------------------------------------------------
# Services

is_supervised() {
    command -v "$SVOK" >/dev/null 2>&1 && "$SVOK" "$1" 2>/dev/null
}

svc_if_supervised() {
    local opt=$1 dir=$2
    if is_supervised "$dir"; then
        "$SVC" "$opt" "$dir" || warn "$SVC $opt $dir failed"
    fi
}

# The run script of a service (daemontools; the GX's own drivers use the same limits).
write_run_script() {
    local name=$1 module
    module=$(service_module "$name")
    # dbus-sma keeps its energy counters under /data/conf/canbridge
    if [ "$name" = dbus-sma ]; then module="$module --state-dir '$ROOT/data/conf/canbridge'"; fi
    cat <<EOF
#!/bin/sh
# $name: CanBridge, started by daemontools. Written by the CanBridge installer.
exec 2>&1
APP='$APP'
PYTHON=python3
# Optional local overrides (development and tests only; absent on a normal installation):
# shell assignments such as PYTHON=..., VELIB_PYTHON=..., DBUS_SESSION_BUS_ADDRESS=...
if [ -r "\$APP/conf/env" ]; then
    set -a
    # shellcheck source=/dev/null
    . "\$APP/conf/env"
    set +a
fi
PYTHONPATH="\$APP:\$APP/vendor\${PYTHONPATH:+:\$PYTHONPATH}"
export PYTHONPATH
cd "\$APP" || exit 111
exec softlimit -d 100000000 -s 1000000 -a $(softlimit_all) "\$PYTHON" -m $module
EOF
}

# The softlimit -a (all memory: the address space) of our services. Victron's daemontools class
# (meta-victronenergy, meta-third-party/classes/daemontools.bbclass, SOFTLIMIT_ALL_FACTOR)
# multiplies -a by 4 on aarch64 (Ekrano, Cerbo GX B1, Raspberry Pi 5) since Venus 3.70: a 64-bit
# process maps far more address space for the same work (64-bit pointers, glibc reserving 64 MiB
# per malloc arena instead of 1 MiB, larger thread stacks) while its resident memory hardly
# changes. Python with one thread per battery reaches 100 MB of address space on aarch64 long
# before it uses much memory, so we follow Victron: 100 MB on 32-bit ARM (and anything else),
# 400 MB on aarch64. -d (data segment) is not multiplied, as in Victron's class.
softlimit_all() {
    case $ARCH in
        aarch64 | arm64) echo 400000000 ;;
        *) echo 100000000 ;;
    esac
}

write_log_script() {
    local name=$1
    cat <<EOF
#!/bin/sh
exec 2>&1
exec multilog t s25000 n4 '$ROOT/var/log/$name'
EOF
}

# Generate $APP/service/<name> for every enabled service and drop the others.
# Prints the names of services whose files changed.
generate_services() {
    local name tmp
    mkdir -p "$APP/service"
    tmp=$(mktemp "$APP/service/.gen.XXXXXX")
    for name in $(enabled_services); do
        mkdir -p "$APP/service/$name/log"
        write_run_script "$name" >"$tmp"
        if install_file "$tmp" "$APP/service/$name/run" 755; then echo "$name"; fi
        write_log_script "$name" >"$tmp"
        if install_file "$tmp" "$APP/service/$name/log/run" 755; then echo "$name"; fi
    done
    rm -f "$tmp"
    for tmp in "$APP"/service/*; do
        [ -d "$tmp" ] || continue
        name=${tmp##*/}
        if ! enabled_services | grep -qxF "$name"; then rm -rf "$tmp"; fi
    done
}

# Copy the enabled services into /service (svscan starts them within 5 s). A new directory is
# assembled under a dot-name (svscan ignores those) and renamed into place.
# Prints the names of services that were added or whose run scripts changed.
activate_services() {
    local name src dest tmp changed
    if [ ! -d "$ROOT/service" ]; then
        warn "$ROOT/service does not exist: services not started"
        return 0
    fi
    for name in $(enabled_services); do
        src=$APP/service/$name
        dest=$ROOT/service/$name
        if [ ! -d "$dest" ]; then
            tmp=$ROOT/service/.$name.canbridge
            rm -rf "$tmp"
            mkdir -p "$tmp/log"
            cp "$src/run" "$tmp/run"
            cp "$src/log/run" "$tmp/log/run"
            chmod 755 "$tmp/run" "$tmp/log/run"
            mv "$tmp" "$dest"
            echo "$name"
            continue
        fi
        changed=0
        mkdir -p "$dest/log"
        if install_file "$src/run" "$dest/run" 755; then changed=1; fi
        if install_file "$src/log/run" "$dest/log/run" 755; then
            svc_if_supervised -t "$dest/log"
            changed=1
        fi
        if [ $changed = 1 ]; then echo "$name"; fi
    done
}

# Stop a service and take it out of /service (daemontools' way: down, move aside, exit).
remove_service() {
    local name=$1 dest=$ROOT/service/$1 aside supervised=0 i=0
    [ -d "$dest" ] || return 0
    if is_supervised "$dest"; then supervised=1; fi
    svc_if_supervised -d "$dest"
    svc_if_supervised -d "$dest/log"
    aside=$ROOT/service/.$name.removed
    rm -rf "$aside"
    mv "$dest" "$aside"
    if [ $supervised = 1 ]; then
        "$SVC" -dx "$aside" "$aside/log" 2>/dev/null || true
        # supervise exits once its service is down; wait for that before removing its directory
        while [ $i -lt 50 ] && { is_supervised "$aside" || is_supervised "$aside/log"; }; do
            sleep 0.1
            i=$((i + 1))
        done
    fi
    rm -rf "$aside"
}

# Restart the GUI: its daemontools service is /service/start-gui on machines whose config sets
# START_GUI = "start-gui" (Cerbo GX "einstein", Ekrano, Raspberry Pi 5, am62xx: meta-bsp/conf/
# machine/*.conf in meta-victronenergy) and /service/gui elsewhere: restart whichever exists.
restart_gui() {
    local name
    for name in start-gui gui; do
        if [ -d "$ROOT/service/$name" ]; then
            svc_if_supervised -t "$ROOT/service/$name"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# Classic gui (gui-v1) menu entry

classic_gui_dir() { echo "$ROOT/opt/victronenergy/gui/qml"; }

# classic_gui_apply: patch (again). Prints "changed"/"unchanged"; non-zero on failure.
# The rootfs holding it is read-only on a GX: classic_gui.py makes it writable with Victron's
# remount-rw.sh only while it writes, verifies, and leaves it read-only again.
classic_gui_apply() {
    "$PYTHON" "$APP/install/classic_gui.py" apply --gui "$(classic_gui_dir)" \
        --source "$APP/gui-v1" --state "$APP/conf/classic-gui" --root "${ROOT:-/}"
}

classic_gui_restore() {
    "$PYTHON" "$APP/install/classic_gui.py" restore --gui "$(classic_gui_dir)" \
        --state "$APP/conf/classic-gui" --root "${ROOT:-/}"
}

# ---------------------------------------------------------------------------------------------
# CAN port of the Sunny Island

# A port Venus does not manage (no profile setting) gets its bitrate set at every boot.
can_link_setup() {
    local port=$1 bitrate=$2
    command -v ip >/dev/null 2>&1 || { warn "no 'ip' command: cannot set up $port"; return 1; }
    ip link set "$port" down 2>/dev/null || true
    ip link set "$port" type can bitrate "$bitrate" && ip link set "$port" up
}
