"""A PostgreSQL database as a two-phase participant: ``PREPARE TRANSACTION`` and friends.

``prepare(txid, work)`` opens a transaction on the participant's connection, runs
``work(transaction)`` (a :class:`~seawall.engines._base.Transaction`: ``execute`` the
business SQL, or pass it to seawall stores as ``transaction=``), adds a row to a small
marker table, and ends with ``PREPARE TRANSACTION 'seawall|<participant>|<txid>'``: the
work is on disk, its row locks held, and it survives a crash of the client *and* of the
server until ``COMMIT PREPARED`` or ``ROLLBACK PREPARED``. ``in_doubt`` reads
``pg_prepared_xacts``; the marker row (committed only with the work) lets ``status``
tell committed from aborted afterwards.

Table (``seawall_`` is the default ``table_prefix``): ``seawall_2pc_committed`` (gid
PRIMARY KEY, prepared_at). The server needs ``max_prepared_transactions`` > 0, checked
when the participant is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, cast

from seawall.engines._base import Transaction, engine_for
from seawall.errors import ConfigurationError
from seawall.workflows.saga._log import check_prefix
from seawall.workflows.two_phase._errors import HeuristicOutcomeError
from seawall.workflows.two_phase._model import ParticipantState, Vote, check_name
from seawall.workflows.two_phase._participant import global_id
from seawall.workflows.two_phase._pg_base import PgConnections, check_schema, qualified

if TYPE_CHECKING:
    from seawall.engines._base import Engine
    from seawall.engines.postgres import PostgresEngine

__all__ = ["PostgresParticipant"]

PostgresWork = Callable[[Transaction], object] | None
"""The work of a PostgreSQL participant: runs inside the transaction that gets prepared.

