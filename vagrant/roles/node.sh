#!/usr/bin/env bash
# node.sh — a node of seed 000's two-node ssh cluster: a director and an ssh server at once. keepalived moves
# the VIP (VRRP only), ipvsd balances ssh to the VIP over both nodes by an fwmark service, and each node's sshd
# answers on 0.0.0.0. The configuration is the shipped samples (etc/seed000/, see docs/ha.md) with this host's
# interface name, router_id, priority and its peer's MAC address. Idempotent.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_args "$@"
[[ -n ${ADDR[lan]:-} && -n ${VIP[lan]:-} && -n $PRIORITY && -n $PEER_MAC ]] ||
    die "needs --addr=lan=…, --vip=lan=…, --priority=… and --peer-mac=…"

install_packages keepalived ipvsadm iptables openssh-server python3-venv
ipvsd_install
IF=$(iface_of "${ADDR[lan]}")
VIP_ADDR=${VIP[lan]}

# The VIP on lo (so the node without it on $IF still accepts what its peer forwards by direct routing), and
# the ARP settings that keep that node silent about it.
ip addr replace "$VIP_ADDR/32" dev lo
sysctl_conf=$(sed -E "s/\.enp2s0\./.$IF./" "$SRC/etc/seed000/sysctl.conf")
write_file "$ETC/sysctl.d/90-ipvs-seed000.conf" "$sysctl_conf" || true
sysctl -q -p "$ETC/sysctl.d/90-ipvs-seed000.conf"

# Mark ssh to the VIP unless it comes from the peer (its packets were balanced already); the rule is replaced,
# never added twice.
rules=$(sed -E "s/--mac-source [0-9a-fA-F:]+/--mac-source $PEER_MAC/" "$SRC/etc/seed000/iptables-ha0.rules")
while iptables -t mangle -C PREROUTING -d "$VIP_ADDR/32" -p tcp -m tcp --dport 22 -m mac ! --mac-source "$PEER_MAC" \
    -j MARK --set-mark 22 2>/dev/null; do
    iptables -t mangle -D PREROUTING -d "$VIP_ADDR/32" -p tcp -m tcp --dport 22 -m mac ! --mac-source "$PEER_MAC" \
        -j MARK --set-mark 22
done
iptables-restore --noflush <<<"$rules"

keepalived_conf=$(sed -E -e "s/^(\s*interface) enp2s0$/\1 $IF/" -e "s/^(\s*router_id) .*/\1 $NAME/" \
    -e "s/^(\s*priority) [0-9]+$/\1 $PRIORITY/" "$SRC/etc/seed000/keepalived-ha0.conf")
write_file "$ETC/ipvsd/ipvsd.toml" "$(cat "$SRC/etc/seed000/ipvsd.toml")" || true
keepalived_changed=0
write_file "$ETC/keepalived/keepalived.conf" "$keepalived_conf" || keepalived_changed=1
check_config

# sshd on every address (the seed binds it to the node's own address, which suits haproxy, not IPVS); the node's
# name in its banner shows which node answered a connection to the VIP.
if ((SYSTEMD)); then
    write_file /etc/ssh/sshd_config.d/90-ipvsd-node.conf "VersionAddendum $NAME" || sshd_changed=1
    systemctl enable -q --now ssh
    if ((${sshd_changed:-0})); then systemctl reload ssh; fi
fi
start_ipvsd
start_keepalived_vrrp "$keepalived_changed"
say "node $NAME ready: $IF ${ADDR[lan]}, VIP $VIP_ADDR, priority $PRIORITY, peer $PEER_MAC"
