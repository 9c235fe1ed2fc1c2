#!/usr/bin/env bash
# Make sure headless Chromium exists for the dashboard's browser tests (Debian package "chromium").
#
# Playwright drives this system binary (executable_path); nothing downloads a browser. Idempotent
# and quick when Chromium is installed. Where apt is unavailable, or the install fails (or we are
# not root and sudo needs a password), it warns and exits 0: the browser tests then skip with a
# reason. Under CI (CI=true) that is an error.
set -u

give_up() {
    if [ "${CI:-}" = "true" ]; then
        echo "ensure_chromium: ERROR: $1 (CI must run the dashboard browser tests)" >&2
        exit 1
    fi
    echo "ensure_chromium: WARNING: $1; the dashboard browser tests will be skipped" >&2
    exit 0
}

found() {
    [ -x /usr/bin/chromium ]
}

if found; then
    echo "ensure_chromium: chromium present: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    give_up "apt-get is not available to install chromium"
fi

. "$(dirname "$0")/sudo.sh"
pick_sudo || give_up "not root and no password-less sudo to install chromium"

export DEBIAN_FRONTEND=noninteractive
echo "ensure_chromium: installing Debian package chromium"
install_chromium() {
    $SUDO apt-get install -y -q --no-install-recommends chromium fonts-noto-cjk >>/tmp/ensure_chromium.log 2>&1
}
: >/tmp/ensure_chromium.log
# try without refreshing the package lists first (fast when they are current), then refresh
if ! install_chromium; then
    $SUDO apt-get update -q >>/tmp/ensure_chromium.log 2>&1 || true
    install_chromium || true
fi

if found; then
    echo "ensure_chromium: installed $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
tail -n 20 /tmp/ensure_chromium.log >&2
give_up "apt-get install chromium failed (log: /tmp/ensure_chromium.log)"
