# Sourced by the install scripts: `apt_install NAME PACKAGE...` installs the packages with apt-get (through sudo
# when not root), saying so on stderr; nothing when the list is empty.
apt_install() {
    local who=$1
    shift
    [ $# -gt 0 ] || return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$who: missing $* and apt-get is not available; install them" >&2
        exit 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    echo "$who: installing $*" >&2
    ${sudo[@]+"${sudo[@]}"} apt-get update -q
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}
