#!/usr/bin/env python3
"""Set up seawall's development environment and run one job in it.

Needs only Python 3.11+: it creates ``.venv`` beside the project, installs the
package with its extras (again only when ``pyproject.toml`` changed), then runs

    python3 scripts/dev.py demo [ARGS...]   # the `seawall demo` command
    python3 scripts/dev.py test [ARGS...]   # ruff, mypy --strict on src/, the whole pytest suite
    python3 scripts/dev.py bench [ARGS...]  # benchmarks/resilience.py
    python3 scripts/dev.py run CMD...       # any command inside the virtualenv
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("SEAWALL_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".seawall-installed"


def _fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update((ROOT / "pyproject.toml").read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def ensure_environment() -> None:
    """Create the virtualenv and install seawall[dev] unless already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 - explains itself to an old Python
        sys.exit(f"seawall needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not (BIN / "python").exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    wanted = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("installing seawall[dev] into the virtualenv", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def run(command: list[str]) -> int:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV)
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def test(extra: list[str]) -> int:
    """The whole check a submission must pass: lint, types, tests."""
    steps = [
        ["ruff", "check", "src", "tests", "benchmarks", "scripts"],
        ["ruff", "format", "--check", "src", "tests", "benchmarks", "scripts"],
        ["mypy"],
        ["python", "-m", "pytest", *extra],
    ]
    for step in steps:
        print(f"$ {' '.join(step)}", flush=True)
        code = run(step)
        if code != 0:
            print(f"step failed (exit {code}): {' '.join(step)}", flush=True)
            return code
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0 if argv else 2
    job, extra = argv[0], argv[1:]
    ensure_environment()
    if job == "demo":
        return run(["seawall", "demo", *extra])
    if job == "test":
        return test(extra)
    if job == "bench":
        return run(["python", "benchmarks/resilience.py", *extra])
    if job == "run":
        return run(extra)
    print(f"unknown job {job!r}; choose demo, test, bench or run", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
