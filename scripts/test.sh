#!/usr/bin/env bash
# Set up the machine if needed, then run the test suite: unit and in-process tests, SIPp and
# Kamailio integration, docker-marked tests, the scenario suites against the reference router,
# the Kamailio-marked scenarios with Kamailio in the router's seat (siplab's cfg, two example
# user cfgs, Kamailio 6.0 in a container), and the asterisk-marked scenarios with three real
# Asterisk 22 containers behind the reference router, then behind Kamailio (the host's Kamailio
# as a process next to the containers).
# With arguments, runs just `pytest ARGS` (e.g. `bash scripts/test.sh tests/sip -q`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
if [ $# -gt 0 ]; then
  exec "$PY" -m pytest "$@"
fi
"$PY" -m pytest
"$PY" -m pytest scenarios -m kamailio --router kamailio
# Users' own kamailio.cfg (docs/kamailio-contract.md): one without auth, one hashing over the
# Call-ID; scenarios a cfg does not support are skipped with the reason (router_needs).
for cfg in examples/kamailio/noauth.cfg examples/kamailio/hash-callid.cfg; do
  "$PY" -m pytest scenarios -m kamailio --router kamailio --router-config "$cfg"
done
# Kamailio 6.0 (Debian trixie's package) in a container: its image is built once from the
# debootstrapped trixie base (cached in ~/.cache/siplab and by its recipe label), then the
# Kamailio-marked scenarios run with it in the router's seat. Needs the Docker engine: required
# in CI (SIPLAB_REQUIRE_DOCKER=1 / CI=true), skipped with a message elsewhere when it is missing.
if "$PY" -c 'import sys; from lab.docker.base_image import ensure_dockerd; ensure_dockerd()' 2>/dev/null \
   || [ "${SIPLAB_REQUIRE_DOCKER:-0}" = 1 ] || [ "${CI:-}" = true ]; then
  "$PY" -m lab.routers.kamailio.image 6.0
  "$PY" -m pytest scenarios -m kamailio --router kamailio:6.0
else
  echo "test.sh: no Docker engine: Kamailio 6.0 scenarios not run" >&2
fi
"$PY" -m pytest scenarios -m asterisk
"$PY" -m pytest scenarios -m asterisk --router kamailio
