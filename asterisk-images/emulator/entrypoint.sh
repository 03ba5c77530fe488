#!/bin/sh
# Entrypoint of the siplab emulator image.
#
#   (no arguments) / pbx      run `siplab pbx --config /etc/siplab/node.toml`; when that file does
#                             not exist it is rendered from the environment:
#                               SIPLAB_NODE_NAME  node name (default pbx1)
#                               SIPLAB_BIND       address to bind (default 127.0.0.11)
#                               SIPLAB_PORT       SIP port (default 5060)
#                               SIPLAB_DB_URL     realtime DB URL (required)
#                               SIPLAB_ROUTER     router address(es), comma-separated
#                               SIPLAB_EVENTS     events.jsonl path (default: none)
#                               SIPLAB_TIME_SCALE duration multiplier (default 1.0)
#                               SIPLAB_INIT_DB    1 (default): create the realtime schema if
#                                                 missing and upsert the `router` endpoint
#                                                 (no auth, identified by the first router
#                                                 address), as `siplab lab up` provisions it;
#                                                 safe on a provisioned DB. 0: leave the DB be
#   pbx --config FILE ...     run siplab with these arguments as given
#   python ARGS...            the image's Python (e.g. `python -m lab.faults --config f.toml`)
#   anything else             `siplab ARGS...` (e.g. `router --config router.toml`)
set -eu
CONFIG="${SIPLAB_CONFIG:-/etc/siplab/node.toml}"

if [ "$#" -eq 0 ] || { [ "$#" -eq 1 ] && [ "$1" = pbx ]; }; then
    if [ ! -f "$CONFIG" ]; then
        CONFIG=/tmp/siplab-node.toml
        /opt/siplab/bin/python - "$CONFIG" <<'PY'
import json, os, sys

env = os.environ
db = env.get("SIPLAB_DB_URL", "")
if not db:
    sys.exit("siplab-entrypoint: no /etc/siplab/node.toml and SIPLAB_DB_URL is not set")
routers = [r.strip() for r in env.get("SIPLAB_ROUTER", "").split(",") if r.strip()]
lines = [
    f"name = {json.dumps(env.get('SIPLAB_NODE_NAME', 'pbx1'))}",
    f"listen = {json.dumps(env.get('SIPLAB_BIND', '127.0.0.11'))}",
    f"port = {int(env.get('SIPLAB_PORT', '5060'))}",
    f"db = {json.dumps(db)}",
    f"routers = {json.dumps(routers)}",
    f"events = {json.dumps(env.get('SIPLAB_EVENTS', ''))}",
    f"time_scale = {float(env.get('SIPLAB_TIME_SCALE', '1.0'))!r}",
]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
if env.get("SIPLAB_INIT_DB", "1") == "1":
    from router.realtime import RealtimeError, connect

    try:
        store = connect(db)
        try:
            store.init_schema()
            if routers:
                store.provision_router_endpoint(routers[0], contact=f"sip:{routers[0]}:5060")
        finally:
            store.close()
    except RealtimeError as exc:
        sys.exit(f"siplab-entrypoint: {db}: {exc}")
PY
    fi
    exec siplab pbx --config "$CONFIG"
fi
if [ "$1" = python ]; then
    shift
    exec /opt/siplab/bin/python "$@"
fi
exec siplab "$@"
