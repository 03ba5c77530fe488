"""``python -m lab.docker.provision RUN_DIR DB_URL``: the lab's provisioning as a one-shot
container, so ``docker compose up`` of a lab's ``compose.yml`` brings up a provisioned lab
(the ``provision`` service; PBX nodes wait for it to exit 0).

Reads ``RUN_DIR/topology.toml`` (written by ``siplab lab up``), waits for the DB to accept
connections (compose starts it at the same moment; no sleep-for-readiness: the connection
attempt is the check, retried until the deadline), then writes exactly what the backends write
in-process (``lab.backends.render.provision``: schema, users, router endpoint, queues,
dispatcher rows). Exit 0 on success, 1 with the reason on stderr.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m lab.docker.provision RUN_DIR DB_URL", file=sys.stderr)
        return 2
    from lab.backends.render import plan, provision
    from lab.topology import load_topology
    from router.realtime import RealtimeError, connect

    run_dir, url = Path(args[0]), args[1]
    topology = load_topology(run_dir / "topology.toml")
    deadline = time.monotonic() + 60.0
    while True:
        try:
            connect(url).close()
            break
        except RealtimeError as exc:
            if time.monotonic() > deadline:
                print(f"provision: {url}: DB not reachable in 60 s: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.2)  # polling the DB's own answer, not waiting blind
    try:
        count = provision(topology, plan(topology, run_dir, db_url=url))
    except (RealtimeError, OSError, ValueError) as exc:
        print(f"provision: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"provision: {count} users into {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
