#!/usr/bin/env bash
# Set up the machine if needed, then run siplab's main job on the embedded default: bring the
# default lab up (reference router, 3 Asterisk-node emulators, SQLite realtime DB, 500 users,
# queue1), find the calls-per-second knee with SIPp, and write the capacity report.
# Extra arguments go to `siplab capacity` (e.g. --scenario register, --target "cps=300,...").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out="runs/demo-$(date +%Y%m%d-%H%M%S)"
siplab capacity --quick --out "$out" --target "cps=300,users=50000,reregister=600s" "$@"
echo
echo "report:  $out/report.html"
echo "summary: $out/summary.json"
echo "ladders of failed calls: siplab ladder $out --failed"
