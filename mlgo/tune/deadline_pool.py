"""Workers for the search that stop at a deadline: `run(tasks)` yields outcomes (the pool
interface mlgo/search.py's search_corpus reads) until the deadline, then kills the tasks still
running and returns, so the search ends on time with every module it finished saved.

Local workers are a spawned process pool of our own (the shared LocalPool retries tasks lost to
a dead worker, which is the wrong thing when we kill them on purpose): at most `workers` tasks
run at once, in the order given, so the order is the priority. With a Ray address the tasks go
to mlgo.workers.ray_pool.RayPool, and at the deadline the Ray connection is shut down."""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from mlgo.workers.tasks import ModuleOutcome

_END = object()


class DeadlinePool:
    def __init__(self, task_fn: Callable[[Any], ModuleOutcome], deadline: float, *,
                 workers: int | None = None, ray_address: str | None = None,
                 tick: Callable[[DeadlinePool], None] | None = None) -> None:
        """`deadline` is a time.monotonic() value; `tick(self)` is called about once a second."""
        self.task_fn = task_fn
        self.deadline = deadline
        self.workers = workers or max(1, os.cpu_count() or 2)
        self.ray_address = ray_address
        self.tick = tick or (lambda pool: None)
        self.finished = 0  # outcomes yielded
        self.stopped = False  # the deadline ended the run
        self.unfinished: list[str] = []  # modules running or queued when it did

    def run(self, tasks: Sequence[Any]) -> Iterator[ModuleOutcome]:
        if self.ray_address:
            yield from self._run_ray(tasks)
        else:
            yield from self._run_local(tasks)

    def close(self) -> None:
        pass  # every run() cleans up after itself

    def _expired(self, pending: Sequence[Any]) -> bool:
        if time.monotonic() < self.deadline:
            return False
        self.stopped = True
        self.unfinished = [t.module.name for t in pending]
        return True

    def _run_local(self, tasks: Sequence[Any]) -> Iterator[ModuleOutcome]:
        from mlgo.workers.pool import _exit_with_parent

        def executor() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_exit_with_parent, initargs=(os.getpid(),))

        ex = executor()
        todo = list(tasks)
        inflight: dict[Future, Any] = {}
        strikes: dict[int, int] = {}  # task index -> times its worker died under it
        index = {id(t): i for i, t in enumerate(tasks)}
        try:
            while todo or inflight:
                while todo and len(inflight) < self.workers:
                    t = todo.pop(0)
                    inflight[ex.submit(self.task_fn, t)] = t
                if self._expired([*inflight.values(), *todo]):
                    return
                done, _ = wait(inflight, timeout=min(1.0, max(self.deadline - time.monotonic(), 0.01)),
                               return_when=FIRST_COMPLETED)
                self.tick(self)
                broken = False
                for fut in done:
                    t = inflight.pop(fut)
                    try:
                        outcome = fut.result()
                        self.finished += 1
                        yield outcome
                    except BrokenProcessPool:
                        broken = True
                        i = index[id(t)]
                        strikes[i] = strikes.get(i, 0) + 1
                        if strikes[i] >= 2:
                            yield ModuleOutcome(t.module.name, False, tag=t.tag,
                                                error="worker process died while searching "
                                                "this module (twice)")
                        else:
                            todo.insert(0, t)
                if broken:  # every task in flight was lost with the pool
                    todo[:0] = list(inflight.values())
                    inflight.clear()
                    _kill(ex)
                    ex = executor()
        finally:
            _kill(ex)

    def _run_ray(self, tasks: Sequence[Any]) -> Iterator[ModuleOutcome]:
        from mlgo.workers.ray_pool import RayPool

        pool = RayPool(self.ray_address, self.workers, task_fn=self.task_fn)
        self.workers = pool.workers
        q: queue.Queue = queue.Queue()
        pending = {t.module.name: t for t in tasks}

        def pump() -> None:
            try:
                for o in pool.run(tasks):
                    q.put(o)
            except BaseException as e:  # handed to the consumer, which raises it
                q.put(e)
            finally:
                q.put(_END)

        threading.Thread(target=pump, name="mlgo-tune-ray", daemon=True).start()
        try:
            while True:
                if self._expired(list(pending.values())):
                    return
                try:
                    item = q.get(timeout=min(1.0, max(self.deadline - time.monotonic(), 0.01)))
                except queue.Empty:
                    self.tick(self)
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                pending.pop(item.module, None)
                self.finished += 1
                yield item
        finally:
            pool.close()


def _kill(ex: ProcessPoolExecutor) -> None:
    """Kill the executor's worker processes (their compilers die with them) and drop it."""
    for p in list(getattr(ex, "_processes", {}).values()):
        try:
            p.kill()
        except (OSError, AttributeError):
            pass
    ex.shutdown(wait=False, cancel_futures=True)
