"""Running out of memory ends a run at once: exit 1, one line saying so, then a clean re-run.

An import runs under an address-space limit (what ``prlimit --as`` sets) a little above what
the same import needs without its one huge line, measured first in the test: decoding that
line needs more than the margin, so the run fails there, deterministically. The runner's own
bounds (runner.py) are tested apart with tasks that no cancellation reaches: asyncio.run
waited for such a task forever (a cron import hung 746 s, benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from kmdb_async import runner
from kmdb_async.cli import IMPORT_OUT_OF_MEMORY
from kmdb_async.tasks import TaskGroup, in_thread

from . import reference
from .exportgen import write_export

HUGE = 128 << 20  # bytes of the huge line's value: reading the line alone holds them
MARGIN = 64 << 20  # bytes of address space above what the import needs without it
TIMEOUT = 120  # seconds: a guard against a hang, not a timing assertion
# Runs the CLI as ``python -m kmdb_async`` does and, at exit, prints the process's peak
# address space (kB): the measurement the limit is made from.
VM_PEAK = """
import atexit, runpy, sys
def peak():
    with open("/proc/self/status") as status:
        sys.stderr.write("VmPeak " + next(l for l in status if l.startswith("VmPeak")).split()[1])
atexit.register(peak)
runpy.run_module("kmdb_async", run_name="__main__")
"""


def import_env(url: str, bulk: bool) -> dict[str, str]:
    # One file at a time and short queues: the reader reaches the huge line, late in the
    # last revision, once most batches before it have committed.
    return {**os.environ, "DATABASE_URL": url, "KMDB_BULK_LOAD": str(bulk).lower(),
            "KMDB_FILES_IN_FLIGHT": "1", "KMDB_BATCH_SIZE": "50", "KMDB_QUEUE_DEPTH": "2",
            "KMDB_PROGRESS_INTERVAL": "0"}


def vm_peak(root: Path, env: dict[str, str], cwd: Path) -> int:
    """Peak address space (bytes) of an import of ``root``, run to its end."""
    done = subprocess.run([sys.executable, "-c", VM_PEAK, "import", str(root)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.rsplit("VmPeak ", 1)[1]) * 1024


def add_huge_line(path: Path) -> None:
    """A line with one value of HUGE bytes, three quarters of the way into ``path``."""
    lines = path.read_bytes().splitlines(keepends=True)
    at = 3 * len(lines) // 4
    huge = b'{"_n":"huge","_p":"someone","_t":1325376000,"v":"%s"}\n' % (b"x" * HUGE)
    path.write_bytes(b"".join([*lines[:at], huge, *lines[at:]]))


@pytest.mark.parametrize("bulk", [False, True], ids=["inserts", "bulk-load"])
def test_an_import_out_of_memory_exits_1_with_one_line_and_the_rerun_completes(
        make_database: Any, tmp_path: Path, bulk: bool) -> None:
    root = tmp_path / "export"
    paths = write_export(root, 3000, revisions=3, seed=31)
    limit = vm_peak(root, import_env(make_database().url, bulk), tmp_path) + MARGIN
    add_huge_line(paths[-1])
    database = make_database()
    env = import_env(database.url, bulk)
    command = [sys.executable, "-m", "kmdb_async", "import", str(root)]

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    failed = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=TIMEOUT, preexec_fn=limited)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    *others, last = failed.stderr.splitlines()
    assert last == f"kmdb-async: error: {IMPORT_OUT_OF_MEMORY}"
    assert last in (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    assert all(line.startswith("kmdb-async: note: ") for line in others), failed.stderr
    events = database.query("SELECT COUNT(*) FROM events")[0][0]
    if bulk:  # all or nothing: the load was rolled back
        assert events == 0
    else:  # it failed mid-import: the batches before the huge line committed
        assert events > 0
    database.close()

    final = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert final.returncode == 0, final.stderr
    database.close()
    assert database.dump() == reference.expected(root)


# -- the runner's bounds ------------------------------------------------------------------------


def run_to_its_end(main: Callable[[], Coroutine[Any, Any, Any]]) -> BaseException | None:
    """``runner.run(main())`` with short graces in a thread; its error (None if it returned).
    Fails when the run has not ended within TIMEOUT."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            runner.run(main(), unwind=0.5, leftover=0.5)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - the outcome under test
            outcome.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the run did not end"
    return outcome[0]


async def deaf() -> None:
    """A task that no cancellation ends (as one left without its wake-up after an allocation
    failed inside the event loop)."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass


def test_a_task_left_that_ignores_cancellation_does_not_hold_the_end() -> None:
    async def main() -> None:
        asyncio.get_running_loop().create_task(deaf())
        await asyncio.sleep(0)
        raise MemoryError

    assert isinstance(run_to_its_end(main), MemoryError)


def test_out_of_memory_in_a_loop_callback_ends_the_run() -> None:
    async def main() -> None:
        def allocation_failed() -> None:
            raise MemoryError

        asyncio.get_running_loop().call_soon(allocation_failed)
        await asyncio.get_running_loop().create_future()  # its wake-up never comes

    assert isinstance(run_to_its_end(main), MemoryError)


def test_out_of_memory_in_a_task_group_whose_sibling_never_ends_ends_the_run() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise MemoryError

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:  # waits for deaf() forever
            tg.create_task(deaf())
            tg.create_task(fails())

    assert isinstance(run_to_its_end(main), MemoryError)


def test_a_task_that_fails_ends_its_group_though_a_sibling_never_ends() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("a bug in a writer")

    async def main() -> None:
        async with TaskGroup(grace=0.5) as tg:  # the pipeline's readers, resolver and writers
            tg.create_task(deaf())
            tg.create_task(fails())

    error = run_to_its_end(main)
    assert isinstance(error, ValueError) and str(error) == "a bug in a writer"


class LosingExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each call in a thread but never tells the loop that it ended (as when the
    callback that would has no memory left to run)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        super().submit(fn, *args, **kwargs)
        return concurrent.futures.Future()


def test_a_thread_whose_wake_up_is_lost_still_hands_over_its_result() -> None:
    async def main() -> int:
        asyncio.get_running_loop().set_default_executor(LosingExecutor())
        return await in_thread(lambda: 42)

    outcome: list[int] = []
    assert run_to_its_end(lambda: _keep(main(), outcome)) is None
    assert outcome == [42]


async def _keep(work: Coroutine[Any, Any, int], outcome: list[int]) -> None:
    outcome.append(await work)


def test_a_run_returns_its_result_or_raises_its_error_as_asyncio_run_does() -> None:
    async def adds() -> int:
        return await asyncio.to_thread(sum, [1, 2])

    async def fails() -> None:
        raise ValueError("bad")

    assert runner.run(adds()) == 3
    with pytest.raises(ValueError, match="bad"):
        runner.run(fails())
