"""The public surface is exactly what ``__all__`` says, and every name resolves."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = [
    "seawall",
    "seawall.resilience",
    "seawall.messaging",
    "seawall.eventsourcing",
    "seawall.workflows",
    "seawall.workflows.two_phase",
    "seawall.workflows.three_phase",
    "seawall.workflows.choreography",
    "seawall.simulation",
    "seawall.messaging.request_reply",
    "seawall.messaging.claim_check",
    "seawall.messaging.topic",
    "seawall.coordination",
    "seawall.idempotency",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_unique_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "a name is listed twice"
    for public in exported:
        assert getattr(module, public) is not None, public


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_class_or_function_defined_in_the_package_is_exported(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    for attribute, value in vars(module).items():
        if attribute.startswith("_") or inspect.ismodule(value):
            continue
        if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__.startswith(
            "seawall"
        ):
            assert attribute in exported, f"{name}.{attribute} is public but not in __all__"


def test_the_top_level_package_keeps_its_promises() -> None:
    import seawall

    assert {"connect", "ManualClock", "SeawallError", "RejectedError", "Engine"} <= set(
        seawall.__all__
    )
    with pytest.raises(AttributeError):
        seawall.no_such_name  # type: ignore[attr-defined]  # noqa: B018
