#!/usr/bin/env bash
# Make sure PostgreSQL server binaries exist for the storage tests (Debian package "postgresql").
#
# Idempotent and quick when they are already installed. Where apt is unavailable it prints a
# warning and exits 0: the PostgreSQL tests then skip with a reason. Where apt exists but the
# install fails (or we are not root and sudo needs a password) it warns and exits 0 too, except
# under CI (CI=true), where that is an error: CI must run the PostgreSQL tests.
set -u

found() {
    ls /usr/lib/postgresql/*/bin/postgres /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

give_up() {
    if [ "${CI:-}" = "true" ]; then
        echo "ensure_postgres: ERROR: $1 (CI must run the PostgreSQL tests)" >&2
        exit 1
    fi
    echo "ensure_postgres: WARNING: $1; the PostgreSQL storage tests will be skipped" >&2
    exit 0
}

if found; then
    echo "ensure_postgres: PostgreSQL binaries present: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    # never an error here: the PostgreSQL tests skip (and under CI=true they fail with the reason)
    echo "ensure_postgres: WARNING: apt-get is not available to install PostgreSQL; the PostgreSQL storage tests will be skipped" >&2
    exit 0
fi

. "$(dirname "$0")/sudo.sh"
pick_sudo || give_up "not root and no password-less sudo to install PostgreSQL"

export DEBIAN_FRONTEND=noninteractive
echo "ensure_postgres: installing Debian package postgresql"
# try without refreshing the package lists first (fast when they are current), then refresh
if ! $SUDO apt-get install -y -q --no-install-recommends postgresql >/tmp/ensure_postgres.log 2>&1; then
    $SUDO apt-get update -q >>/tmp/ensure_postgres.log 2>&1 || true
    if ! $SUDO apt-get install -y -q --no-install-recommends postgresql >>/tmp/ensure_postgres.log 2>&1; then
        tail -n 20 /tmp/ensure_postgres.log >&2
        give_up "apt-get install postgresql failed (log: /tmp/ensure_postgres.log)"
    fi
fi

if found; then
    echo "ensure_postgres: installed $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
    exit 0
fi
give_up "postgresql installed but no binaries under /usr/lib/postgresql/*/bin"
