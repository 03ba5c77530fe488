"""Benchmark: lab life-cycle times on a one-node Docker Swarm vs plain containers.

For each backend (swarm, docker): ``up`` of PostgreSQL + N PBX emulators + the reference router
(every node answering OPTIONS 200), ``kill`` + ``restart`` of pbx2, ``down``. The images must be
built (``python -m lab.docker.images emulator postgres``); they are not rebuilt here. When the
engine is not in a swarm, one is initialised on loopback and left again at the end.

Numbers only; nothing here asserts a speed.

Run: ``python -m bench.bench_swarm_lab [--pbx 3] [--net 170] [--dir runs/bench-swarm]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lab.backends import get_backend
from lab.topology import Topology


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pbx", type=int, default=3)
    ap.add_argument("--net", type=int, default=170)
    ap.add_argument("--dir", default="runs/bench-swarm")
    args = ap.parse_args()
    client = get_backend("docker").client  # type: ignore[attr-defined]
    created = client.info()["Swarm"]["LocalNodeState"] == "inactive"
    if created:
        client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    try:
        for backend in (get_backend(name, build=False) for name in ("swarm", "docker")):
            topology = Topology(net=args.net, pbx_count=args.pbx)
            t = time.monotonic()
            lab = backend.up(topology, Path(args.dir) / backend.name)
            up = time.monotonic() - t
            t = time.monotonic()
            backend.kill(lab, "pbx2")
            backend.restart(lab, "pbx2")
            restart = time.monotonic() - t
            t = time.monotonic()
            backend.down(lab)
            down = time.monotonic() - t
            print(
                f"{backend.name:<7} up {up:5.1f} s (db + {args.pbx} PBX + router)   "
                f"kill+restart pbx2 {restart:4.1f} s   down {down:4.1f} s"
            )
    finally:
        if created:
            client.swarm.leave(force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
