"""The local worker pool: every task gets exactly one outcome, even when workers die."""

import os
import signal

from corpus_tools.corpus import Module
from mlgo.workers.pool import LocalPool
from mlgo.workers.tasks import ModuleOutcome, ModuleTask, PolicySpec


def killer_task(task: ModuleTask) -> ModuleOutcome:
    if task.module.name.startswith("poison"):
        os.kill(os.getpid(), signal.SIGKILL)
    return ModuleOutcome(task.module.name, True, reward=1.0)


def _tasks(names):
    return [ModuleTask("inlining", Module(n, "/nonexistent"), PolicySpec(builtin="never")) for n in names]


def test_dead_worker_does_not_stop_the_run():
    names = [f"m{i}" for i in range(8)] + ["poison"] + [f"n{i}" for i in range(4)]
    with LocalPool(2, task_fn=killer_task) as pool:
        outs = list(pool.run(_tasks(names)))
    by_name = {o.module: o for o in outs}
    assert sorted(by_name) == sorted(names) and len(outs) == len(names)
    assert not by_name["poison"].ok and "died" in by_name["poison"].error
    assert all(o.ok for n, o in by_name.items() if n != "poison")


def test_bad_module_is_an_outcome_not_an_exception(tmp_path):
    (tmp_path / "x.bc").write_bytes(b"garbage")
    (tmp_path / "x.cmd").write_bytes(b"-c\0-O2")
    tasks = [ModuleTask("inlining", Module("x", tmp_path), PolicySpec(builtin="cost-threshold"))]
    with LocalPool(1) as pool:
        (out,) = list(pool.run(tasks))
    assert not out.ok and "x" in out.error and "internal error" not in out.error
