"""CONSERVAttack throughput: fast path, exact path, brute-force reference, model floor.

Run from the repository root::

    python benchmarks/attack_throughput.py --quick          # smoke run, < 1 minute
    python benchmarks/attack_throughput.py                  # n=100000, d=30, 200 bins, 10 it.
    python benchmarks/attack_throughput.py --json out.json  # also save the numbers
    python benchmarks/attack_throughput.py --all-active     # the issue's 60 s target case
    python benchmarks/attack_throughput.py --all-active --only-fast  # that case alone

Throughput is in *event-iterations per second*: events attacked, summed over iterations,
divided by the seconds of those iterations (``AttackResult.history``).  Everything is
measured in one process on one seeded synthetic data set (correlated Gaussian features,
standardised) with a small MLP tagger trained in the script, so every figure is compared
with baselines measured in the same run on the same (possibly busy) machine.

* fast / exact: ``ConservAttack(method=...)``, cumulative budget, grid candidates
  ``min_change + k*step`` (absolute units, bounds +-``--bound`` sigma).  The numba JIT is
  warmed by a tiny run first; compile time is excluded (and printed).
* brute force: ``benchmarks/_reference_bruteforce.py`` (full ``np.histogram`` and
  ``np.corrcoef`` per candidate, O(n*d^2)), timed on a few events at a few small n; the
  per-candidate cost is fitted as ``a + b*n`` and extrapolated to the benchmark n with the
  mean number of candidates per (event, feature) measured on the benchmark data.
* model floor: ``ModelAdapter.loss_gradient`` (forward + backward) on the same events.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch

from advsyst.attacks import ConservAttack, ModelAdapter
from advsyst.attacks import _kernels as K

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference_bruteforce import BruteForceReference  # noqa: E402

_CA = importlib.import_module("advsyst.attacks.conservattack")

TARGET_SECONDS = 60.0
TARGET_SPEEDUP = 1000.0
#: environment variables that decide how the numba, torch and OpenBLAS thread pools share cores
THREAD_ENV = ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "NUMBA_THREADING_LAYER")


# ---------------------------------------------------------------------- data and model
def make_dataset(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded correlated Gaussian features (standardised) and labels from a noisy rule."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) / np.sqrt(d)
    cov = A @ A.T + 0.5 * np.eye(d)
    L = np.linalg.cholesky(cov)
    X = rng.normal(size=(n, d)) @ L.T
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    beta = rng.normal(size=d) / np.sqrt(d)
    score = X @ beta + 0.5 * (X[:, 0] ** 2 - 1.0) - 0.3 * X[:, 1] * X[:, 2]
    y = (score + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    return X, y


def train_tagger(
    X: np.ndarray, y: np.ndarray, seed: int, epochs: int, device: str
) -> tuple[torch.nn.Module, str]:
    """A small MLP tagger: ``advsyst.models.train_classifier`` if present, else plain torch."""
    try:
        from advsyst.models import train_classifier
    except ImportError:
        train_classifier = None
    if train_classifier is not None:
        model, _ = train_classifier(
            X,
            y,
            epochs=epochs,
            batch_size=512,
            val_fraction=0.0,
            seed=seed,
            progress=False,
            device=device,
        )
        return model, "advsyst.models.train_classifier (300-102-12-6, BN)"
    torch.manual_seed(seed)
    d = X.shape[1]
    model = torch.nn.Sequential(
        torch.nn.Linear(d, 300),
        torch.nn.ReLU(),
        torch.nn.Linear(300, 102),
        torch.nn.ReLU(),
        torch.nn.Linear(102, 12),
        torch.nn.ReLU(),
        torch.nn.Linear(12, 6),
        torch.nn.ReLU(),
        torch.nn.Linear(6, 1),
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt = torch.as_tensor(X, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, dtype=torch.float32, device=device)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=gen).split(512):
            idx = idx.to(device)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(Xt[idx])[:, 0], yt[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), "torch MLP 300-102-12-6 (fallback trainer)"


def candidates_per_entry(
    X: np.ndarray,
    sign: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    min_change: float,
    step: float,
    max_candidates: int,
) -> np.ndarray:
    """Grid candidates available per (event, feature) in the gradient-sign direction."""
    dist = np.where(sign > 0, hi - X, X - lo)
    n_c = np.floor((dist - min_change) / step) + 1.0
    n_c = np.where((sign != 0) & (dist >= min_change), n_c, 0.0)
    return np.minimum(n_c, max_candidates)


# ---------------------------------------------------------------------- timing helpers
@contextlib.contextmanager
def breakdown() -> Iterator[dict[str, float]]:
    """Time the engine's parts by wrapping them (a few calls per iteration: negligible)."""
    times: dict[str, float] = defaultdict(float)
    targets = [
        (ModelAdapter, "loss_gradient", "gradients (loss_gradient)"),
        (ModelAdapter, "predict", "predictions (predict)"),
        (K, "score_block", "scoring kernel (score_block)"),
        (K, "apply_block", "apply/undo/re-score (apply_block)"),
        (K, "exact_pass", "sequential kernel (exact_pass)"),
        (_CA._State, "resync", "state resync (histograms+moments)"),
        (ConservAttack, "_final_metrics", "final exact verification"),
    ]
    saved = []
    for obj, name, key in targets:
        orig = getattr(obj, name)
        saved.append((obj, name, orig))

        def timed(*a: Any, _orig: Any = orig, _key: str = key, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _orig(*a, **kw)
            finally:
                times[_key] += time.perf_counter() - t0

        setattr(obj, name, timed)
    try:
        yield times
    finally:
        for obj, name, orig in saved:
            setattr(obj, name, orig)


def attack_cfg(
    args: argparse.Namespace, d: int, method: str, iterations: int, robust: bool = True
) -> dict[str, Any]:
    """The benchmark's attack; ``robust=False``: the paper's single binning (the old
    default, ``robust_binnings: null``) instead of the binning-robust default."""
    extra: dict[str, Any] = {} if robust else {"robust_binnings": None}
    return dict(
        **extra,
        method=method,
        units="absolute",
        min_change=args.min_change,
        step=args.step,
        max_candidates=args.max_candidates,
        num_bins=args.bins,
        n_iterations=iterations,
        max_jsd=args.max_jsd,
        max_dfn=args.max_dfn,
        budget="cumulative",
        bounds=[[-args.bound] * d, [args.bound] * d],
        device=args.device,
        seed=args.seed,
        optimize_already_fooled=args.all_active,
        progress=False,
    )


def run_attack(
    X: np.ndarray, model: torch.nn.Module, cfg: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, float]]:
    with breakdown() as parts:
        t0 = time.perf_counter()
        res = ConservAttack(**cfg).run(X, model)
        wall = time.perf_counter() - t0
    ev_it = int(sum(h["events_attacked"] for h in res.history))
    secs = float(sum(h["seconds"] for h in res.history))
    parts = dict(parts)
    parts["other (setup, bookkeeping, copies)"] = wall - sum(parts.values())
    out = {
        "n": int(len(X)),
        "iterations": len(res.history),
        "event_iterations": ev_it,
        "attack_seconds": secs,
        "wall_seconds": wall,
        "throughput": ev_it / secs if secs > 0 else float("nan"),
        "fooling_ratio": float(res.metrics["fooling_ratio"]),
        "jsd_max": float(res.metrics["jsd_max"]),
        "dfn": float(res.metrics["dfn"]),
        "undone": int(sum(h["undone"] for h in res.history)),
        "entries_moved": int(sum(h["entries_moved"] for h in res.history)),
        "history": res.history,
    }
    return out, parts


