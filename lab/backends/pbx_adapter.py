"""Run one emulator node: ``python -m lab.backends.pbx_adapter --config node.toml``.

XXX a thin adapter used only while ``siplab pbx`` is not registered in ``router/cli.py``; it runs
the same :func:`lab.pbx.server.serve_pbx` under ``trio.run`` and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys

import trio

from router.configfile import ConfigError


async def _main(path: str) -> None:
    from lab.pbx.config import load_config
    from lab.pbx.server import serve_pbx

    config = load_config(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_pbx, config)
        print(f"siplab pbx {config.name}: listening on {config.listen}:{config.port}", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.backends.pbx_adapter")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    try:
        trio.run(_main, args.config)
    except ConfigError as exc:
        print(f"siplab pbx: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
