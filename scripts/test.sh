#!/usr/bin/env bash
# Set up the machine if needed, then run the default test suite (unit, in-process, SIPp and
# Kamailio integration, scenarios). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