def time_bruteforce(
    X: np.ndarray,
    sign: np.ndarray,
    args: argparse.Namespace,
    sizes: list[int],
) -> list[dict[str, Any]]:
    """Per-candidate cost of the brute-force reference at a few small n."""
    d = X.shape[1]
    lo, hi = np.full(d, -args.bound), np.full(d, args.bound)
    rows = []
    with _single_blas():
        for n in sizes:
            rows.append(_time_bruteforce_at(X, sign, args, n, lo, hi))
    return rows


def _single_blas() -> contextlib.AbstractContextManager[Any]:
    """One OpenBLAS thread while timing the brute force, if threadpoolctl is installed.

    On a small shared machine, OpenBLAS threads spinning against the torch/numba pools make
    the small ``np.corrcoef`` calls up to 10x slower; one thread is the faster (so, for the
    speed-up, the conservative) choice for these sizes.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _time_bruteforce_at(
    X: np.ndarray,
    sign: np.ndarray,
    args: argparse.Namespace,
    n: int,
    lo: np.ndarray,
    hi: np.ndarray,
) -> dict[str, Any]:
    ref = BruteForceReference(X[:n], args.bins)
    ref.evaluate(X[:n].copy(), 0, 0, args.step)  # warm-up (first-call overheads)
    events = np.arange(min(args.bf_events, n))
    runs = [
        ref.attack_events(
            X[:n].copy(),
            events,
            sign[events],
            lo,
            hi,
            min_change=args.min_change,
            step=args.step,
            max_candidates=args.bf_candidates,
            max_jsd=args.max_jsd,
            max_dfn=args.max_dfn,
        )
        for _ in range(args.bf_repeats)
    ]
    best = min(runs, key=lambda r: r.seconds_per_evaluation)  # noise only adds time
    return {
        "n": n,
        "events": best.n_events,
        "evaluations": best.n_evaluations,
        "repeats": len(runs),
        "seconds": best.seconds,
        "seconds_per_evaluation": best.seconds_per_evaluation,
    }


# ---------------------------------------------------------------------- output
def fmt_rate(x: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 0.01:
        return f"{x:.3g}"
    return f"{x:.2e}"


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    f, e, fl = results["fast"], results["exact"], results["floor"]
    bf = results["bruteforce"]
    lines = [
        f"### CONSERVAttack throughput (n={cfg['n']:,}, d={cfg['d']}, {cfg['bins']} bins, "
        f"{cfg['iterations']} iterations, device {cfg['device']})",
        "",
        f"- data: seeded correlated Gaussian, standardised; tagger: {cfg['tagger']} "
        f"(trained on {cfg['train_events']:,} events, {cfg['epochs']} epochs, "
        f"{cfg['train_seconds']:.1f} s)",
        f"- grid: min_change={cfg['min_change']}, step={cfg['step']}, bounds +-{cfg['bound']} "
        f"sigma, max_candidates={cfg['max_candidates']}: **{cfg['mean_candidates']:.0f}** "
        f"candidates per (event, feature) on average (median {cfg['median_candidates']:.0f}, "
        f"{100 * cfg['frac_ge100']:.0f}% of entries >= 100)",
        f"- budget: cumulative, max JSD {cfg['max_jsd']}, max dFN {cfg['max_dfn']}; "
        f"optimize_already_fooled: {str(cfg['all_active']).lower()} "
        f"({'every event attacked in every iteration' if cfg['all_active'] else 'fooled events rest'}); "
        f"threads: numba {cfg['numba_threads']} ({cfg['numba_layer']} layer), torch "
        f"{cfg['torch_threads']}, {cfg['cpu_count']} CPUs; {cfg['thread_env']}",
        f"- numba JIT warm-up {cfg['jit_seconds']:.1f} s (excluded from every figure)",
        "",
        "| path | n | event-iterations | seconds | event-it/s | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    fs = results["fast_single"]
    for name, r in (
        ('fast (`method="fast"`, binning-robust default)', f),
        ("fast, single binning (`robust_binnings: null`, the old default)", fs),
        ('exact (`method="exact"`)', e),
    ):
        if r is None:
            lines.append(f"| {name} | - | - | - | - | not run (--only-fast) |")
            continue
        lines.append(
            f"| {name} | {r['n']:,} | {r['event_iterations']:,} | {r['attack_seconds']:.2f} | "
            f"{fmt_rate(r['throughput'])} | {r['iterations']} it., run() {r['wall_seconds']:.1f} s "
            f"end to end; fooling {r['fooling_ratio']:.3f}, JSD max {r['jsd_max']:.4f}, "
            f"dFN {r['dfn']:.4f}, {r['undone']:,} undone |"
        )
    for row in bf["measured"]:
        rate = 1.0 / (bf["evals_per_event"] * row["seconds_per_evaluation"])
        lines.append(
            f"| brute force, measured | {row['n']:,} | - | {row['seconds']:.2f} | "
            f"{fmt_rate(rate)} | {row['evaluations']} candidate evaluations on "
            f"{row['events']} events, {1e6 * row['seconds_per_evaluation']:.0f} us each |"
        )
    lines.append(
        f"| **brute force, extrapolated** | {cfg['n']:,} | - | - | "
        f"**{fmt_rate(bf['throughput'])}** | fit {1e6 * bf['a']:.1f} us + "
        f"{1e9 * bf['b']:.1f} ns x n per candidate = {1e3 * bf['cost_at_n']:.1f} ms; "
        f"x {bf['evals_per_event']:,.0f} candidates per event (d x mean) |"
    )
    lines.append(
        f"| model floor (loss_gradient) | {fl['n']:,} | {fl['n']:,} | {fl['seconds']:.3f} | "
        f"{fmt_rate(fl['throughput'])} | forward+backward only, median of {fl['repeats']} |"
    )
    lines += [
        "",
        f"**fast / brute force (extrapolated to n={cfg['n']:,}): "
        f"{results['speedup']:,.0f}x** (target >= {TARGET_SPEEDUP:,.0f}x: "
        f"{'met' if results['speedup'] >= TARGET_SPEEDUP else 'MISSED'}); "
        f"fast run() end to end {f['wall_seconds']:.1f} s for {f['iterations']} iterations "
        f"(target < {TARGET_SECONDS:.0f} s at n=100,000, d=30, 200 bins, 10 it., all active: "
        + (
            ("met" if f["wall_seconds"] < TARGET_SECONDS else "MISSED")
            if results["at_target_size"]
            else "n/a at this size"
        )
        + ").",
        "",
    ]
    if fs is not None:
        lines += [
            f"Binning-robust default vs the old single binning, same data and run: "
            f"{fmt_rate(f['throughput'])} vs {fmt_rate(fs['throughput'])} event-it/s "
            f"({results['robust_cost']:.2f}x slower), fooling {f['fooling_ratio']:.3f} vs "
            f"{fs['fooling_ratio']:.3f}.",
            "",
        ]
    lines += [
        "| part of run() | fast s | fast % | exact s | exact % |",
        "|---|---:|---:|---:|---:|",
    ]
    e_wall = e["wall_seconds"] if e is not None else float("nan")
    keys = list(dict.fromkeys([*results["fast_parts"], *results["exact_parts"]]))
    for k in keys:
        a = results["fast_parts"].get(k, 0.0)
        b = results["exact_parts"].get(k, 0.0)
        if a == 0.0 and b == 0.0:
            continue
        lines.append(
            f"| {k} | {a:.2f} | {100 * a / f['wall_seconds']:.0f} | {b:.2f} | "
            f"{100 * b / e_wall:.0f} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="events (default 100000; quick 20000)")
    p.add_argument("--d", type=int, default=30, help="features")
    p.add_argument("--bins", type=int, default=200, help="histogram bins")
    p.add_argument("--iterations", type=int, default=None, help="default 10; quick 2")
    p.add_argument("--quick", action="store_true", help="n=20000, 2 iterations (< 1 minute)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="model device")
    p.add_argument("--json", metavar="OUT", default=None, help="also save the numbers here")
    p.add_argument("--exact-n", type=int, default=None, help="exact path n (10000; quick 4000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3, help="tagger training epochs")
    p.add_argument("--train-events", type=int, default=20000)
    p.add_argument("--min-change", type=float, default=0.005)
    p.add_argument("--step", type=float, default=0.01)
    p.add_argument("--bound", type=float, default=3.0, help="feature bounds, in sigma")
    p.add_argument("--max-candidates", type=int, default=2000)
    p.add_argument("--max-jsd", type=float, default=0.02)
    p.add_argument("--max-dfn", type=float, default=0.02)
    p.add_argument(
        "--bf-sizes", default="1000,2000,4000,8000", help="brute-force n values (comma-separated)"
    )
    p.add_argument("--bf-repeats", type=int, default=5, help="brute-force repeats (fastest)")
    p.add_argument("--bf-events", type=int, default=3, help="brute-force events per n")
    p.add_argument("--bf-candidates", type=int, default=3, help="brute-force candidates/feature")
    p.add_argument("--floor-repeats", type=int, default=3)
    p.add_argument(
        "--only-fast",
        action="store_true",
        help="run only the fast path with the default budget (no single-binning, no exact run)",
    )
    p.add_argument(
        "--all-active",
        action="store_true",
        help="optimize_already_fooled: true, every event attacked in every iteration (the "
        "60 s target case)",
    )
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 20000 if args.quick else 100000
    if args.iterations is None:
        args.iterations = 2 if args.quick else 10
    if args.exact_n is None:
        args.exact_n = 4000 if args.quick else 10000
    args.exact_n = min(args.exact_n, args.n)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    n, d = args.n, args.d
    X, y = make_dataset(n, d, args.seed)

    n_train = min(args.train_events, n)
    t0 = time.perf_counter()
    model, tagger = train_tagger(X[:n_train], y[:n_train], args.seed, args.epochs, args.device)
    train_seconds = time.perf_counter() - t0

    # numba JIT warm-up (compile time excluded from every figure)
    t0 = time.perf_counter()
    n_warm = min(300, n)
    for method in ("fast", "exact"):
        ConservAttack(**attack_cfg(args, d, method, 1)).run(X[:n_warm], model)
    jit_seconds = time.perf_counter() - t0

    # model floor: forward + backward on the events of the first iteration
    base = attack_cfg(args, d, "fast", args.iterations)
    adapter = ModelAdapter(model, n_features=d, device=args.device, batch_size=16384)
    target = adapter.predict(X)
    adapter.loss_gradient(X[: min(n, 4096)], target[: min(n, 4096)])  # warm
    floor_t = []
    for _ in range(args.floor_repeats):
        t0 = time.perf_counter()
        grad = adapter.loss_gradient(X, target)
        floor_t.append(time.perf_counter() - t0)
    floor_s = float(np.median(floor_t))
    sign = np.sign(grad)
    lo, hi = np.full(d, -args.bound), np.full(d, args.bound)
    ncand = candidates_per_entry(X, sign, lo, hi, args.min_change, args.step, args.max_candidates)

    sizes = [int(s) for s in args.bf_sizes.split(",") if s.strip()]
    sizes = [min(s, n) for s in sizes]
    measured = time_bruteforce(X, sign, args, sizes)
    ns = np.array([r["n"] for r in measured], dtype=np.float64)
    cs = np.array([r["seconds_per_evaluation"] for r in measured])
    if len(set(ns.tolist())) >= 2:
        b, a = np.polyfit(ns, cs, 1)
    else:
        a, b = 0.0, float(cs[0] / ns[0])
    if b <= 0:  # noise swamped the growth: assume none (conservative for the speed-up)
        a, b = float(cs.max()), 0.0
    cost_at_n = a + b * n
    evals_per_event = float(ncand.sum(axis=1).mean())  # d x mean candidates per entry
    bf_throughput = 1.0 / (evals_per_event * cost_at_n)

    fast, fast_parts = run_attack(X, model, base)
    fast_single = exact = None
    exact_parts: dict[str, float] = {}
    if not args.only_fast:
        fast_single, _ = run_attack(
            X, model, attack_cfg(args, d, "fast", args.iterations, robust=False)
        )
        exact, exact_parts = run_attack(
            X[: args.exact_n], model, attack_cfg(args, d, "exact", args.iterations)
        )

    results: dict[str, Any] = {
        "config": {
            "n": n,
            "d": d,
            "bins": args.bins,
            "iterations": args.iterations,
            "device": args.device,
            "tagger": tagger,
            "train_events": n_train,
            "epochs": args.epochs,
            "train_seconds": train_seconds,
            "min_change": args.min_change,
            "step": args.step,
            "bound": args.bound,
            "max_candidates": args.max_candidates,
            "mean_candidates": float(ncand.mean()),
            "median_candidates": float(np.median(ncand)),
            "frac_ge100": float((ncand >= 100).mean()),
            "max_jsd": args.max_jsd,
            "max_dfn": args.max_dfn,
            "all_active": args.all_active,
            "numba_threads": numba.get_num_threads(),
            "torch_threads": torch.get_num_threads(),
            "jit_seconds": jit_seconds,
            "cpu_count": os.cpu_count(),
            "numba_layer": numba.threading_layer(),
            "thread_env": " ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in THREAD_ENV),
        },
        "fast": fast,
        "fast_single": fast_single,
        "robust_cost": (
            fast_single["throughput"] / fast["throughput"] if fast_single else float("nan")
        ),
        "exact": exact,
        "fast_parts": fast_parts,
        "exact_parts": exact_parts,
        "floor": {
            "n": n,
            "seconds": floor_s,
            "repeats": args.floor_repeats,
            "throughput": n / floor_s,
        },
        "bruteforce": {
            "measured": measured,
            "a": float(a),
            "b": float(b),
            "cost_at_n": float(cost_at_n),
            "evals_per_event": evals_per_event,
            "throughput": float(bf_throughput),
        },
        "speedup": fast["throughput"] / bf_throughput,
        "at_target_size": n >= 100000
        and d >= 30
        and args.bins >= 200
        and args.iterations >= 10
        and args.all_active,
    }
    print(markdown(results), flush=True)
    if args.json:
        from advsyst._io import atomic_write_json

        atomic_write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
