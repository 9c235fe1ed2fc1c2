#!/usr/bin/env bash
# Make sure the nginx binary exists for the coordinator's Fleet-API proxy (Debian package "nginx").
#
# `fedrisk server start` puts nginx in front of the SuperLink so that parties reach only the Fleet
# API; the deployment tests start it for real. Idempotent and quick when nginx is installed. Where
# apt is unavailable, or the install fails (or we are not root and sudo needs a password), it warns
# and exits 0: the proxy tests then skip with a reason. Under CI (CI=true) that is an error.
set -u

give_up() {
    if [ "${CI:-}" = "true" ]; then
        echo "ensure_nginx: ERROR: $1 (CI must run the Fleet-API proxy tests)" >&2
        exit 1
    fi
    echo "ensure_nginx: WARNING: $1; the Fleet-API proxy tests will be skipped" >&2
    exit 0
}

found() {
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
}

if found; then
    echo "ensure_nginx: nginx present: $( (command -v nginx || echo /usr/sbin/nginx) | head -n 1)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    give_up "apt-get is not available to install nginx"
fi

. "$(dirname "$0")/sudo.sh"
pick_sudo || give_up "not root and no password-less sudo to install nginx"

export DEBIAN_FRONTEND=noninteractive
echo "ensure_nginx: installing Debian package nginx"
# Debian's package starts a system nginx on port 80 where an init system runs; a policy-rc.d
# that answers 101 keeps it from starting: fedrisk runs its own nginx per workspace.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=""
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null && $SUDO chmod 755 "$POLICY" && ADDED_POLICY=1
fi
install_nginx() {
    $SUDO apt-get install -y -q --no-install-recommends nginx >>/tmp/ensure_nginx.log 2>&1
}
: >/tmp/ensure_nginx.log
# try without refreshing the package lists first (fast when they are current), then refresh
if ! install_nginx; then
    $SUDO apt-get update -q >>/tmp/ensure_nginx.log 2>&1 || true
    install_nginx || true
fi
if [ -n "$ADDED_POLICY" ]; then
    $SUDO rm -f "$POLICY"
fi

if found; then
    echo "ensure_nginx: installed $(nginx -v 2>&1)"
    exit 0
fi
tail -n 20 /tmp/ensure_nginx.log >&2
give_up "apt-get install nginx failed (log: /tmp/ensure_nginx.log)"
