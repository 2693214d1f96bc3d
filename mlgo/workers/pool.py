"""Running many ModuleTasks: a local process pool (default) or Ray, behind one interface.

A worker that dies mid-task (OOM kill, segfault in a library) must not stop the run: the local
pool is rebuilt and the lost tasks are retried once; a task that kills its worker twice is
reported as a failed module."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from mlgo.workers.tasks import ModuleOutcome, ModuleTask, run_module
from mlgo_base.errors import MlgoError

log = logging.getLogger(__name__)


class WorkerPool(Protocol):
    def run(self, tasks: Sequence[ModuleTask]) -> Iterator[ModuleOutcome]:
        """Outcomes in completion order; exactly one per task."""
        ...

    def close(self) -> None: ...


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: leave when the trainer is gone (e.g. kill -9), instead of idling as
    an orphan. The worker's compilers die with it (PR_SET_PDEATHSIG, see interactive.py)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        from mlgo.compiler.interactive import remove_all_workdirs

        remove_all_workdirs()  # os._exit runs no cleanup; the compilers die with us
        os._exit(1)

    threading.Thread(target=watch, name="mlgo-parent-watch", daemon=True).start()


class LocalPool:
    """A process pool of `workers` processes (spawned, so no parent state such as TensorFlow
    leaks into workers)."""

    def __init__(self, workers: int | None = None, task_fn: Callable[[ModuleTask], ModuleOutcome] = run_module) -> None:
        if workers is not None and workers < 1:
            # The submit loop below would never run: refuse instead of spinning for ever.
            raise MlgoError(f"local pool: workers must be at least 1, not {workers}")
        self.workers = workers or max(1, (os.cpu_count() or 2))
        self._task_fn = task_fn
        self._ctx = multiprocessing.get_context("spawn")
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=self._ctx,
                                                 initializer=_exit_with_parent,
                                                 initargs=(os.getpid(),))
        return self._executor

    def run(self, tasks: Sequence[ModuleTask]) -> Iterator[ModuleOutcome]:
        queue = list(range(len(tasks)))
        suspects: list[int] = []  # lost when a worker died: rerun alone, so blame is certain
        inflight: dict[Future, int] = {}
        solo: int | None = None
        while queue or suspects or inflight:
            if not inflight:
                solo = suspects.pop(0) if suspects else None
                if solo is not None:
                    inflight[self._pool().submit(self._task_fn, tasks[solo])] = solo
            if solo is None:
                while queue and not suspects and len(inflight) < 2 * self.workers:
                    i = queue.pop(0)
                    inflight[self._pool().submit(self._task_fn, tasks[i])] = i
            if not inflight:
                continue
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                i = inflight.pop(fut)
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    broken = True
                    if i == solo:
                        yield ModuleOutcome(tasks[i].module.name, False,
                                            error="worker process died while compiling this "
                                            "module (twice, the second time alone)", tag=tasks[i].tag)
                    else:
                        suspects.append(i)
            if broken:
                suspects.extend(inflight.values())
                inflight.clear()
                log.warning("a worker process died; restarting the pool and rerunning %d "
                            "task(s) one at a time", len(suspects))
                self._reset()

    def _reset(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_with_progress(pool: WorkerPool, tasks: Sequence[ModuleTask], desc: str
                      ) -> Iterator[ModuleOutcome]:
    """`pool.run(tasks)` with a progress bar on stderr (shown only on a terminal)."""
    from tqdm import tqdm

    with tqdm(total=len(tasks), desc=desc, unit="mod", file=sys.stderr,
              disable=None, dynamic_ncols=True) as bar:
        for out in pool.run(tasks):
            bar.update(1)
            yield out


def make_pool(workers: int | None = None, ray_address: str | None = None,
              task_fn: Callable = run_module) -> WorkerPool:
    """`task_fn` runs one task in a worker (a picklable top-level function; the task needs
    `.module` and `.tag`, e.g. mlgo.search.run_search_task for SearchTasks)."""
    if ray_address:
        from mlgo.workers.ray_pool import RayPool

        return RayPool(ray_address, workers, task_fn=task_fn)
    return LocalPool(workers, task_fn=task_fn)
