#!/usr/bin/env bash
# The tests, on a fresh machine: installs what the monitor's browser test and the README's
# walk-through need (Chromium, chromedriver, curl: Debian packages) when they are missing, then
# runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. `bash test.sh --test process monitor::`).
set -euo pipefail
cd "$(dirname "$0")"

have_browser() {
    command -v chromedriver >/dev/null 2>&1 &&
        { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
}

missing=""
if ! have_browser; then
    missing=" chromium chromium-driver"
fi
# The README's walk-through, run as a test, ends with a curl command.
if ! command -v curl >/dev/null 2>&1; then
    missing="$missing curl"
fi
if [ -n "$missing" ]; then
    echo "== installing$missing for the monitor's browser test and the README's walk-through"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi

cargo test --workspace "$@"
