"""A task group whose end is bounded in time once one of its tasks has failed, and a thread
hop that survives a lost wake-up.

``asyncio.TaskGroup`` waits, after a task fails, for every other task to end on cancellation,
without a bound. A task that cannot end (after running out of memory, a wake-up it waits for
may never be scheduled: a writer was seen hung so in a Condition, benchmarks/README.md) then
holds the run forever. Here the failure is raised once the others have ended or ``grace``
seconds have passed since they were cancelled; a task still running then is left to the end
of the run (runner.py), cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

GRACE = 10.0  # seconds the other tasks get to end once one has failed (or the group is cancelled)


class TaskGroup:
    """``async with TaskGroup() as tg: tg.create_task(...)``: waits for every task; the first
    that fails cancels the others, and its error (not an ExceptionGroup) is raised once they
    have ended, or ``grace`` seconds after they were cancelled. A task cancelled from outside
    is no failure."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self._tasks: list[asyncio.Task[Any]] = []
        self._failed: list[BaseException] = []  # in the order the tasks failed

    def create_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(self._on_done)
        self._tasks.append(task)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self._failed.append(error)

    async def __aenter__(self) -> TaskGroup:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if error is None and self._tasks:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            await self._stop()
            raise
        if error is not None or self._failed:
            await self._stop()
        if error is None and self._failed:
            raise self._failed[0]

    async def _stop(self) -> None:
        """Cancel the tasks still running and wait for them, ``grace`` seconds at most."""
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self.grace)


POLL = 1.0  # seconds between checks of a thread's own future (in_thread)


async def in_thread(call: Callable[[], T]) -> T:
    """``call()`` in the default executor, as ``asyncio.to_thread``; but when the loop's
    wake-up for its end never comes (a callback lost when memory ran out: a reader was seen
    waiting so for good), its outcome is taken from the thread every ``POLL`` seconds. If we
    are cancelled the thread runs on, as with ``to_thread``."""
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()  # no callbacks: set in
    # the thread, it needs nothing of the loop

    def work() -> T:
        try:
            result = call()
        except BaseException as e:
            outcome.set_exception(e)
            raise
        outcome.set_result(result)
        return result

    loop = asyncio.get_running_loop()
    woken = loop.run_in_executor(None, contextvars.copy_context().run, work)
    while not (await asyncio.wait([woken], timeout=POLL))[0]:
        if outcome.done():  # the thread is done, its wake-up lost
            woken.cancel()
            return outcome.result()
    return woken.result()
