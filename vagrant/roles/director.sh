#!/usr/bin/env bash
# director.sh — a director of seed 003's pair: keepalived moves the VIPs (VRRP only, `keepalived --vrrp`), ipvsd
# runs the IPVS table, the connection-sync daemons and the IPVS sysctls. The configuration is the shipped
# samples (etc/ha/), with this host's interface names, router_id and priority. Idempotent: a second run rewrites
# the same files and leaves running daemons running (ipvsd reloads, keepalived restarts only if its file changed).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_args "$@"
[[ -n ${ADDR[ext]:-} && -n ${ADDR[int]:-} && -n $PRIORITY ]] || die "needs --addr=ext=…, --addr=int=… and --priority=…"

install_packages keepalived ipvsadm python3-venv
ipvsd_install
EXT_IF=$(iface_of "${ADDR[ext]}")
INT_IF=$(iface_of "${ADDR[int]}")
# NAT: the director forwards between the clients' side and the real servers' side.
set_sysctl net.ipv4.ip_forward=1

# The samples name the seed's interfaces (ens3 clients' side, ens4 real servers' side).
keepalived_conf=$(sed -E -e "s/^(\s*interface) ens3$/\1 $EXT_IF/" -e "s/^(\s*interface) ens4$/\1 $INT_IF/" \
    -e "s/^(\s*router_id) .*/\1 $NAME/" -e "s/^(\s*priority) [0-9]+$/\1 $PRIORITY/" "$SRC/etc/ha/keepalived-lb1.conf")
ipvsd_conf=$(sed -E -e "s/^(interface = )\"ens4\"/\1\"$INT_IF\"/" "$SRC/etc/ha/ipvsd.toml")
write_file "$ETC/ipvsd/ipvsd.toml" "$ipvsd_conf" || true
keepalived_changed=0
write_file "$ETC/keepalived/keepalived.conf" "$keepalived_conf" || keepalived_changed=1
check_config

start_ipvsd
start_keepalived_vrrp "$keepalived_changed"
say "director $NAME ready: clients' side $EXT_IF ${ADDR[ext]}, servers' side $INT_IF ${ADDR[int]}, priority $PRIORITY"
