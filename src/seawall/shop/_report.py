"""The demo's closing report: what happened, and whether every invariant held."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from seawall.shop.logic import ShopSnapshot, check_invariants

__all__ = ["ShopReport", "snapshot_from_services", "percentile"]


def percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0.5: the median) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def snapshot_from_services(parts: Mapping[str, Any]) -> ShopSnapshot:
    """A :class:`ShopSnapshot` from the services' ``GET /snapshot`` answers."""
    orders = parts.get("orders") or {}
    return ShopSnapshot(
        orders=orders.get("records", {}),
        inventory=(parts.get("inventory") or {}).get("records", {}),
        payments=(parts.get("payments") or {}).get("records", {}),
        shipping=(parts.get("shipping") or {}).get("records", {}),
        read_model=orders.get("read_model", {}),
        events=orders.get("events", []),
    )


@dataclass
class ShopReport:
    """Figures of one run of the shop and the invariants' verdict."""

    engine: str
    chaos: str
    orders_requested: int
    clients: int
    orders_accepted: int = 0
    confirmed: int = 0
    compensated: int = 0
    still_running: int = 0
    abandoned: int = 0
    """Orders the load driver gave up on (no answer in time)."""
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    counters: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    restarts: int = 0
    problems: list[str] = field(default_factory=list)
    checked: bool = False
    """Whether the invariants were checked (False when the services could not be read)."""
    interrupted: bool = False
    data: str = ""
    """The data folder when the user chose one (its databases and service logs stay)."""

    @property
    def orders_per_second(self) -> float:
        """Orders that reached an end (confirmed or compensated) per second of load."""
        done = self.confirmed + self.compensated
        return done / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when the invariants were checked, all hold and no order is left running."""
        return self.checked and not self.problems and self.still_running == 0

    def exit_code(self) -> int:
        """0 when everything held; 1 when an invariant failed; 130 after Ctrl-C."""
        if self.interrupted:
            return 130
        return 0 if self.ok else 1

    def apply_snapshot(self, snapshot: ShopSnapshot) -> None:
        """Take the final counts from ``snapshot`` and check every invariant on it."""
        states = snapshot.orders_by_state()
        self.orders_accepted = sum(states.values())
        self.confirmed = states.get("confirmed", 0)
        self.compensated = states.get("compensated", 0)
        self.still_running = states.get("pending", 0)
        self.problems = check_invariants(snapshot)
        self.checked = True

    def to_json(self) -> dict[str, Any]:
        """The report as JSON (latencies summarised)."""
        data = asdict(self)
        del data["latencies"]
        data.update(
            ok=self.ok,
            orders_per_second=round(self.orders_per_second, 2),
            p50_ms=round(percentile(self.latencies, 0.5) * 1000, 1),
            p99_ms=round(percentile(self.latencies, 0.99) * 1000, 1),
        )
        return data

    def dump(self, path: str) -> None:
        """Write :meth:`to_json` to ``path``."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_json(), file, indent=2, sort_keys=True)

    def table(self) -> Table:
        """The report as a rich table."""
        counter = self.counters.get
        title = f"seawall shop on {self.engine}, chaos {self.chaos}"
        if self.interrupted:
            title += " (interrupted)"
        table = Table(title=title, show_header=False)
        table.add_column("what")
        table.add_column("count", justify="right")
        rows = [
            ("orders requested", f"{self.orders_requested:,} by {self.clients} clients"),
            ("orders accepted", f"{self.orders_accepted:,}"),
            ("confirmed", f"{self.confirmed:,}"),
            ("compensated (stock, payment or faults)", f"{self.compensated:,}"),
            ("still running", f"{self.still_running:,}"),
            ("throughput", f"{self.orders_per_second:,.1f} orders/s"),
            ("latency p50 / p99", self._latency()),
            (
                "retries (saga calls / clients)",
                f"{counter('retries', 0):,} / {counter('client_retries', 0):,}",
            ),
            ("breaker trips", f"{counter('breaker_trips', 0):,}"),
            ("messages redelivered", f"{counter('redelivered', 0):,}"),
            ("messages deduplicated", f"{counter('deduplicated', 0):,}"),
            ("idempotent replays (payments)", f"{counter('replayed', 0):,}"),
            ("rate limited (429)", f"{counter('rate_limited', 0):,}"),
            (
                "faults injected: errors / duplicates / delays",
                f"{counter('injected_errors', 0):,} / {counter('duplicated', 0):,} / "
                f"{counter('delayed', 0):,}",
            ),
            ("services killed (SIGKILL) / restarted", f"{self.kills} / {self.restarts}"),
        ]
        if self.abandoned:
            rows.insert(5, ("abandoned by clients", f"{self.abandoned:,}"))
        for label, value in rows:
            table.add_row(label, value)
        return table

    def _latency(self) -> str:
        p50 = percentile(self.latencies, 0.5) * 1000
        p99 = percentile(self.latencies, 0.99) * 1000
        return f"{p50:,.0f} ms / {p99:,.0f} ms"

    def print(self, console: Console) -> None:
        """Print the table and the invariants' verdict."""
        console.print(self.table())
        if not self.checked:
            console.print("[red]invariants not checked[/]: the services could not be read")
        elif self.ok:
            console.print(
                "[green]all invariants hold[/]: stock conserved and never negative, money "
                "charged - refunded = confirmed orders, no double charge, every confirmed "
                "order shipped once, no order running, read model = projection from scratch"
            )
        else:
            console.print(f"[red]{len(self.problems)} invariant problem(s)[/]:")
            for problem in self.problems:
                console.print(f"  - {problem}", markup=False)
            if self.still_running and not any("still running" in p for p in self.problems):
                console.print(f"  - {self.still_running} orders still running")
        if self.data:
            console.print(f"data and service logs: {self.data}", markup=False)
