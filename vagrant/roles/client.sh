#!/usr/bin/env bash
# client.sh — the client of a seed topology: curl and an ssh client to try the VIPs. Idempotent.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
parse_args "$@"
install_packages curl openssh-client
say "client ready: ${ADDR[*]}"
