from __future__ import annotations

import pytest

from seawall import errors


def test_every_error_descends_from_the_root() -> None:
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, errors.SeawallError), name


def test_configuration_errors_are_value_errors_and_timeouts_are_timeout_errors() -> None:
    assert issubclass(errors.ConfigurationError, ValueError)
    assert issubclass(errors.TimeoutExceededError, TimeoutError)
    assert issubclass(errors.MissingExtraError, ImportError)


@pytest.mark.parametrize(
    "error",
    [
        errors.CircuitOpenError("payments", "open", retry_after=1.5),
        errors.BulkheadFullError("db", 10, 0.1),
        errors.RateLimitedError("api", "user-1", retry_after=0.25),
        errors.ConcurrencyLimitError("api", 5, 5),
    ],
)
def test_refusals_share_a_parent_and_carry_retry_after(error: errors.RejectedError) -> None:
    assert isinstance(error, errors.RejectedError)
    assert str(error)
    if isinstance(error, errors.CircuitOpenError | errors.RateLimitedError):
        assert error.retry_after is not None


def test_retry_error_carries_attempts_and_names_the_last_error() -> None:
    attempts = [
        errors.Attempt(1, 0.0, 0.1, exception=ConnectionError("refused")),
        errors.Attempt(2, 0.2, 0.1, exception=TimeoutError("slow")),
    ]
    error = errors.RetryError("payments", attempts, "attempts exhausted")
    assert error.attempts == tuple(attempts)
    assert error.last is attempts[-1]
    assert "2 attempt(s)" in str(error)
    assert "TimeoutError: slow" in str(error)
    assert attempts[0].failed


def test_missing_extra_names_the_install_command() -> None:
    error = errors.MissingExtraError("redis", "redis")
    assert "pip install 'seawall[redis]'" in str(error)
