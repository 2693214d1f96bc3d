"""The Ray pool on a real local Ray instance: same outcomes as the local pool, dead workers survived."""

import os
from pathlib import Path

import pytest
from corpus_fixtures import make_small_corpus
from test_pool import _tasks, killer_task

from corpus_tools.corpus import Corpus
from mlgo.workers.pool import LocalPool
from mlgo.workers.ray_pool import RayPool
from mlgo.workers.tasks import ModuleTask, PolicySpec


@pytest.fixture(scope="module")
def ray_pool():
    ray = pytest.importorskip("ray")
    # Ray workers import task functions by module name: let them find this test directory.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), old]))
    try:
        pool = RayPool("local", workers=2)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    yield pool
    pool.close()
    assert not ray.is_initialized()


@pytest.mark.usefixtures("isolated_cache")
def test_ray_matches_local_pool(ray_pool, tmp_path, monkeypatch):
    corpus = Corpus.load(make_small_corpus(tmp_path))
    tasks = [ModuleTask("inlining", m, PolicySpec(builtin="never")) for m in corpus.modules]
    ray_out = {o.module: o for o in ray_pool.run(tasks)}
    with LocalPool(2) as local:
        local_out = {o.module: o for o in local.run(tasks)}
    assert sorted(ray_out) == sorted(local_out) == sorted(m.name for m in corpus.modules)
    for name, o in ray_out.items():
        assert o.ok, o.error
        assert (o.policy_total, o.default_total) == (local_out[name].policy_total, local_out[name].default_total)


def test_ray_worker_death_is_a_failed_module(ray_pool):
    import ray

    remote = ray.remote(num_cpus=1, max_retries=1)(killer_task)
    pool_fn = ray_pool._remote
    ray_pool._remote = remote
    try:
        outs = {o.module: o for o in ray_pool.run(_tasks(["a", "poison", "b"]))}
    finally:
        ray_pool._remote = pool_fn
    assert outs["a"].ok and outs["b"].ok
    assert not outs["poison"].ok and "ray worker failed" in outs["poison"].error
