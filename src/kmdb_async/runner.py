"""Running one command's coroutine on uvloop, with an end bounded in time.

``asyncio.run`` (and ``uvloop.run``) end a run by cancelling the tasks left and waiting for
every one of them, then for the default executor's threads, without a bound. After running
out of memory that wait can be endless: an allocation that fails inside the event loop's own
machinery (a task's wake-up that is never scheduled, a callback lost) leaves a task that no
cancellation reaches, and a cron import hung 746 s in that wait (benchmarks/README.md). Here:

- a MemoryError that the loop would only log (raised in one of its callbacks) stops the run;
- from the first task that ends out of memory, the run has ``UNWIND_GRACE`` seconds to finish
  its own cleanup (close connections, which rolls back what is uncommitted; release the
  database's lock), then the loop is stopped;
- the tasks left are cancelled and given ``LEFTOVER_GRACE`` seconds; those that do not end are
  abandoned with the loop (quietly: a task cut off there holds nothing the guarantees need);
- the default executor's queued work is dropped, and its threads are not waited for here (a
  thread only ever reads a file or runs a SQLite statement, each of which ends by itself).

Address space is kept in reserve (``RESERVE``, mapped but never touched, so it costs no
memory) and given back at the first out-of-memory error, so that the cleanup and the last
message have room.
"""

from __future__ import annotations

import asyncio
import mmap
import os
from collections.abc import Awaitable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import uvloop

from .errors import out_of_memory

T = TypeVar("T")

UNWIND_GRACE = 20.0  # seconds: after running out of memory, the run's own cleanup (the lock's
# release alone may take serverlock.RELEASE_TIMEOUT)
LEFTOVER_GRACE = 5.0  # seconds: tasks still there at the end, once cancelled
RESERVE = 16 << 20  # bytes of address space held back for the cleanup after running out


class _Fatal:
    """What the loop learnt of running out of memory, and the reserve it gives back then."""

    def __init__(self, loop: asyncio.AbstractEventLoop, unwind: float) -> None:
        self.loop, self.unwind = loop, unwind
        self.error: BaseException | None = None  # a MemoryError only the loop saw
        self.seen = False
        try:
            self._reserve: mmap.mmap | None = mmap.mmap(-1, RESERVE)
        except (OSError, ValueError):  # no room even for that: go without
            self._reserve = None

    def ran_out(self) -> None:
        """Out of memory somewhere: free the reserve, and give the run ``unwind`` seconds."""
        if self.seen:
            return
        self.seen = True
        self.release()
        self.loop.call_later(self.unwind, self.loop.stop)

    def release(self) -> None:
        if self._reserve is not None:
            self._reserve.close()
            self._reserve = None

    def on_task_done(self, task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and out_of_memory(task.exception()):
            self.ran_out()

    def on_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: out of memory in a callback stops the run at once
        (whatever waited on that callback would wait forever)."""
        error = context.get("exception")
        if isinstance(error, MemoryError):
            self.error = self.error or error
            self.ran_out()
            loop.stop()
        else:
            loop.default_exception_handler(context)

    def task_factory(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                     **options: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **options)  # options: context (eager_start, 3.13)
        task.add_done_callback(self.on_task_done)  # added first: runs before a TaskGroup's
        return task


def run(main: Coroutine[Any, Any, T], unwind: float = UNWIND_GRACE,
        leftover: float = LEFTOVER_GRACE) -> T:
    """Run ``main`` on a new uvloop loop and return its result or raise its error; the run
    ends within about ``unwind + leftover`` seconds of running out of memory."""
    loop = uvloop.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="kmdb-async")
    loop.set_default_executor(executor)
    fatal = _Fatal(loop, unwind)
    loop.set_exception_handler(fatal.on_error)
    loop.set_task_factory(fatal.task_factory)  # type: ignore[arg-type]
    asyncio.set_event_loop(loop)
    try:
        task = loop.create_task(main)
        try:
            return loop.run_until_complete(task)
        except RuntimeError:
            if not task.done():  # the loop was stopped: out of memory
                raise fatal.error or MemoryError() from None
            raise
    finally:
        try:
            _shutdown(loop, leftover)
        finally:
            fatal.release()
            executor.shutdown(wait=False, cancel_futures=True)
            asyncio.set_event_loop(None)
            loop.close()


def _shutdown(loop: asyncio.AbstractEventLoop, leftover: float) -> None:
    """Cancel the tasks left and give them ``leftover`` seconds; then the async generators'
    cleanup, as long again. Nothing here waits longer, whatever a task does."""
    quiet = not os.environ.get("KMDB_DEBUG")  # the error that ended the run is said once
    if quiet:
        loop.set_exception_handler(lambda _loop, _context: None)
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        _wait(loop, asyncio.wait(tasks), leftover)
    _wait(loop, loop.shutdown_asyncgens(), leftover)


def _wait(loop: asyncio.AbstractEventLoop, work: Awaitable[Any], timeout: float) -> None:
    """Run the loop until ``work`` is done or ``timeout`` seconds have passed."""
    task = asyncio.ensure_future(work, loop=loop)
    try:
        loop.run_until_complete(asyncio.wait([task], timeout=timeout))
    except (Exception, asyncio.CancelledError):  # stopped, or out of memory again: go on
        pass
    if not task.done():
        task.cancel()
