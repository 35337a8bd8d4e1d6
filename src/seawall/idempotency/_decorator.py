"""``@idempotent``: run a function once per key and return the stored result afterwards."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from seawall.errors import ConfigurationError
from seawall.idempotency._keys import IdempotencyKeys

if TYPE_CHECKING:
    from seawall.engines._base import Transaction

__all__ = ["fingerprint_of", "idempotent"]

F = TypeVar("F", bound=Callable[..., Any])


def fingerprint_of(*args: Any, **kwargs: Any) -> str:
    """A SHA-256 hex digest of the arguments (JSON, sorted keys; other types by ``repr``)."""
    text = json.dumps([args, kwargs], sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _step_context(arguments: dict[str, Any]) -> Any:
    """The saga step context when the function is a saga step (first argument has the key)."""
    first = next(iter(arguments.values()), None)
    return first if isinstance(getattr(first, "idempotency_key", None), str) else None


def _default_key(arguments: dict[str, Any]) -> str:
    context = _step_context(arguments)
    if context is None:
        raise ConfigurationError(
            "@idempotent needs key=... (a function of the call's arguments, by name, returning "
            "the key) unless the function is a saga step taking a StepContext"
        )
    key: str = context.idempotency_key
    return f"{key}:compensation" if getattr(context, "compensating", False) else key


def _default_transaction(arguments: dict[str, Any]) -> Transaction | None:
    from seawall.engines._base import Transaction

    context = _step_context(arguments)
    transaction = getattr(context, "transaction", None) if context is not None else None
    return transaction if isinstance(transaction, Transaction) else None


def _default_fingerprint(arguments: dict[str, Any]) -> str:
    return "" if _step_context(arguments) is not None else fingerprint_of(**arguments)


def idempotent(
    keys: IdempotencyKeys,
    *,
    key: Callable[..., str] | None = None,
    fingerprint: Callable[..., str] | bool = True,
    transaction: Callable[..., Transaction | None] | None = None,
) -> Callable[[F], F]:
    """Decorate a function (sync or async) so it runs once per idempotency key.

    ``key``, ``fingerprint`` and ``transaction`` functions get the call's arguments by
    name (positional ones too), e.g. ``key=lambda order_id, **_: f"charge:{order_id}"``.
    For a saga step (``fn(context)``) the default key is the step's
    ``context.idempotency_key`` (with ``:compensation`` for its compensation), and a
    ``local=True`` step's ``context.transaction`` is joined, so the result is stored in
    the same commit as the step. ``fingerprint`` (default: a hash of the arguments;
    saga steps: none) makes a reused key with other arguments raise
    :class:`IdempotencyKeyMismatchError`; pass a function for your own, or ``False``.
    A repeated call returns the stored result (decoded by the keys' codec: JSON turns
    tuples into lists). A call that raises releases the key so a retry runs again;
    one made while the first still runs raises :class:`IdempotencyConflictError`.
    """
    if not isinstance(keys, IdempotencyKeys):
        raise ConfigurationError(f"@idempotent(keys={keys!r}) needs an IdempotencyKeys object")
    key_of: Callable[[dict[str, Any]], str] = (
        _default_key if key is None else lambda arguments: key(**arguments)
    )
    transaction_of: Callable[[dict[str, Any]], Transaction | None] = (
        _default_transaction if transaction is None else lambda arguments: transaction(**arguments)
    )
    fingerprint_call: Callable[[dict[str, Any]], str]
    if fingerprint is True:
        fingerprint_call = _default_fingerprint
    elif fingerprint is False:
        fingerprint_call = lambda arguments: ""  # noqa: E731
    elif callable(fingerprint):
        custom = fingerprint
        fingerprint_call = lambda arguments: custom(**arguments)  # noqa: E731
    else:
        raise ConfigurationError(
            f"@idempotent(fingerprint={fingerprint!r}) must be True, False or a function"
        )

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        def arguments_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound.arguments

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                arguments = arguments_of(args, kwargs)
                return await keys.arun(
                    key_of(arguments),
                    lambda: fn(*args, **kwargs),
                    fingerprint=fingerprint_call(arguments),
                    transaction=transaction_of(arguments),
                )

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            arguments = arguments_of(args, kwargs)
            return keys.run(
                key_of(arguments),
                lambda: fn(*args, **kwargs),
                fingerprint=fingerprint_call(arguments),
                transaction=transaction_of(arguments),
            )

        return cast(F, wrapper)

    return decorate
