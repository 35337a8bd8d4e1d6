"""Choreographed flows beside seawall's orchestrated saga, on SQLite, in one run.

    python benchmarks/workflows_choreography.py                 # ~1 minute
    BENCH_SCALE=0.1 BENCH_REPS=3 python benchmarks/workflows_choreography.py

The same business transaction of 3 steps that return at once, two ways, each on its
own SQLite file (WAL, ``synchronous=FULL`` for what must survive a power cut):

* **choreography**: a start event on a SQLite topic; three participants (three consumer
  groups) each react to the previous event and emit the next; a tracker (a fourth
  group) records every event and derives the status. Each participant handles an event
  in one transaction (inbox mark, emitted event, ack), so the flow takes effect exactly
  once. Measured "in flight": n flows started, then every runner drained round-robin
  from one thread until all are completed (the tracker says so); and "one at a time".
* **orchestration**: ``SagaOrchestrator.run`` of a 3-step saga on a SQLite saga log
  (the numbers of ``benchmarks/workflows.py``), one after another.

Both are seawall ("seawall" is the choreography); the ratio is what choreography's
decoupling costs on one machine: a flow is four published events, three handling
transactions and four tracker records (plus the receives), against the saga's 4 commits.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Case, dump_json, measure, ops_for, print_table, sync_timer

FLOWS = ops_for(200)
IN_FLIGHT = "3-step flow, n in flight, SQLite"
ONE_AT_A_TIME = "3-step flow, one at a time, SQLite"


def _flow() -> Any:
    from seawall.workflows.choreography import Choreography, Compensation, Reaction

    flow = Choreography(
        "bench",
        [
            Reaction(
                "s1",
                on="Started",
                emits="S1Done",
                compensation=Compensation("u1", on="S2Failed", emits="S1Undone"),
            ),
            Reaction("s2", on="S1Done", emits="S2Done", fails="S2Failed"),
            Reaction("s3", on="S2Done", emits="Finished"),
        ],
        start="Started",
        completed="Finished",
    )
    flow.on("Started")(lambda event, emit: emit("S1Done", 1))
    flow.on("S1Done")(lambda event, emit: emit("S2Done", event.data + 1))
    flow.on("S2Done")(lambda event, emit: emit("Finished", event.data + 1))
    flow.on("S2Failed")(lambda event, emit: emit("S1Undone"))
    return flow


def _choreography(root: Path) -> tuple[list[Case], Any]:
    import seawall
    from seawall.messaging.topic import open_topic
    from seawall.workflows.choreography import FlowStatus, Participant, Tracker

    engine = seawall.connect(f"sqlite:///{root / 'choreography.db'}")
    topic = open_topic(engine, "bench")
    flow = _flow()
    options: dict[str, Any] = {"inbox": engine, "join_topic": True, "batch": 64}
    runners = [
        Participant(flow, topic, "p1", reactions=["s1", "u1"], **options),
        Participant(flow, topic, "p2", reactions=["s2"], **options),
        Participant(flow, topic, "p3", reactions=["s3"], **options),
    ]
    tracker = Tracker(engine, [flow])
    tracker_loop = tracker.consumer(topic, batch=64)
    loops = [runner.loop for runner in runners] + [tracker_loop]

    def settle(ids: list[str]) -> None:
        for _ in range(10_000):
            moved = sum(loop.drain() for loop in loops)
            if not moved:
                break
        for correlation_id in (ids[0], ids[-1]):
            status = tracker.show(correlation_id).status
            if status is not FlowStatus.COMPLETED:
                raise RuntimeError(f"flow {correlation_id} ended {status}")

    def in_flight(n: int) -> float:
        import time

        started = time.perf_counter()
        ids = [flow.start(topic, None, correlation_id=uuid.uuid4().hex) for _ in range(n)]
        settle(ids)
        return time.perf_counter() - started

    def one() -> None:
        settle([flow.start(topic, None, correlation_id=uuid.uuid4().hex)])

    config = "3 participant groups + tracker group, inbox+emit+ack in one transaction"
    cases = [
        Case(IN_FLIGHT, "seawall", in_flight, FLOWS, config),
        Case(ONE_AT_A_TIME, "seawall", sync_timer(one), FLOWS, config),
    ]

    def close() -> None:
        for runner in runners:
            runner.close()
        tracker.close()
        topic.close()
        engine.close()

    return cases, close


def _orchestration(root: Path) -> tuple[list[Case], Any]:
    from seawall.workflows import Saga, SagaOrchestrator, SqliteSagaLog, Step

    log = SqliteSagaLog(f"sqlite:///{root / 'saga.db'}")
    saga = Saga(
        "bench",
        [
            Step("s1", lambda context: 1, lambda context: None),
            Step("s2", lambda context: context.results["s1"] + 1, lambda context: None),
            Step("s3", lambda context: context.results["s2"] + 1),
        ],
    )
    orchestrator = SagaOrchestrator(log, [saga])

    def one() -> None:
        orchestrator.run(saga)

    config = "SagaOrchestrator.run, SQLite saga log (4 commits/saga)"
    cases = [
        Case(IN_FLIGHT, "seawall saga (orchestrated)", sync_timer(one), FLOWS, config),
        Case(ONE_AT_A_TIME, "seawall saga (orchestrated)", sync_timer(one), FLOWS, config),
    ]

    def close() -> None:
        log.close()
        log.engine.close()

    return cases, close


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="seawall-choreography-") as folder:
        root = Path(folder)
        ours, close_ours = _choreography(root)
        theirs, close_theirs = _orchestration(root)
        try:
            results = measure([*ours, *theirs])
        finally:
            close_ours()
            close_theirs()
    print_table("seawall workflows: choreography beside orchestration (sagas/s)", results)
    dump_json(results)


if __name__ == "__main__":
    main()
