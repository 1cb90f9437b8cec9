#!/usr/bin/env bash
# The tests, on a fresh machine: installs what the monitor's browser test needs (Chromium and
# chromedriver, Debian packages) when they are missing, then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. `bash test.sh --test process monitor::`).
set -euo pipefail
cd "$(dirname "$0")"

have_browser() {
    command -v chromedriver >/dev/null 2>&1 &&
        { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
}

if ! have_browser; then
    echo "== installing Chromium and chromedriver for the monitor's browser test"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver
fi

cargo test --workspace "$@"
