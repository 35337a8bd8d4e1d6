"""The tracker's sans-I/O core: fold one business transaction's events into its state.

:func:`fold` takes the state so far and the type of the next event and returns the new
state; no clock, no store. :func:`is_stalled` judges, given the time, whether an
unfinished transaction has waited too long for its next event. The tracker runs both
inside its store's transaction; tests drive them directly.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from seawall.workflows.choreography._definition import Choreography
from seawall.workflows.choreography._model import FlowState, FlowStatus

__all__ = ["fold", "is_stalled"]

MAX_ANOMALIES: Final = 20
"""Only the first anomalies are kept, so a misbehaving producer cannot grow a row forever."""

_ENDED: Final = (FlowStatus.COMPLETED, FlowStatus.COMPENSATED)


def _note(state: FlowState, text: str) -> FlowState:
    if len(state.anomalies) >= MAX_ANOMALIES:
        return state
    return dataclasses.replace(state, anomalies=(*state.anomalies, text))


def _settle(flow: Choreography, state: FlowState) -> FlowState:
    """A compensating transaction becomes compensated once nothing is owed (and it has ended)."""
    if state.status is not FlowStatus.COMPENSATING or state.owed:
        return state
    if flow.failed_events and state.terminal not in flow.failed_events:
        return state
    return dataclasses.replace(state, status=FlowStatus.COMPENSATED)


def _turn_back(flow: Choreography, state: FlowState, event: str, step: str | None) -> FlowState:
    """A failure: owe the compensation of every completed step that has one."""
    if state.status is not FlowStatus.RUNNING:
        return state
    owed = tuple(
        name
        for name in state.completed
        if name not in state.compensated and flow.compensation_of(name) is not None
    )
    reason = f"step {step!r} failed ({event})" if step is not None else f"{event} arrived"
    return dataclasses.replace(
        state,
        status=FlowStatus.COMPENSATING,
        failed_step=step,
        failure=event,
        owed=owed,
        reason=reason,
    )


def fold(flow: Choreography | None, state: FlowState | None, event: str) -> FlowState:
    """The state of a business transaction after an event of type ``event``.

    ``state`` is ``None`` before the first event. Without a definition (``flow`` is
    ``None``: the tracker does not know the flow) the transaction stays ``running``.
    Events that do not fit the definition change nothing but are noted in ``anomalies``.
    """
    state = FlowState() if state is None else state
    if flow is None:
        return state
    if state.status in _ENDED:
        return _note(state, f"{event} after the transaction was {state.status.value}")
    if state.status is FlowStatus.FAILED:
        return state
    known = False
    if event in flow.start_events:
        known = True
    step = flow.step_of.get(event)
    if step is not None:
        known = True
        if step not in state.completed:
            state = dataclasses.replace(state, completed=(*state.completed, step))
            if (
                state.status is FlowStatus.COMPENSATING
                and step not in state.compensated
                and flow.compensation_of(step) is not None
            ):
                state = dataclasses.replace(state, owed=(*state.owed, step))
        if event in flow.completed_events:
            if state.status is FlowStatus.RUNNING:
                return dataclasses.replace(state, status=FlowStatus.COMPLETED, terminal=event)
            return _note(state, f"{event} (success) arrived while {state.status.value}")
    failed = flow.failure_of.get(event)
    if failed is not None:
        known = True
        state = _turn_back(flow, state, event, failed)
    if event in flow.failed_events:
        known = True
        state = _turn_back(flow, state, event, None)
        state = dataclasses.replace(state, terminal=event)
    undone = flow.compensated_by.get(event)
    if undone is not None:
        known = True
        if state.status is FlowStatus.RUNNING:
            state = _note(state, f"{event} (compensation of {undone!r}) arrived while running")
        if undone not in state.compensated:
            state = dataclasses.replace(
                state,
                compensated=(*state.compensated, undone),
                owed=tuple(name for name in state.owed if name != undone),
            )
    broken = flow.compensation_failure_of.get(event)
    if broken is not None:
        return dataclasses.replace(
            state,
            status=FlowStatus.FAILED,
            reason=f"the compensation of step {broken!r} failed ({event}); an operator must act",
        )
    if not known:
        state = _note(state, f"{event} is not an event of flow {flow.name!r}")
    return _settle(flow, state)


def is_stalled(status: FlowStatus, last_event_at: float, now: float, stuck_after: float) -> bool:
    """True when a running or compensating transaction has had no event for ``stuck_after`` s."""
    if status not in (FlowStatus.RUNNING, FlowStatus.COMPENSATING):
        return False
    return now - last_event_at >= stuck_after
