"""In-process dask clusters for the sharded tests, and a callback that closes a worker in
the middle of a run (one recipe instead of a copy per test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def inproc_cluster() -> Iterator[tuple[Any, Any]]:
    """(cluster, client) of a LocalCluster with 2 single-thread in-process workers."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield cluster, c


def worker_closer(cluster: Any, iteration: int = 2, round_: int = 3) -> Callable[[dict], None]:
    """A ``sharded_attack`` callback that closes the worker of shard 1 once, after round
    ``round_`` of iteration ``iteration``; the closed addresses are in ``.closed``."""
    closed: list[str] = []

    def close_worker(ev: dict) -> None:
        if not closed and ev["iteration"] == iteration and ev["round"] == round_:
            addr = ev["shards"][1]["worker"]
            wk = next(x for x in cluster.workers.values() if x.address == addr)
            cluster.sync(wk.close)
            closed.append(addr)

    close_worker.closed = closed  # type: ignore[attr-defined]
    return close_worker
