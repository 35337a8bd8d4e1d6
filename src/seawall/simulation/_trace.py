"""The trace of a simulated run: every delivery, drop, crash, restart and decision, in order.

Each entry is one line of text (simulated time, what happened, details). The run's
identity is the SHA-256 of those lines: two runs of one seed must give the same hash,
and a replayed failure must give the hash that was printed. Lines are kept only when
asked for (``keep=True``), so a sweep over many seeds only pays for the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Trace", "TRACE_FORMAT"]

TRACE_FORMAT = "seawall-simulation-trace/1"


class Trace:
    """An append-only record of a run, hashed as it grows."""

    __slots__ = ("_clock", "_hash", "counts", "keep", "lines")

    def __init__(self, now: Any, *, keep: bool = False) -> None:
        self._clock = now
        self._hash = hashlib.sha256()
        self.keep = keep
        self.lines: list[str] = []
        self.counts: Counter[str] = Counter()
        """How many entries of each kind (``deliver``, ``drop``, ``crash``, ...)."""

    def record(self, kind: str, detail: str) -> None:
        """Append one entry of ``kind`` at the current simulated time."""
        line = f"{self._clock():.6f} {kind} {detail}"
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.counts[kind] += 1
        if self.keep:
            self.lines.append(line)

    @property
    def digest(self) -> str:
        """The SHA-256 (hex) of every line so far: the run's identity."""
        return self._hash.hexdigest()

    def write(self, path: str | Path, header: Mapping[str, Any]) -> Path:
        """Write a header line (the run's parameters, as JSON) and every kept line to ``path``."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        head = dict(header)
        head["format"] = TRACE_FORMAT
        head["trace_hash"] = self.digest
        with target.open("w", encoding="utf-8") as file:
            file.write("# " + json.dumps(head, sort_keys=True) + "\n")
            for line in self.lines:
                file.write(line + "\n")
        return target

    @staticmethod
    def read_header(path: str | Path) -> dict[str, Any]:
        """The parameters stored in a trace file's first line (to replay it)."""
        with Path(path).open(encoding="utf-8") as file:
            first = file.readline()
        if not first.startswith("# "):
            raise ValueError(f"{path} is not a seawall simulation trace (no header line)")
        header = json.loads(first[2:])
        if not isinstance(header, dict) or header.get("format") != TRACE_FORMAT:
            raise ValueError(f"{path} is not a {TRACE_FORMAT} file")
        return header

    def __repr__(self) -> str:
        return f"Trace({sum(self.counts.values())} entries, hash={self.digest[:12]})"
