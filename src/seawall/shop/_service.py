"""Entry point of one shop service process: ``python -m seawall.shop._service <service> <config>``.

``<config>`` is the path of the run's JSON :class:`~seawall.shop._config.ShopConfig`.
The launcher spawns one process per service and restarts a killed one with the same
command line; the process stops on SIGTERM/SIGINT or when its launcher is gone.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from seawall.shop import logic
from seawall.shop._config import ShopConfig
from seawall.shop._runtime import ServiceState, serve

__all__ = ["main"]


async def _run(service: str, config: ShopConfig) -> None:
    state = ServiceState(service, config)
    unsubscribe = state.counters.listen()
    if service == "orders":
        from seawall.shop._orders import build_orders

        app, stop = build_orders(state)
    else:
        from seawall.shop._participants import build_participant

        app, stop = build_participant(service, state)
    try:
        await serve(app, state, stop)
    finally:
        unsubscribe()


def main(argv: list[str] | None = None) -> int:
    """Run the service named in ``argv`` until told to stop; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in logic.SERVICES:
        print(
            "usage: python -m seawall.shop._service {orders|payments|inventory|shipping} CONFIG",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.WARNING, format=f"[{args[0]}] %(levelname)s %(message)s")
    config = ShopConfig.from_json(Path(args[1]).read_text())
    asyncio.run(_run(args[0], config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
