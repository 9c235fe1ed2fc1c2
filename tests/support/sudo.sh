# Sourced by the ensure_*.sh scripts: `pick_sudo` sets SUDO to "" (root) or "sudo -n"
# (password-less sudo), or returns 1 when packages cannot be installed from here.
pick_sudo() {
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        return 1
    fi
}
