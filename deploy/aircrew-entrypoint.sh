#!/bin/sh
# Entrypoint of the aircrew image: make a WireGuard key on first start, then run "$@".
#
# CONTROLLER_PASSWORD_FILE (optional): a file holding the zone's agent secret, used when
# AIRCREW_CONTROLLER_PASSWORD is not set (it then reaches aircrew through the
# environment, never the command line).
set -eu

key=${AIRCREW_PRIVATE_KEY_FILE:-/etc/wireguard/private.key}
if [ ! -s "$key" ]; then
    mkdir -p "$(dirname "$key")"
    echo "aircrew-entrypoint: new WireGuard key, public key $(aircrew keygen --private-key-file "$key")"
fi
if [ -z "${AIRCREW_CONTROLLER_PASSWORD:-}" ] && [ -n "${CONTROLLER_PASSWORD_FILE:-}" ]; then
    AIRCREW_CONTROLLER_PASSWORD=$(cat "$CONTROLLER_PASSWORD_FILE")
    export AIRCREW_CONTROLLER_PASSWORD
fi
exec "$@"
