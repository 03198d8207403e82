"""``segment --workers N`` / ``--scheduler ADDRESS``: the same per-input work on Dask.

Inputs are independent, so each one is a task (``SegmentJob.safe``) mapped over a
``dask.distributed`` cluster: a ``LocalCluster`` of N single-threaded processes, or an
existing cluster (started with dask-jobqueue on SLURM/PBS, dask-kubernetes, ...). Each
worker process loads the model once. Workers write the outputs themselves, so the cluster's
workers must see the output folder (a shared file system on a cluster).
"""

from __future__ import annotations

import sys


def run_distributed(paths, args) -> list:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover - distributed is a dependency
        from ._cli_common import UserError

        raise UserError("--workers / --scheduler need dask.distributed: pip install distributed") from None
    from ._cli_segment import SegmentJob, _report

    job = SegmentJob.from_args(args)
    cluster = None
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    try:
        client.run(_one_thread)
        futures = client.map(job.safe, paths, pure=False)
        results = []
        for fut in as_completed(futures):
            results.append(fut.result())
            _report(args, results[-1])
            if args.fail_fast and results[-1][1] is not None:
                for f in futures:
                    f.cancel()
                break
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        sys.stdout.flush()


def _one_thread() -> None:
    """Each worker process computes with one thread: N processes share N cores."""
    import torch

    torch.set_num_threads(1)
