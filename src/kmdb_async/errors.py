"""Errors of kmdb-async.

    KmdbError
    ├── TransientError   retrying may succeed (network blips, 5xx, deadlocks, lost connections)
    └── TerminalError    retrying cannot help (bad URL, missing bucket, denied, bad input in --strict)
"""

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential


class KmdbError(Exception):
    """Base of every error kmdb-async raises on purpose; its message is safe to show the user."""


class TransientError(KmdbError):
    """A failure that may go away on retry."""


class TerminalError(KmdbError):
    """A failure that retrying cannot fix; the run stops with this message."""


def retrying(attempts: int, max_wait: float) -> AsyncRetrying:
    """The one retry policy: TransientError only, exponential backoff with jitter, bounded.

    After the last try the TransientError itself is raised (not tenacity's RetryError), so the
    user sees its message.
    """
    return AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        wait=wait_random_exponential(multiplier=0.2, max=max_wait),
        stop=stop_after_attempt(max(1, attempts)),
        reraise=True,
    )


def out_of_memory(error: BaseException | None) -> bool:
    """Whether ``error`` says the process ran out of memory: a MemoryError, or a thread that
    could not start (its stack did not fit in the address space left)."""
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and str(error) == "can't start new thread")
