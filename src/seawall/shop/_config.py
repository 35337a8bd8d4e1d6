"""How one run of the shop is wired: engines, ports, queue names; shared by launcher and services."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

__all__ = ["CHAOS_LEVELS", "ChaosSettings", "ShopConfig"]

EngineKind = Literal["sqlite", "postgres"]

SHIPPING_EVENTS = "shipping-events"
"""Queue: order confirmations, from the orders outbox to shipping."""
INVENTORY_COMMANDS = "inventory-commands"
"""Queue: "ship these units" commands, from the shipping outbox to inventory."""
QUEUES = (SHIPPING_EVENTS, INVENTORY_COMMANDS)


@dataclass(frozen=True)
class ChaosSettings:
    """Faults a service injects, set by the launcher through ``POST /chaos``."""

    latency: float = 0.0
    """Most seconds of added latency on an affected request."""
    latency_rate: float = 0.0
    """Share of requests that get added latency."""
    error_rate: float = 0.0
    """Share of requests answered 503 (half before the handler ran, half after it)."""
    duplicate_rate: float = 0.0
    """Share of published messages sent twice (the inbox drops the copy)."""
    delay_rate: float = 0.0
    """Share of published messages delivered late."""
    delay: float = 0.0
    """Most seconds a delayed message waits."""

    def to_json(self) -> dict[str, float]:
        """The settings as a JSON object."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChaosSettings:
        """Settings from :meth:`to_json` (unknown fields ignored)."""
        names = cls.__dataclass_fields__
        return cls(**{key: float(value) for key, value in data.items() if key in names})


CHAOS_LEVELS: dict[str, tuple[ChaosSettings, float]] = {
    "none": (ChaosSettings(), 0.0),
    "mild": (
        ChaosSettings(
            latency=0.02,
            latency_rate=0.1,
            error_rate=0.03,
            duplicate_rate=0.1,
            delay_rate=0.05,
            delay=0.3,
        ),
        4.0,
    ),
    "wild": (
        ChaosSettings(
            latency=0.06,
            latency_rate=0.2,
            error_rate=0.08,
            duplicate_rate=0.25,
            delay_rate=0.1,
            delay=0.6,
        ),
        2.0,
    ),
}
"""Each level: the services' faults and the seconds between two SIGKILLs (0: none)."""


@dataclass(frozen=True)
class ShopConfig:
    """Everything a service process needs to find its database, its peers and its queues."""

    run_id: str
    engine: EngineKind
    data_dir: str
    ports: dict[str, int]
    postgres_url: str | None = None
    redis_url: str | None = None
    launcher_pid: int = 0
    client_rate: float = 50.0
    """Orders per second each client may place (the orders API's rate limit)."""
    client_burst: int = 20
    lease: float = 4.0
    """Seconds a saga stays its orchestrator's without progress (a killed one's are then resumed)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def database_url(self, service: str) -> str:
        """The URL of ``service``'s own database (a file on SQLite, a schema on PostgreSQL)."""
        if self.engine == "postgres":
            if self.postgres_url is None:
                raise ValueError("engine postgres needs postgres_url")
            separator = "&" if "?" in self.postgres_url else "?"
            option = quote(f"-csearch_path={self.schema(service)}", safe="")
            return f"{self.postgres_url}{separator}options={option}"
        return f"sqlite:///{Path(self.data_dir, service + '.db').resolve()}"

    def schema(self, service: str) -> str:
        """The PostgreSQL schema of ``service`` in this run."""
        return f"seawall_shop_{self.run_id}_{service}"

    @property
    def queue_url(self) -> str:
        """Where the queues live: a shared SQLite file, or Redis on the scale-out path."""
        if self.engine == "postgres" and self.redis_url:
            return self.redis_url
        if self.engine == "postgres":
            return self.database_url("queues")
        return f"sqlite:///{Path(self.data_dir, 'queues.db').resolve()}"

    def queue_name(self, name: str) -> str:
        """The durable queue ``name`` of this run."""
        return f"shop-{self.run_id}-{name}"

    def service_url(self, service: str) -> str:
        """The HTTP base URL of ``service`` on the loopback interface."""
        return f"http://127.0.0.1:{self.ports[service]}"

    def to_json(self) -> str:
        """The configuration as JSON (passed to each service process)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ShopConfig:
        """A configuration from :meth:`to_json`."""
        data = json.loads(text)
        return cls(**data)