Returning :attr:`Vote.NO` refuses (the transaction rolls back); raising fails the
prepare (rolled back as well, and the coordinator aborts).
"""


class PostgresParticipant:
    """A PostgreSQL database that takes part in two-phase commit.

    ``name`` (default: the database name) identifies it in the coordinator's log and
    in prepared-transaction ids; ``lock_timeout`` (seconds) bounds how long the work
    waits for row locks, e.g. those of another prepared transaction.
    """

    kind: ClassVar[str] = "postgres"

    def __init__(
        self,
        engine: Engine | str,
        *,
        name: str | None = None,
        table_prefix: str = "seawall_",
        schema: str | None = None,
        lock_timeout: float | None = None,
        create: bool = True,
    ) -> None:
        from seawall.engines.postgres import PostgresEngine

        opened, self._owns_engine = engine_for(
            cast("PostgresEngine | str", engine),
            PostgresEngine,
            "PostgresParticipant",
            "postgresql://",
        )
        self._engine: PostgresEngine = opened
        if name is None:
            from psycopg.conninfo import conninfo_to_dict

            database = conninfo_to_dict(opened.url).get("dbname") or "postgres"
            name = str(database)
        self._name = check_name(name, "name")
        if lock_timeout is not None and (
            isinstance(lock_timeout, bool)
            or not isinstance(lock_timeout, int | float)
            or not 0 < lock_timeout < 1e6
        ):
            raise ConfigurationError(
                f"lock_timeout={lock_timeout!r} is invalid: pass None or seconds > 0"
            )
        self.lock_timeout = lock_timeout
        self.table_prefix = check_prefix(table_prefix)
        self.schema = check_schema(schema)
        self._db = PgConnections(opened)
        self.table = qualified(self.schema, f"{self.table_prefix}2pc_committed")
        self._mark = (
            f"INSERT INTO {self.table} (gid) SELECT %s"
            " WHERE pg_current_xact_id_if_assigned() IS NOT NULL"
        )
        self._status = (
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = %(gid)s"
            " AND database = current_database()) THEN 'prepared'"
            f" WHEN EXISTS (SELECT 1 FROM {self.table} WHERE gid = %(gid)s) THEN 'committed'"
            " ELSE 'aborted' END"
        )
        try:
            self._check_server()
            if create:
                self.create_tables()
        except BaseException:
            self.close()
            raise

    @property
    def name(self) -> str:
        """The participant's name."""
        return self._name

    @property
    def engine(self) -> Engine:
        """The PostgreSQL engine of the database."""
        return self._engine

    def _check_server(self) -> None:
        rows = self._db.execute("SHOW max_prepared_transactions")
        if int(rows[0][0]) <= 0:
            raise ConfigurationError(
                f"PostgreSQL at {self._engine!r} has max_prepared_transactions = 0, so it cannot "
                "PREPARE TRANSACTION; set max_prepared_transactions in postgresql.conf (at least "
                "the number of transactions you keep prepared at once) and restart the server"
            )

    def create_tables(self) -> None:
        """Create the marker table if it does not exist."""
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (gid text PRIMARY KEY,"
            " prepared_at float8 NOT NULL DEFAULT extract(epoch FROM clock_timestamp()))"
        )

    def drop_tables(self) -> None:
        """Drop the marker table (tests, teardown)."""
        self._db.execute(f"DROP TABLE IF EXISTS {self.table}")

    # ---------------------------------------------------------------- the contract

    def prepare(self, txid: str, work: PostgresWork = None) -> Vote:
        """Run ``work`` in a new transaction and ``PREPARE TRANSACTION`` it; vote.

        Work that writes nothing votes ``READ_ONLY`` (rolled back, no second phase).
        """
        if work is None:
            return Vote.READ_ONLY
        if not callable(work):
            raise ConfigurationError(
                f"the work of PostgreSQL participant {self._name!r} must be a function of a "
                f"Transaction, got {work!r}"
            )
        from psycopg import sql
        from psycopg.pq import TransactionStatus

        gid = global_id(self._name, txid)
        with self._db.using() as conn:
            conn.execute("BEGIN")
            try:
                if self.lock_timeout is not None:
                    conn.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout * 1000)}")
                answer = work(Transaction(self._engine, conn))
                if answer is Vote.NO:
                    conn.execute("ROLLBACK")
                    return Vote.NO
                if conn.execute(self._mark, (gid,)).rowcount == 0:
                    conn.execute("ROLLBACK")  # nothing written: no transaction id was assigned
                    return Vote.READ_ONLY
                conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
            except BaseException:
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
                raise
        return Vote.YES

    def commit(self, txid: str) -> None:
        """``COMMIT PREPARED``; already committed is fine, rolled back raises."""
        self._finish(txid, "COMMIT", ParticipantState.COMMITTED)

    def abort(self, txid: str) -> None:
        """``ROLLBACK PREPARED``; unknown or rolled back is fine, committed raises."""
        self._finish(txid, "ROLLBACK", ParticipantState.ABORTED)

    def _finish(self, txid: str, verb: str, wanted: ParticipantState) -> None:
        import psycopg
        from psycopg import sql

        gid = global_id(self._name, txid)
        with self._db.using() as conn:
            try:
                conn.execute(sql.SQL(verb + " PREPARED {}").format(sql.Literal(gid)))
                return
            except psycopg.errors.UndefinedObject:
                pass  # not prepared (any more): see where it ended
        found = self.status(txid)
        if found is not wanted and found is not ParticipantState.PREPARED:
            raise HeuristicOutcomeError(
                txid, self._name, "commit" if verb == "COMMIT" else "abort", found.value
            )

    def status(self, txid: str) -> ParticipantState:
        """Prepared (in ``pg_prepared_xacts``), committed (marker row) or aborted."""
        rows = self._db.execute(self._status, {"gid": global_id(self._name, txid)})
        return ParticipantState(rows[0][0])

    def in_doubt(self, prefix: str = "") -> list[str]:
        """This participant's prepared transactions in this database, ids starting with ``prefix``."""
        start = global_id(self._name, "")
        rows = self._db.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
            " AND starts_with(gid, %s) ORDER BY prepared",
            (start + prefix,),
        )
        return [str(row[0])[len(start) :] for row in rows]

    def purge(self, before: float) -> int:
        """Forget the commit markers older than ``before`` (Unix seconds); returns how many.

        Afterwards ``status`` reports those transactions as aborted: keep markers longer
        than a coordinator may take to deliver a decision.
        """
        rows = self._db.execute(
            f"WITH d AS (DELETE FROM {self.table} WHERE prepared_at < %s AND starts_with(gid, %s)"
            " RETURNING 1) SELECT count(*) FROM d",
            (before, global_id(self._name, "")),
        )
        return int(rows[0][0])

    def close(self) -> None:
        """Close the participant's connections (and the engine, if it opened it from a URL)."""
        self._db.close()
        if self._owns_engine:
            self._engine.close()

    def __repr__(self) -> str:
        return f"PostgresParticipant({self._name!r}, {self._engine!r})"
