"""Ray workers: the same ModuleTask/run_module as the local pool, spread over a Ray cluster.

`address` is 'local' (start a private Ray instance on this machine), 'auto' (join the cluster
this machine belongs to) or a Ray address such as 'ray://head:10001'. Every node needs mlgo
installed and clang-19 on its PATH; corpora must be on storage all nodes can read."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from mlgo.workers.tasks import ModuleOutcome, ModuleTask, run_module
from mlgo_base.errors import MlgoError

log = logging.getLogger(__name__)


class RayPool:
    def __init__(self, address: str, workers: int | None = None, task_fn=run_module) -> None:
        try:
            import ray
        except ImportError as e:
            raise MlgoError("--ray needs the 'ray' package: pip install 'mlgo[ray]'") from e
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False}
            if address == "local":
                if workers:
                    kw["num_cpus"] = workers
                ray.init(**kw)
            else:
                ray.init(address=address, **kw)
            self._started = True
        # A worker process that dies is retried once by Ray itself; then the task's outcome
        # is a failure for that module, and the run goes on.
        self._remote = ray.remote(num_cpus=1, max_retries=1)(task_fn)
        self.workers = workers or int(ray.cluster_resources().get("CPU", 1))

    def run(self, tasks: Sequence[ModuleTask]) -> Iterator[ModuleOutcome]:
        ray = self._ray
        pending = {self._remote.remote(t): t for t in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayTaskError,
                        ray.exceptions.RayError) as e:
                    log.warning("%s: ray worker failed: %s", task.module.name, e)
                    yield ModuleOutcome(task.module.name, False,
                                        error=f"ray worker failed on this module: {type(e).__name__}: {e}",
                                        tag=task.tag)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False
