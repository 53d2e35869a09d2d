"""The task runner a stage's `runner` setting names, the workers' environment, the CPUs."""

import os

import pytest
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from tasks.task_runners import cpus, shard_task_runner, worker_environment


class Refused(RuntimeError):
    pass


def test_cpus_is_this_processs_share():
    assert 1 <= cpus() <= (os.cpu_count() or 1)
    assert cpus() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("runner", "kind"), [("threads", ThreadPoolTaskRunner), ("processes", ProcessPoolTaskRunner)]
)
def test_each_runner_setting_names_its_task_runner_with_the_workers(runner, kind):
    got = shard_task_runner(runner, 3, None, setting="x.runner", error=Refused)
    assert type(got) is kind and got._max_workers == 3


def test_dask_is_a_local_cluster_of_single_threaded_processes_or_the_given_scheduler():
    local = shard_task_runner("dask", 2, None, setting="x.runner", error=Refused)
    assert isinstance(local, DaskTaskRunner)
    assert local.cluster_kwargs["n_workers"] == 2
    assert local.cluster_kwargs["threads_per_worker"] == 1
    remote = shard_task_runner("dask", 2, "tcp://10.0.0.1:8786", setting="x.runner", error=Refused)
    assert remote.address == "tcp://10.0.0.1:8786"


def test_without_prefect_dask_the_error_names_the_setting(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # an import of it fails
    with pytest.raises(Refused, match="sampling.runner is 'dask' but prefect-dask"):
        shard_task_runner("dask", 2, None, setting="sampling.runner", error=Refused)


def test_the_workers_environment_is_put_back_as_it_was(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    before = dict(os.environ)
    with worker_environment():
        os.environ["OMP_NUM_THREADS"] = "1"  # as Dask's nanny leaves it
        assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert dict(os.environ) == before
