#!/bin/bash
# Installs the Debian packages CanBridge's development, tests and demo need.
# Idempotent: does nothing when everything is already installed.
set -euo pipefail

PACKAGES=(
  dbus                    # dbus-daemon for the private test / demo bus
  libdbus-1-dev           # dbus-python build
  libglib2.0-dev          # PyGObject build
  libgirepository1.0-dev  # PyGObject < 3.51 build (bookworm has no girepository-2.0)
  libcairo2-dev           # PyGObject build
  pkg-config
  python3-venv
  daemontools             # supervise, for the installer tests
  shellcheck              # installer script lint
  chromium                # real headless browser for the web tests
  chromium-driver
  libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3   # Qt offscreen (PySide6)
  fonts-dejavu-core       # readable text in screenshots
  gcc libc6-dev           # the fault tests build a small wall-clock-shifting preload library
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup-system: installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "setup-system: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
