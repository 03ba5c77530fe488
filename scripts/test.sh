#!/usr/bin/env bash
# Set up the machine if needed, then run the test suite: unit and in-process tests, SIPp and
# Kamailio integration, docker-marked tests, the scenario suites against the reference router,
# and the Kamailio-marked scenarios with Kamailio in the router's seat (siplab's cfg and two
# example user cfgs).
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
