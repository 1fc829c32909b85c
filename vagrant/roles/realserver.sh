#!/usr/bin/env bash
# realserver.sh — a seed 003 real server: nginx serving its host name as index.html (the seed's page), and the
# route back to the clients through the directors' floating address (NAT replies must return through the
# director that holds the VIP; the seed's route via lb1's own address dies with lb1). Idempotent.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_args "$@"
install_packages nginx
if [[ -n $ROUTE_TO ]]; then ip route replace "$ROUTE_TO" via "$ROUTE_VIA"; fi
if ((SYSTEMD)); then
    # The seed's page: the host name, which the seed's checks look for ("debian11" there, the name here).
    echo "$NAME" >/var/www/html/index.html
    systemctl enable --now nginx
fi
say "real server ready on ${ADDR[*]}${ROUTE_TO:+, $ROUTE_TO via $ROUTE_VIA}"
