"""The two-pass adversarial systematic on a dask.distributed cluster.

The same analysis as ``add_to_existing_analysis.py`` (its ``TopTagAnalysis`` processor),
with every step on a ``distributed.LocalCluster``:

1. pass 1: advsyst's feature processor through ``coffea.dataset_tools.apply_to_fileset``,
   computed on the cluster (``run_pass1(executor="dask", client=client)``);
2. a small tagger is trained (locally);
3. CONSERVAttack is submitted as ONE task on the merged features with
   ``advsyst.distributed.submit_attack``: it requests ``resources={"GPU": 1}`` when a
   worker advertises a GPU, and runs on any worker's CPU otherwise (printed); its result
   is reused by ``build_varied_scores``, which adds the (cheap) FGSM variation;
4. pass 2: ``TopTagAnalysis`` with ``processor.Runner`` + ``DaskExecutor`` on the cluster;
5. tagged yields per systematic and ``templates.root``, as in the other example.

``--gpu-resource`` starts the LocalCluster's workers with ``resources={"GPU": 1}``, which
exercises the GPU request path on a machine without a GPU (the task then logs that CUDA
is unavailable and runs on the CPU).  To use a real cluster, replace the LocalCluster by
``Client("tcp://scheduler:8786")`` and start GPU workers with
``dask worker tcp://scheduler:8786 --resources GPU=1``.

Run::

    python examples/run_on_dask.py --quick [--gpu-resource] [--workdir out/]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

# the sibling example provides the analysis processor and the helper steps
sys.path.insert(0, str(Path(__file__).resolve().parent))
import add_to_existing_analysis as analysis  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", help="samples and outputs (default: a temporary directory)")
    p.add_argument("--events", type=int, default=600, help="events per process")
    p.add_argument("--epochs", type=int, default=10, help="tagger training epochs")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--quick", action="store_true", help="150 events, 3 epochs, short attack")
    p.add_argument(
        "--gpu-resource",
        action="store_true",
        help='start the workers with resources={"GPU": 1} (exercises the GPU request path)',
    )
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.epochs = min(args.events, 150), min(args.epochs, 3)
    logging.basicConfig(level=logging.WARNING)

    import cloudpickle
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)  # quiet cluster start/stop

    import advsyst.systematics as S
    from advsyst.distributed import gpu_workers, submit_attack
    from advsyst.systematics.variations import CACHE_KEY
    from advsyst.workflows.twopass import build_varied_scores, run_pass1, run_pass2

    # the workers cannot import this directory: ship the processor class by value
    cloudpickle.register_pickle_by_value(analysis)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        fileset = analysis.make_samples(workdir, args.events, args.seed)
        cluster_kw = {"resources": {"GPU": 1}} if args.gpu_resource else {}
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                **cluster_kw,
            ) as cluster,
            Client(cluster) as client,
        ):
            print(f"LocalCluster: {args.workers} workers" + (" with GPU=1" if cluster_kw else ""))

            # pass 1 on the cluster (coffea.dataset_tools.apply_to_fileset)
            features = run_pass1(fileset, executor="dask", client=client, chunksize=100)
            print(f"pass 1 (dask): {len(features['X'])} jets x {features['X'].shape[1]} features")

            tagger = analysis.train_tagger(features, args.epochs, args.seed)

            # the attack: one task on the merged features, on a GPU worker if advertised
            options = analysis.variation_options(args.quick, args.seed)
            gpus = gpu_workers(client)
            print(
                "attack: submitted with resources={'GPU': 1} (workers advertising a GPU: "
                f"{len(gpus)})"
                if gpus
                else "attack: no worker advertises a GPU; submitted without resources (CPU)"
            )
            future = submit_attack(
                client, features["X"], tagger, options["conservattack"], weights=features["w"]
            )
            attack = future.result()
            print(
                f"attack ran on device {attack.provenance.get('worker_device')!r}; fooled "
                f"{int(attack.fooled.sum())} of {len(attack.fooled)} jets"
            )

            # VariedScores: reuse the attack result, add FGSM (runs here, it is cheap)
            context = S.VariationContext(
                weights=features["w"],
                feature_names=[str(n) for n in features["feature_names"]],
            )
            context.extra[CACHE_KEY] = attack
            context.extra["conservattack_options"] = options["conservattack"]
            varied = build_varied_scores(
                features, tagger, ["conservattack", "fgsm"], options, context=context
            )
            varied.save(workdir / "varied_scores.npz")

            # pass 2 on the cluster (processor.Runner + DaskExecutor)
            proc = analysis.TopTagAnalysis(varied)
            out = run_pass2(fileset, proc, executor="dask", client=client, chunksize=100)
        analysis.report(out, workdir / "templates.root")
        print(f"done in {time.perf_counter() - t0:.0f}s; outputs in {workdir}")
        if args.workdir is None:
            print("(temporary directory removed; pass --workdir to keep the outputs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
