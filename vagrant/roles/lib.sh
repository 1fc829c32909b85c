# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables parse_args sets are read by the role scripts that source this file
# lib.sh — what the role scripts share: their arguments, finding interfaces by address, installing packages.
#
# Arguments (the Vagrantfile and the lab's tests/kernel/topology.py build them from vagrant/topology.json):
#   --addr=NET=ADDR/PREFIX   an address of this host on network NET (already configured: by Vagrant or the lab)
#   --vip=NET=ADDR           a virtual address on network NET (directors, nodes)
#   --priority=N             VRRP priority (directors, nodes)
#   --route=TO=VIA           a route to add (real servers: the client network via the floating VIP)
#   --peer-mac=MAC           the other node's MAC address (seed 000)
#   --name=NAME              this host's name (default: the host name; the lab's namespaces share the VM's)
#   --src=DIR                the ipvsd checkout to install from (default: this script's checkout)
#   --etc=DIR                where configuration files go (default /etc)
#   --run=DIR                pid files and logs when there is no systemd (default /run/ipvsd-roles)
#   --no-systemd             start the daemons directly (the lab's namespaces), not as systemd units
#   --no-install             skip package installation (the lab's set-up installs the packages)
#   --no-check               skip `ipvsd check` of the written configuration (the lab: `ipvsd run` checks it too)
set -euo pipefail

ROLES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
declare -A ADDR=() VIP=()
PRIORITY="" PEER_MAC="" ROUTE_TO="" ROUTE_VIA="" NAME=$(hostname)
SRC=$(cd "$ROLES_DIR/../.." && pwd)
ETC=/etc RUN=/run/ipvsd-roles SYSTEMD=1 INSTALL=1 CHECK=1

die() { echo "${0##*/}: $*" >&2; exit 1; }
say() { echo "${0##*/}: $*"; }

parse_args() {
    local a kv
    for a in "$@"; do
        case $a in
            --addr=*=*) kv=${a#--addr=}; ADDR[${kv%%=*}]=${kv#*=} ;;
            --vip=*=*) kv=${a#--vip=}; VIP[${kv%%=*}]=${kv#*=} ;;
            --priority=*) PRIORITY=${a#--priority=} ;;
            --route=*=*) kv=${a#--route=}; ROUTE_TO=${kv%%=*}; ROUTE_VIA=${kv#*=} ;;
            --peer-mac=*) PEER_MAC=${a#--peer-mac=} ;;
            --name=*) NAME=${a#--name=} ;;
            --src=*) SRC=${a#--src=} ;;
            --etc=*) ETC=${a#--etc=} ;;
            --run=*) RUN=${a#--run=} ;;
            --no-systemd) SYSTEMD=0 ;;
            --no-install) INSTALL=0 ;;
            --no-check) CHECK=0 ;;
            *) die "unknown argument: $a" ;;
        esac
    done
}

# iface_of ADDR[/PREFIX] -> the name of the interface that holds ADDR (interface names differ between
# VirtualBox, libvirt and the lab; addresses do not).
iface_of() {
    local want=${1%%/*} name
    name=$(ip -o -4 addr show | awk -v a="$want" '{split($4, p, "/"); if (p[1] == a) {print $2; exit}}')
    [[ -n $name ]] || die "no interface holds $want (is this the right host?)"
    echo "$name"
}

# install_packages PKG... : apt-get install what is missing, once (idempotent); skipped with --no-install.
install_packages() {
    ((INSTALL)) || return 0
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
}

# set_sysctl NAME=VALUE... : sysctl -w, quietly; namespaced knobs (net.*) apply to this network namespace.
set_sysctl() {
    local kv
    for kv in "$@"; do sysctl -qw "$kv"; done
}

# write_file PATH CONTENT : write CONTENT (plus a newline) to PATH when it differs; returns 1 when it changed.
write_file() {
    local path=$1 content=$2
    mkdir -p "$(dirname "$path")"
    if [[ -f $path && $(cat "$path") == "$content" ]]; then return 0; fi
    printf '%s\n' "$content" >"$path.tmp" && mv "$path.tmp" "$path"
    return 1
}

# ipvsd_install : ipvsd in its own virtualenv, /opt/ipvsd, from the checkout $SRC (as the README installs it).
# With --no-install, the checkout's own .venv (scripts/bootstrap) is used instead. Sets IPVSD.
ipvsd_install() {
    if ((INSTALL)); then
        [[ -x /opt/ipvsd/bin/python ]] || python3 -m venv /opt/ipvsd
        /opt/ipvsd/bin/pip install -q --disable-pip-version-check "$SRC"
        IPVSD=/opt/ipvsd/bin/ipvsd
    else
        IPVSD=$SRC/.venv/bin/ipvsd
    fi
    [[ -x $IPVSD ]] || die "ipvsd is not installed at $IPVSD"
}

# alive PIDFILE : the process named in PIDFILE runs.
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start_ipvsd : ipvsd on $ETC/ipvsd/ipvsd.toml, by the shipped systemd unit or (--no-systemd) as a plain process
# logging to $RUN/ipvsd.log; an ipvsd already running reloads instead.
start_ipvsd() {
    if ((SYSTEMD)); then
        # the unit's User=ipvsd, made as the README's install does
        id -u ipvsd >/dev/null 2>&1 || useradd --system --user-group --home-dir /var/lib/ipvsd --no-create-home \
            --shell /usr/sbin/nologin ipvsd
        install -m 0644 "$SRC/etc/ipvsd.service" /etc/systemd/system/ipvsd.service
        systemctl daemon-reload
        systemctl enable -q ipvsd
        if systemctl -q is-active ipvsd; then systemctl reload ipvsd; else systemctl start ipvsd; fi
        return
    fi
    mkdir -p "$RUN"
    if alive "$RUN/ipvsd.pid"; then
        kill -HUP "$(cat "$RUN/ipvsd.pid")"
        return
    fi
    nohup "$IPVSD" run -c "$ETC/ipvsd/ipvsd.toml" --state-dir "$RUN/state" </dev/null >>"$RUN/ipvsd.log" 2>&1 &
    echo $! >"$RUN/ipvsd.pid"
}

# start_keepalived_vrrp CHANGED : keepalived with VRRP only (its checker would program the table too), its own
# pid files; restarted when CHANGED is 1 or it is not running.
start_keepalived_vrrp() {
    local changed=$1
    if ((SYSTEMD)); then
        write_file /etc/default/keepalived 'DAEMON_ARGS="--vrrp"' || changed=1
        systemctl enable -q keepalived
        if ((changed)) || ! systemctl -q is-active keepalived; then systemctl restart keepalived; fi
        return
    fi
    mkdir -p "$RUN"
    if alive "$RUN/keepalived.pid"; then
        ((changed)) || return 0
        kill "$(cat "$RUN/keepalived.pid")"
        local i
        for ((i = 0; i < 100; i++)); do alive "$RUN/keepalived.pid" || break; sleep 0.1; done
    fi
    nohup keepalived --vrrp --dont-fork --log-console --log-detail -f "$ETC/keepalived/keepalived.conf" -p "$RUN/keepalived.pid" \
        -r "$RUN/vrrp.pid" -c "$RUN/checkers.pid" </dev/null >>"$RUN/keepalived.log" 2>&1 &
}

# check_config : `ipvsd check` of what the role wrote, so a mistake stops here (skipped with --no-check).
check_config() {
    ((CHECK)) || return 0
    "$IPVSD" check -q -c "$ETC/ipvsd/ipvsd.toml"
}
