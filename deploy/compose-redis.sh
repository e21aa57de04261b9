#!/bin/sh
# Start Redis for the compose stack (run by the redis service as its entrypoint).
#
# The password (REDIS_PASSWORD, from the env file) becomes the `default` user's in an ACL
# file on the data volume, stored as its SHA-256 only, so it is neither on a command line
# nor in clear text on disk. The agents' users (one per node, join key and zone secret)
# are not saved there: the tower applies them again from the digests it keeps in Redis
# after a Redis restart. AOF is on: an acknowledged write survives a crash.
set -eu

: "${REDIS_PASSWORD:?set REDIS_PASSWORD in the env file (see deploy/compose.env.example)}"
data=${REDIS_DATA_DIR:-/data}
acl=$data/users.acl
umask 077
touch "$acl"
digest=$(printf '%s' "$REDIS_PASSWORD" | sha256sum | cut -d' ' -f1)
{ grep -v '^user default ' "$acl" || true; echo "user default on #$digest ~* &* +@all"; } > "$acl.new"
mv "$acl.new" "$acl"
# A Redis Cluster node (docker-compose.cluster.yml): its port, and the password its
# replica side logs in to its primary with, in a config file of mode 0600.
if [ "${REDIS_CLUSTER:-no}" = yes ]; then
    printf 'port %s\nmasteruser default\nmasterauth %s\n' "${REDIS_PORT:-6379}" \
        "$REDIS_PASSWORD" > "$data/cluster.conf"
    set -- "$data/cluster.conf" "$@"
fi
unset REDIS_PASSWORD digest

# The image's own entrypoint hands /data to the redis user and drops root.
exec docker-entrypoint.sh redis-server "$@" --dir "$data" --aclfile "$acl" \
    --appendonly yes --appendfsync always --loglevel notice
