#!/usr/bin/env bash
# Set up the machine if needed, then run the test suite: unit and in-process tests, SIPp and
# Kamailio integration, docker-marked tests, the scenario suites against the reference router,
# the Kamailio-marked scenarios with Kamailio in the router's seat, and the asterisk-marked
# scenarios with three real Asterisk 22 containers behind the reference router, then behind
# Kamailio (the host's Kamailio as a process next to the containers).
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
"$PY" -m pytest scenarios -m asterisk
"$PY" -m pytest scenarios -m asterisk --router kamailio
