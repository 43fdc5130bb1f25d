"""CONSERVAttack with the events sharded over dask workers and the budgets kept global.

The events live in shards, one dask actor (:class:`~advsyst.distributed.shards.ShardActor`)
per shard, placed on the workers (on those advertising a ``GPU`` resource when any do).
The client is the coordinator: it holds the small global state of the constraint set
(histograms, moments, correlations: O(d·bins + d²)) and the log of accepted moves.

Setup: the clean events stay on the workers.  The coordinator builds the binning, the
feature setup, the binning-robust limits and the clean state from per-shard reductions
(:func:`~advsyst.distributed._engine_glue.setup_from_summaries`: two round trips whose size
does not depend on the number of events, a third of 2 integers per group and shard with
``keep_order``; ``provenance["sharded"]["timing"]`` records their seconds and bytes).
With ``keep_order`` every shard narrows the bounds of its rows at the start of every
iteration (``order_bounds`` of their values then) and ships them with its proposals, as it
ships envelope bounds.

The end: the budgets are rechecked on the union from per-shard reductions too
(:func:`~advsyst.distributed._engine_glue.recheck`, the same code as the single-process
recheck; ``provenance["sharded"]["timing"]`` records its seconds, round trips and bytes,
which do not grow with the number of events, the AUROC pieces apart).  With
``output_dir`` every shard writes its rows to ``output_dir/shard-XXXX.npz`` on the worker
and the client gets a :class:`ShardedAttackResult` without the arrays; without it the
rows are gathered into an :class:`~advsyst.attacks.result.AttackResult`.

One iteration:

1. every shard finds its active events and computes their gradient signs (the model runs
   on the worker holding the events);
2. the coordinator orders the iteration's events globally (``order: index``: by global
   key; ``order: margin``: by margin, ties by key) and cuts the order into blocks of
   ``block_size`` events, the fast path's blocks;
3. per block (a *round*) every shard scores its part of the block against the current
   snapshot of the state and returns its proposals, each with the event's row;
4. the coordinator applies the proposals one by one in the global order, with the exact
   O(d) update and budget re-check of the fast path, logs the accepted moves and sends
   each shard its accepted moves with the next round's request;
5. at the end of the iteration the shards predict their moved events and the state is
   recomputed from per-shard sums (the fast path's resync).

Because the scoring of a block is independent per event given the snapshot, this is the
single-process fast path with the same blocks and event order: for an in-memory ``X``
split round-robin (shard ``s`` holds rows ``s, s+S, s+2S, ...``) the global key is the row
index, and the result equals ``ConservAttack(config).run(X, model)`` up to the
reassociation of the floating-point sums in the state (equal bit for bit in the tests).

Checkpoints (``checkpoint_dir``) hold the configuration and the shards' data
fingerprints, the state after every round, the round and iteration, and the move log (one
segment per round); ``resume=True`` rebuilds every shard from its source, replays the log
and continues.  A shard whose worker dies is rebuilt the same way on a live worker.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advsyst._io import atomic_path, atomic_write_json, provenance, to_jsonable
from advsyst.attacks.config import ConservAttackConfig
from advsyst.attacks.conservattack import attack_result
from advsyst.attacks.model import ModelAdapter
from advsyst.attacks.result import _ARRAYS, AttackResult, MetricsView
from advsyst.distributed import _engine_glue as G
from advsyst.distributed.attack import _accepts_n_workers, gpu_workers, serialize_model
from advsyst.distributed.shards import ShardActor, ShardLostError, ShardSource
from advsyst.errors import ConfigError, InputError

__all__ = [
    "sharded_attack",
    "ShardedAttackResult",
    "ShardSource",
    "ShardLostError",
    "CheckpointMismatch",
]

log = logging.getLogger(__name__)

#: configuration keys that do not change the result (ignored when resuming)
_NEUTRAL_KEYS = ("progress", "device", "batch_size", "n_gpus")
_CKPT_VERSION = 1


class CheckpointMismatch(ConfigError):
    """A checkpoint was written by a run with a different configuration or data."""


def _worker_lost(exc: BaseException) -> bool:
    """Does ``exc`` say that the worker holding an actor is gone?"""
    from distributed.comm.core import CommClosedError

    if isinstance(exc, ShardLostError):
        return False
    if isinstance(exc, OSError | CommClosedError):
        return True
    # distributed.Actor.__getattr__ once the scheduler has removed the worker
    return isinstance(exc, ValueError) and "Worker holding Actor was lost" in str(exc)


def _nbytes(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 8 if obj is not None else 0


class _Coordinator:
    """The client-side driver: shards, state, move log, checkpoints and recovery."""

    def __init__(
        self, client, sources, model, cfg, checkpoint_dir, resume, max_rebuilds, callback,
        scorer="auto",
    ):  # fmt: skip
        self.client = client
        self.scorer = scorer
        self.callback = callback
        self.sources = sources
        self.cfg = cfg
        self.S = len(sources)
        self.payload = serialize_model(model)
        self.ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resume = resume
        self.max_rebuilds = max_rebuilds
        self.rebuilds: list[dict[str, Any]] = []
        self.final_track_best: bool | None = None  # set once the final recheck starts
        gpus = gpu_workers(client)
        self.want_gpu = bool(gpus)
        self.pool = gpus or self._live()
        if not self.pool:
            raise InputError("the dask cluster has no workers")
        self.actors: list[Any] = [None] * self.S
        self.where: list[str] = [""] * self.S
        self.need_consts = [True] * self.S
        # the move log, per shard: lists of (iteration, row, feature, value) chunks
        self.log: list[list[tuple]] = [[] for _ in range(self.S)]
        self.n_segments = 0
        self.received = 0  # bytes of every answer of the shards to :meth:`call`
        # seconds per phase (score: the slowest shard's scoring; transfer: the rest of the
        # round trip; apply: merge + commit + log; commit: apply_block alone), bytes, moves
        self.timing = dict.fromkeys(("score", "transfer", "apply", "commit"), 0.0)
        self.timing.update(rounds=0, moves=0, proposals=0, bytes_to_workers=0, bytes_from_workers=0,
                           snapshot_bytes=0)  # fmt: skip

    # ------------------------------------------------------------------ actors
    def _device(self) -> str:
        if self.want_gpu:
            return "auto"  # CUDA when the GPU worker has it, else its CPU
        return self.cfg.device

    def _live(self) -> list[str]:
        """Addresses of the workers that may hold shards (GPU ones when any advertise)."""
        if self.want_gpu:
            return gpu_workers(self.client)
        info = (
            self.client.scheduler_info(n_workers=-1)
            if _accepts_n_workers(self.client)
            else self.client.scheduler_info()
        )
        return list(info["workers"])

    def _submit(self, s: int, addr: str) -> Any:
        kw: dict[str, Any] = {"resources": {"GPU": 1}} if self.want_gpu else {}
        return self.client.submit(
            ShardActor,
            s,
            self.S,
            self.sources[s],
            self.payload,
            self.cfg.to_dict(),
            self._device(),
            scorer=self.scorer,
            actor=True,
            workers=[addr],
            pure=False,
            **kw,
        )

    def _spawn(self, s: int, exclude: str | None = None) -> None:
        """A fresh actor for shard ``s`` on the live worker holding the fewest shards."""
        t0 = time.time()
        cands = [w for w in self._live() if w != exclude]
        while not cands and time.time() - t0 < 60:  # a nanny may be restarting it
            time.sleep(0.5)
            cands = [w for w in self._live() if w != exclude]
        if not cands:
            raise ShardLostError(f"no live worker left to hold shard {s}")
        addr = min(cands, key=lambda w: (self.where.count(w), cands.index(w)))
        fut = self._submit(s, addr)
        self.actors[s] = fut.result()
        self._futs[s] = fut
        self.where[s] = addr
        self.need_consts[s] = True

    def start_shards(self) -> list[dict[str, Any]]:
        self.where = [self.pool[s % len(self.pool)] for s in range(self.S)]
        self._futs = {s: self._submit(s, self.where[s]) for s in range(self.S)}
        self.actors = [self._futs[s].result() for s in range(self.S)]
        infos = [a.info().result() for a in self.actors]
        self.pids = [inf["pid"] for inf in infos]
        return infos

    def call(self, method: str, args: Sequence[tuple] | None = None) -> list[Any]:
        """Call ``method`` on every shard (``args[s]`` its arguments), in parallel; a shard
        whose worker is lost is rebuilt and the call repeated on it."""
        args = args if args is not None else [()] * self.S
        futs: list[Any] = []
        for s in range(self.S):
            try:
                futs.append(getattr(self.actors[s], method)(*args[s]))
            except Exception as exc:  # the scheduler already knows the worker is gone
                if not _worker_lost(exc):
                    raise
                futs.append(exc)
        out: list[Any] = [None] * self.S
        for s, f in enumerate(futs):
            for attempt in range(self.max_rebuilds + 1):
                try:
                    if isinstance(f, BaseException):
                        raise f
                    out[s] = self._wait(s, f)
                    break
                except Exception as exc:
                    if not _worker_lost(exc) or attempt == self.max_rebuilds:
                        raise
                    self.recover(s, exc)
                    try:
                        f = getattr(self.actors[s], method)(*self._fix_args(method, s, args[s]))
                    except Exception as exc2:
                        if not _worker_lost(exc2):
                            raise
                        f = exc2
        self.received += _nbytes(out)
        return out

    def _wait(self, s: int, f: Any, poll: float = 2.0) -> Any:
        """``f.result()``, noticing a worker that leaves the cluster while the call is in
        flight (its answer would never come)."""
        while True:
            try:
                return f.result(timeout=poll)
            except TimeoutError:
                if self.where[s] not in self._live():
                    raise OSError(
                        f"worker {self.where[s]} holding shard {s} left the cluster"
                    ) from None

    def _fix_args(self, method: str, s: int, a: tuple) -> tuple:
        # a rebuilt shard lost the constants the first ``step`` sent
        if method == "step" and a[2] is None:
            self.need_consts[s] = False
            return (a[0], a[1], self.consts, *a[3:])
        return a

    # ------------------------------------------------------------------ recovery
    def shard_info(self) -> list[dict[str, Any]]:
        """Worker address and process id of every shard."""
        return [{"worker": w, "pid": p} for w, p in zip(self.where, self.pids)]

    def shard_log(self, s: int) -> tuple:
        chunks = self.log[s]
        if not chunks:
            e = np.zeros(0, dtype=np.int64)
            return e, e, e, np.zeros(0)
        return tuple(np.concatenate([c[k] for c in chunks]) for k in range(4))

    def recover(self, s: int, exc: BaseException | None) -> None:
        """Rebuild shard ``s`` on a live worker: reload its clean data, check its
        fingerprint, redo the setup and replay its logged moves."""
        lost = self.where[s]
        log.warning(
            "shard %d lost with worker %s (%s): rebuilding from %s and replaying %d moves",
            s,
            lost,
            type(exc).__name__ if exc else "resume",
            self.sources[s].describe(),
            sum(len(c[0]) for c in self.log[s]),
        )
        t0 = time.perf_counter()
        old = self._futs.pop(s, None)
        if old is not None:
            old.release()
        try:
            self._spawn(s, exclude=lost if exc is not None else None)
            self._rebuild(s)
        except ShardLostError:
            raise
        except Exception as exc2:
            if _worker_lost(exc2):
                raise ShardLostError(
                    f"shard {s} could not be rebuilt: its new worker was lost too ({exc2})"
                ) from exc2
            raise ShardLostError(f"shard {s} could not be rebuilt: {exc2}") from exc2
        self.rebuilds.append(
            {"shard": s, "lost_worker": lost, "new_worker": self.where[s],
             "seconds": time.perf_counter() - t0}
        )  # fmt: skip

    def _rebuild(self, s: int) -> None:
        a = self.actors[s]
        info = a.info().result()
        self.pids[s] = info["pid"]
        if info["fingerprint"] != self.fingerprints[s]:
            raise ShardLostError(
                f"shard {s} cannot be rebuilt: its source {self.sources[s].describe()} now "
                f"holds different data (fingerprint {info['fingerprint'][:12]} != "
                f"{self.fingerprints[s][:12]} recorded at the start of the run)"
            )
        a.setup(self.setup_t).result()
        a.rebuild(self.fingerprints[s], self.shard_log(s), self.it, self.best_it).result()
        if self.final_track_best is not None:  # lost during the final recheck
            a.finish(self.final_track_best).result()

    # ------------------------------------------------------------------ checkpoints
    def _meta(self) -> dict[str, Any]:
        cfg = {k: v for k, v in self.cfg.to_dict().items() if k not in _NEUTRAL_KEYS}
        return {
            "version": _CKPT_VERSION,
            "config": to_jsonable(cfg),
            "n_shards": self.S,
            "fingerprints": self.fingerprints,
            "sources": [src.describe() for src in self.sources],
        }

    def check_checkpoint(self) -> dict[str, Any] | None:
        """Read the checkpoint; raise :class:`CheckpointMismatch` naming what differs."""
        if self.ckpt is None:
            return None
        meta_p = self.ckpt / "meta.json"
        if not self.resume:
            if meta_p.exists():
                raise InputError(
                    f"checkpoint directory {os.fspath(self.ckpt)!r} already holds a run; "
                    "resume it (resume=True / --resume) or choose an empty directory"
                )
            atomic_write_json(meta_p, self._meta())
            return None
        if not meta_p.exists() or not (self.ckpt / "state.npz").exists():
            raise InputError(f"no checkpoint to resume in {os.fspath(self.ckpt)!r}")
        old = json.loads(meta_p.read_text())
        new = json.loads(json.dumps(self._meta()))
        diffs = []
        if old.get("version") != new["version"]:
            diffs.append(f"checkpoint format {old.get('version')} != {new['version']}")
        oc, nc = old.get("config", {}), new["config"]
        for k in sorted(set(oc) | set(nc)):
            if oc.get(k) != nc.get(k):
                diffs.append(f"config {k}: {oc.get(k)!r} in the checkpoint, {nc.get(k)!r} now")
        if old.get("n_shards") != new["n_shards"]:
            diffs.append(f"number of shards: {old.get('n_shards')} != {new['n_shards']}")
        else:
            for s, (a, b) in enumerate(zip(old["fingerprints"], new["fingerprints"])):
                if a != b:
                    diffs.append(
                        f"data of shard {s} ({new['sources'][s]}): fingerprint {a[:12]} in the "
                        f"checkpoint, {b[:12]} now"
                    )
        if diffs:
            raise CheckpointMismatch(
                f"cannot resume from {os.fspath(self.ckpt)!r}: it was written by a different "
                "run: " + "; ".join(diffs)
            )
        with np.load(self.ckpt / "state.npz", allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        return data

    def write_segment(self, it: int, moves: list[tuple]) -> None:
        if self.ckpt is None:
            return
        shard = np.concatenate([np.full(len(m[0]), s, dtype=np.int32) for s, m in enumerate(moves)])
        rows, feats, vals = (np.concatenate([m[k] for m in moves]) for k in range(3))
        seg = self.ckpt / "log" / f"seg_{self.n_segments:08d}.npz"
        with atomic_path(seg) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, shard=shard, it=np.int64(it), rows=rows, feats=feats, vals=vals)
        self.n_segments += 1

    def write_state(self, it: int, next_round: int, extra: dict[str, Any]) -> None:
        if self.ckpt is None:
            return
        meta = {
            "it": it,
            "next_round": next_round,
            "best_it": self.best_it,
            "best_fr": self.best_fr,
            "n_segments": self.n_segments,
            "history": self.history,
            **extra,
        }
        with atomic_path(self.ckpt / "state.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **self.state.to_arrays(), meta=np.array(json.dumps(to_jsonable(meta))))

    def load_log(self, n_segments: int) -> None:
        for k in range(n_segments):
            p = self.ckpt / "log" / f"seg_{k:08d}.npz"
            try:
                with np.load(p, allow_pickle=False) as z:
                    shard, it, rows, feats, vals = (
                        z[n] for n in ("shard", "it", "rows", "feats", "vals")
                    )
            except (OSError, ValueError, KeyError) as exc:
                raise InputError(
                    f"checkpoint move log segment {os.fspath(p)!r} unreadable: {exc}"
                ) from exc
            for s in range(self.S):
                sel = shard == s
                if sel.any():
                    n = int(sel.sum())
                    self.log[s].append(
                        (np.full(n, int(it), dtype=np.int64), rows[sel], feats[sel], vals[sel])
                    )
        self.n_segments = n_segments

    # ------------------------------------------------------------------ the run
    def setup(self, infos: list[dict[str, Any]], names: list[str] | None, layout: str) -> None:
        """Run the engine's checks and setup on per-shard reductions (two round trips whose
        size does not depend on the number of events, three with ``keep_order``; the clean
        events stay on the
        workers: :func:`~advsyst.distributed._engine_glue.setup_from_summaries`), ship the
        setup to the shards."""
        cfg = self.cfg
        t0, r0 = time.perf_counter(), self.received
        d = infos[0]["d"]
        for s, inf in enumerate(infos):
            if inf["d"] != d:
                raise InputError(f"shard {s} has {inf['d']} features, shard 0 has {d}")
        self.n, self.d = sum(inf["n"] for inf in infos), d
        if self.n < 2 or d < 1:
            raise InputError(f"need at least 2 events and 1 feature, got ({self.n}, {d})")
        self.fingerprints = [inf["fingerprint"] for inf in infos]
        self.rows = _global_rows(layout, [inf["n"] for inf in infos])
        self.setup_t, self.state = G.setup_from_summaries(
            cfg,
            d,
            self.call("summary"),
            names,
            lambda mean, lay, w2: self.call("clean_stats", [(mean, lay, w2)] * self.S),
            lambda cols: self.call("order_counts", [(cols,)] * self.S),
        )
        self.names = self.setup_t.names
        self.call("setup", [(self.setup_t,)] * self.S)
        self.consts = self.state.constants()
        self.timing["setup"] = time.perf_counter() - t0
        self.timing["setup_bytes_from_workers"] = self.received - r0

    def order(self, begins: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """(shard, position in the shard's active list) of the iteration's events in the
        global order."""
        shard = np.concatenate(
            [np.full(b["count"], s, dtype=np.int64) for s, b in enumerate(begins)]
        )
        pos = np.concatenate([np.arange(b["count"], dtype=np.int64) for b in begins])
        key = np.concatenate([b["events"] * self.S + s for s, b in enumerate(begins)]).astype(
            np.int64
        )
        if self.cfg.order == "margin" and len(key):
            marg = np.concatenate([b.get("margin", np.zeros(0)) for b in begins])
            idx = np.lexsort((key, marg))
        else:
            idx = np.argsort(key, kind="stable")
        return shard[idx], pos[idx]

    def run_rounds(self, it: int, shard: np.ndarray, pos: np.ndarray, r0: int, undone: int):
        cfg = self.cfg
        B = cfg.block_size
        n_rounds = (len(shard) + B - 1) // B
        pending: list[tuple | None] = [None] * self.S
        s0 = self.setup_t
        for r in range(r0, n_rounds):
            bs, bp = shard[r * B : (r + 1) * B], pos[r * B : (r + 1) * B]
            snap = self.state.snapshot()
            per = [np.nonzero(bs == s)[0] for s in range(self.S)]
            args = []
            for s in range(self.S):
                consts = self.consts if self.need_consts[s] else None
                self.need_consts[s] = False
                args.append((pending[s], bp[per[s]], consts, snap, it))
            t0 = time.perf_counter()
            props = self.call("step", args)
            t1 = time.perf_counter()
            self.timing["bytes_to_workers"] += _nbytes(args)
            self.timing["snapshot_bytes"] = _nbytes(snap)  # one worker's state snapshot
            self.timing["bytes_from_workers"] += _nbytes(props)
            t_score = max(p.pop("seconds", 0.0) for p in props)
            self.timing["score"] += t_score
            # the proposals in the global order of the block
            blk = np.concatenate([per[s][p["idx"]] for s, p in enumerate(props)])
            src = np.concatenate([np.full(len(p["idx"]), s) for s, p in enumerate(props)])
            o = np.argsort(blk, kind="stable")
            keys = ["x", "w", "cons", "sign", "deltas", "status", "rows"]
            if "lo" in props[0]:  # per-entry (envelope) bounds of the block's rows
                keys += ["lo", "hi"]
            cat = {k: np.concatenate([p[k] for p in props])[o] for k in keys}
            lo, hi = (cat["lo"], cat["hi"]) if "lo" in cat else (s0.lo, s0.hi)
            cand, budget, _ = G.kernel_tuples(cfg, s0, it, self.state.norm0, lo, hi)
            src = src[o]
            before = cat["x"].copy()
            Xb = cat["x"]
            self.timing["proposals"] += int((cat["status"] != 0).sum())
            tc = time.perf_counter()
            undone += G.commit(
                Xb, cat["w"], cat["cons"], cat["sign"], cat["deltas"], cat["status"],
                cand, self.state.kernel_args(), budget, cat["rows"] * self.S + src,
            )  # fmt: skip
            self.timing["commit"] += time.perf_counter() - tc
            t, j = np.nonzero(Xb != before)
            moves = []
            for s in range(self.S):
                sel = src[t] == s
                moves.append((cat["rows"][t[sel]], j[sel], Xb[t[sel], j[sel]]))
                if sel.any():
                    self.log[s].append((np.full(int(sel.sum()), it, dtype=np.int64), *moves[s]))
            pending = moves
            t2 = time.perf_counter()
            self.timing["transfer"] += (t1 - t0) - t_score
            self.timing["apply"] += t2 - t1
            self.timing["rounds"] += 1
            self.timing["moves"] += len(t)
            self.write_segment(it, moves)
            self.write_state(it, r + 1, {"undone": undone})
            if self.callback is not None:
                self.callback(
                    {"iteration": it, "round": r, "n_rounds": n_rounds, "shards": self.shard_info()}
                )
        return pending, undone

    # ------------------------------------------------------------------ the end
    def final_recheck(self) -> dict[str, Any]:
        """The final metrics and budget checks from per-shard reductions
        (:func:`~advsyst.distributed._engine_glue.recheck`): no event leaves its worker
        (the AUROC's per-event scores apart).  Records seconds, round trips and bytes in
        ``timing``."""
        t0, r0 = time.perf_counter(), self.received
        trips = {"n": 0}
        auroc_bytes = {"n": 0}

        def call(method, args=None):
            trips["n"] += 1
            return self.call(method, args)

        def aurocs():
            r1 = self.received
            out = call("final_auroc")
            auroc_bytes["n"] += self.received - r1
            return out

        self.final_track_best = self.cfg.track_best
        parts = call("finish", [(self.cfg.track_best,)] * self.S)
        metrics = G.recheck(
            self.cfg, self.setup_t, parts,
            lambda m0, m: call("final_cov", [(m0, m)] * self.S),
            lambda t: call("final_count", [(t,)] * self.S),
            aurocs,
        )  # fmt: skip
        self.timing["final"] = time.perf_counter() - t0
        self.timing["final_round_trips"] = trips["n"]
        self.timing["final_auroc_bytes_from_workers"] = auroc_bytes["n"]
        # everything else the recheck received: O(R·d·bins + d²), whatever the events
        self.timing["final_bytes_from_workers"] = self.received - r0 - auroc_bytes["n"]
        return metrics

    def _offsets(self) -> list[int]:
        return [int(r[0]) if len(r) else 0 for r in self.rows]

    def gather_rows(self, layout: str) -> dict[str, np.ndarray]:
        """The result's rows of every shard, in the global row order (on the client)."""
        t0, r0 = time.perf_counter(), self.received
        parts = self.call("final_rows", [(layout, o) for o in self._offsets()])
        out = {k: _gather(self.rows, self.n, [p[k] for p in parts]) for k in _ARRAYS}
        self.timing["gather"] = time.perf_counter() - t0
        self.timing["gather_bytes_from_workers"] = self.received - r0
        return out

    def write_rows(self, out: Path, layout: str) -> list[dict[str, Any]]:
        """Every shard writes its rows to ``out/shard-XXXX.npz`` (atomically, on its
        worker); returns their paths, sizes and row counts."""
        t0 = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        paths = [os.fspath((out / f"shard-{s:04d}.npz").absolute()) for s in range(self.S)]
        written = self.call("write_rows", [(p, layout, o) for p, o in zip(paths, self._offsets())])
        self.timing["write"] = time.perf_counter() - t0
        self.timing["written_bytes"] = sum(w["bytes"] for w in written)
        return written

    def iterate(self, start: dict[str, Any] | None) -> None:
        cfg = self.cfg
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.n_iterations, desc="CONSERVAttack (sharded)", unit="it")
        it0, r0, undone0 = 1, 0, 0
        if start is not None and start.get("done"):
            return
        if start is not None:
            it0, r0, undone0 = start["it"], start["next_round"], start.get("undone", 0)
            if bar is not None:
                bar.update(it0 - 1)
        for it in range(it0, cfg.n_iterations + 1):
            self.it = it
            t0 = time.perf_counter()
            begins = (
                start["begins"]
                if (start is not None and it == it0)
                else self.call("begin_iteration")
            )
            shard, pos = self.order(begins)
            n_events = len(shard)
            pending, undone = self.run_rounds(it, shard, pos, r0 if it == it0 else 0,
                                              undone0 if it == it0 else 0)  # fmt: skip
            ends = self.call("end_iteration", [(m,) for m in pending])
            if n_events:  # as the fast path: no events, no resync
                sums = G.Sums(
                    H=G._total([e["sums"][0] for e in ends]),
                    swx=G._total([e["sums"][2] for e in ends]),
                    cov_fn=lambda m: self.call("cov", [(m,)] * self.S),
                )
                self.state.resync(sums)
            att = sum(e["fooling"][0] for e in ends)
            fr = float(sum(e["fooling"][1] for e in ends) / att) if att > 0 else 0.0
            jsd = self.state.jsd()
            rec = {
                "iteration": it,
                "fooling_ratio": fr,
                "n_fooled": sum(e["n_fooled"] for e in ends),
                "events_attacked": int(n_events),
                "events_moved": sum(e["moved"] for e in ends),
                "entries_moved": sum(e["entries"] for e in ends),
                "undone": int(undone),
                "jsd_mean": float(jsd.mean()),
                "jsd_max": float(jsd.max()),
                "dfn": self.state.dfn(),
                "seconds": time.perf_counter() - t0,
            }
            self.history.append(rec)
            log.info(
                "sharded CONSERVAttack iteration %d/%d: fooling ratio %.4f, moved %d events "
                "(%d entries, %d undone), JSD max %.2e, dFN %.2e, %.2fs",
                it, cfg.n_iterations, fr, rec["events_moved"], rec["entries_moved"], undone,
                rec["jsd_max"], rec["dfn"], rec["seconds"],
            )  # fmt: skip
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    fr=f"{fr:.3f}", jsd=f"{rec['jsd_max']:.1e}", dfn=f"{rec['dfn']:.1e}"
                )
            if cfg.track_best and fr > self.best_fr:
                self.best_fr, self.best_it = fr, it
                self.call("mark_best")
            elif not cfg.track_best:
                self.best_fr, self.best_it = fr, it
            self.it = it + 1  # a shard rebuilt from here on replays iteration ``it`` fully
            self.write_state(it + 1, 0, {"done": n_events == 0})
            if n_events == 0:
                break
        if bar is not None:
            bar.close()


@dataclass
class ShardedAttackResult(MetricsView):
    """The result of :func:`sharded_attack` with ``output_dir``: metrics, history and
    provenance on the client, the per-event rows in one ``.npz`` per shard.

    Attributes
    ----------
    paths
        The shard files (``X_adv``, ``fooled``, ``moved``, ``pred_clean``, ``pred_adv``,
        ``attack_mask``, ``constraint_mask``, ``rows``: the global row of each).
    n_events
        Rows in all files together.
    history, metrics, config, seed, best_iteration, provenance
        As :class:`~advsyst.attacks.result.AttackResult`.
    """

    paths: list[Path]
    n_events: int
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    best_iteration: int | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """Everything but the rows, JSON-ready (what :meth:`save_report` writes)."""
        return to_jsonable(
            {
                "paths": [os.fspath(p) for p in self.paths],
                "n_events": self.n_events,
                "metrics": self.metrics,
                "history": self.history,
                "config": self.config,
                "seed": self.seed,
                "best_iteration": self.best_iteration,
                "provenance": self.provenance,
            }
        )

    def save_report(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`report` as JSON (atomically)."""
        return atomic_write_json(path, self.report())

    def load(self) -> AttackResult:
        """Read the shard files and put their rows back in the global order (every event on
        the client: for results that fit in memory)."""
        n = self.n_events
        out: dict[str, np.ndarray] = {}
        seen = np.zeros(n, dtype=bool)
        for p in self.paths:
            try:
                with np.load(p, allow_pickle=False) as z:
                    part = {k: z[k] for k in (*_ARRAYS, "rows")}
            except (OSError, KeyError, ValueError) as exc:
                raise InputError(f"cannot read shard file {os.fspath(p)!r}: {exc}") from exc
            rows = part.pop("rows")
            if len(rows) and (rows.min() < 0 or rows.max() >= n or seen[rows].any()):
                raise InputError(
                    f"shard file {os.fspath(p)!r} holds rows outside 0..{n - 1} or rows "
                    "another file holds too"
                )
            seen[rows] = True
            for k, v in part.items():
                if k not in out:
                    out[k] = np.empty((n, *v.shape[1:]), dtype=v.dtype)
                out[k][rows] = v
        if not seen.all():
            raise InputError(
                f"the shard files hold {int(seen.sum())} of the {n} rows of the result"
            )
        return AttackResult(
            **out,
            history=self.history,
            metrics=self.metrics,
            config=self.config,
            seed=self.seed,
            best_iteration=self.best_iteration,
            provenance=self.provenance,
        )


def _global_rows(layout: str, sizes: list[int]) -> list[np.ndarray]:
    """The global row of every shard's local rows: round-robin ``k * S + s``, or the
    shards concatenated."""
    S, rows, off = len(sizes), [], 0
    for s, n in enumerate(sizes):
        k = np.arange(n)
        rows.append(k * S + s if layout == "roundrobin" else off + k)
        off += n
    return rows


def _gather(rows: list[np.ndarray], n: int, parts: list[Any]) -> np.ndarray | None:
    """The shards' arrays placed at their global rows (None if the shards hold None)."""
    if parts[0] is None:
        return None
    first = np.asarray(parts[0])
    out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    for r, p in zip(rows, parts):
        out[r] = p
    return out


def _sources(X_or_shards, y, weights, attack_mask, constraint_mask, n_shards, movable=None):
    """ShardSources (and the row each shard's local row k lands on in the result)."""
    if isinstance(X_or_shards, np.ndarray | torch.Tensor) or (
        isinstance(X_or_shards, list | tuple)
        and len(X_or_shards)
        and not isinstance(X_or_shards[0], ShardSource | str | os.PathLike)
    ):
        X = np.asarray(X_or_shards)
        if X.ndim != 2:
            raise InputError(f"features X must be a 2-D (events, features) array, got {X.shape}")
        n = len(X)
        S = max(1, min(n_shards, n))
        extra = {
            "y": y,
            "w": weights,
            "attack_mask": attack_mask,
            "constraint_mask": constraint_mask,
            "movable": movable,
        }
        label = {"y": "labels y", "w": "weights"}
        for k, v in extra.items():
            if v is not None and np.shape(v)[:1] != (n,):
                raise InputError(
                    f"{label.get(k, k)} has {len(np.atleast_1d(v))} entries but X has {n} rows"
                )
        if movable is not None and np.shape(movable) != X.shape:
            raise InputError(f"movable must have shape {X.shape}, got {np.shape(movable)}")
        srcs = [
            ShardSource(arrays={"X": X[s::S], **{k: (None if v is None else np.asarray(v)[s::S])
                                                 for k, v in extra.items()}})
            for s in range(S)
        ]  # fmt: skip
        return srcs, "roundrobin"
    if any(v is not None for v in (y, weights, attack_mask, constraint_mask, movable)):
        raise InputError(
            "with shard sources, y/weights/masks come from the sources (keys y, w, "
            "attack_mask, constraint_mask, movable of each .npz), not from arguments"
        )
    srcs = [
        s if isinstance(s, ShardSource) else ShardSource(path=os.fspath(s)) for s in X_or_shards
    ]
    if not srcs:
        raise InputError("no shards given")
    return srcs, "concat"


def sharded_attack(
    client: Any,
    X_or_shards: np.ndarray | Sequence[ShardSource | str | os.PathLike[str]],
    model: torch.nn.Module | ModelAdapter,
    y: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    *,
    attack_mask: np.ndarray | None = None,
    constraint_mask: np.ndarray | None = None,
    movable: np.ndarray | None = None,
    feature_names: list[str] | None = None,
    config: ConservAttackConfig | dict | None = None,
    n_shards: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    max_rebuilds: int = 3,
    callback: Callable[[dict[str, Any]], None] | None = None,
    scorer: str = "auto",
    output_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> AttackResult | ShardedAttackResult:
    """CONSERVAttack with the events sharded over the workers of ``client``.

    Parameters
    ----------
    client
        A ``distributed.Client``.  Shards are placed on the workers advertising a ``GPU``
        resource when any do (the model then runs there on CUDA), else on every worker.
    X_or_shards
        Either the features (n, d), split round-robin into ``n_shards`` shards (default: one
        per worker) so that the global event order is the row order; or shard sources
        (:class:`ShardSource`, or paths of ``.npz`` files with ``X`` and optionally ``y``,
        ``w``, ``attack_mask``, ``constraint_mask``, ``movable`` on storage every worker
        reads), loaded on
        the workers; the result's rows are then the shards concatenated, and events are
        ordered by ``local row · n_shards + shard``.
    model, y, weights, attack_mask, constraint_mask, movable, feature_names, config, overrides
        As :meth:`advsyst.attacks.ConservAttack.run`.  ``config.block_size`` is the global
        block: one round scores ``block_size`` events, spread over the shards.
    checkpoint_dir
        Write a checkpoint there after every round (configuration and data fingerprints,
        state, round, iteration, move log).  The directory must not hold a run unless
        ``resume``.
    resume
        Continue the run checkpointed in ``checkpoint_dir``; the result is bit for bit the
        one of an uninterrupted run.  A checkpoint of another configuration or other data
        raises :class:`CheckpointMismatch` naming what differs.
    max_rebuilds
        How often one call may rebuild a shard whose worker died before giving up.
    callback
        Called after every round (once its checkpoint is written) with ``{"iteration",
        "round", "n_rounds", "shards": [{"worker", "pid"}, ...]}``, e.g. for monitoring.
    scorer
        Candidate scoring on the workers: ``"numba"`` (the CPU kernel), ``"torch"``
        (:func:`advsyst.attacks._torch_scorer.score_block_torch`, on CUDA where the worker
        sees a GPU, else on its CPU) or ``"auto"`` (torch on CUDA where the worker sees a
        GPU, else numba).  Both pick the same moves (up to the last bit of ``log`` at exact
        ties; see that module); ``provenance["sharded"]["scorers"]`` records what ran.
    output_dir
        Storage the workers and the client share: every shard writes its rows there
        (``shard-XXXX.npz``: ``X_adv``, ``fooled``, ``moved``, ``pred_clean``,
        ``pred_adv``, ``attack_mask``, ``constraint_mask`` and the global ``rows``,
        atomically, on its worker) and the call returns a :class:`ShardedAttackResult`
        that holds no per-event array.  A directory holding ``shard-*.npz`` files already
        is refused.

    Returns
    -------
    AttackResult or ShardedAttackResult
        As :meth:`ConservAttack.run` (rows gathered on the client), or, with
        ``output_dir``, a :class:`ShardedAttackResult`.  Either way the metrics come from
        the recheck on per-shard reductions; ``provenance["sharded"]`` records the shards,
        their workers and devices, rebuilds, rounds, bytes sent and time per phase.  The
        end in ``timing``: ``final`` (seconds of the recheck), ``final_round_trips``,
        ``final_bytes_from_workers`` (what the shards sent for it, independent of the
        number of events), ``final_auroc_bytes_from_workers`` (the AUROC's per-event
        scores, 17 bytes per event unweighted, 25 weighted; 0 without labels), then either
        ``gather`` / ``gather_bytes_from_workers`` (the rows brought to the client) or
        ``write`` / ``written_bytes`` (the shard files).
    """
    t_start = time.perf_counter()
    if isinstance(config, ConservAttackConfig):
        config = config.to_dict()
    cfg = ConservAttackConfig.from_dict(config or {}, **overrides)
    G.check_supported(cfg)
    if scorer not in G.SCORERS:
        raise ConfigError(f"scorer must be one of {G.SCORERS}, got {scorer!r}")
    if resume and checkpoint_dir is None:
        raise InputError("resume=True needs checkpoint_dir")
    if output_dir is not None and any(Path(output_dir).glob("shard-*.npz")):
        raise InputError(
            f"output directory {os.fspath(output_dir)!r} already holds shard files "
            "(shard-*.npz) of another run; choose an empty directory"
        )
    if n_shards is None:
        info = (
            client.scheduler_info(n_workers=-1)
            if _accepts_n_workers(client)
            else client.scheduler_info()
        )
        n_shards = max(1, len(gpu_workers(client) or info["workers"]))
    if not isinstance(n_shards, int) or n_shards < 1:
        raise InputError(f"n_shards must be a positive integer, got {n_shards!r}")
    sources, layout = _sources(
        X_or_shards, y, weights, attack_mask, constraint_mask, n_shards, movable
    )
    co = _Coordinator(
        client, sources, model, cfg, checkpoint_dir, resume, max_rebuilds, callback, scorer
    )
    co.history, co.best_fr, co.best_it, co.it = [], 0.0, 0, 1
    infos = co.start_shards()
    co.setup(infos, list(feature_names) if feature_names is not None else None, layout)
    co.best_fr = 0.0  # the clean data fools nothing
    start = None
    saved = co.check_checkpoint()
    if saved is not None:
        meta = json.loads(str(saved["meta"]))
        co.state.restore(saved)
        co.consts = co.state.constants()
        co.history, co.best_it, co.best_fr = meta["history"], meta["best_it"], meta["best_fr"]
        co.it = meta["it"]
        co.load_log(meta["n_segments"])
        log.info("resuming %s at iteration %d, round %d", checkpoint_dir, co.it, meta["next_round"])
        begins = [
            co.actors[s].rebuild(co.fingerprints[s], co.shard_log(s), co.it, co.best_it)
            for s in range(co.S)
        ]
        start = {**meta, "begins": [b.result() for b in begins]}
    co.iterate(start)
    metrics = co.final_recheck()
    metrics["seconds"] = time.perf_counter() - t_start
    metrics["n_iterations_run"] = len(co.history)
    devices = [inf["device"] for inf in infos]
    sharded = {
        "n_shards": co.S,
        "layout": layout,
        "workers": co.where,
        "devices": devices,
        "scorers": [inf["scorer"] for inf in infos],
        "sources": [s.describe() for s in sources],
        "fingerprints": co.fingerprints,
        "rebuilds": co.rebuilds,
        "resumed": saved is not None,
        "timing": co.timing,
    }
    if output_dir is not None:
        written = co.write_rows(Path(output_dir), layout)
        return ShardedAttackResult(
            paths=[Path(w["path"]) for w in written],
            n_events=co.n,
            history=co.history,
            metrics=metrics,
            config=cfg.to_dict(),
            seed=cfg.seed,
            best_iteration=co.best_it,
            provenance=provenance(cfg.to_dict(), cfg.seed, attack="conservattack", sharded=sharded),
        )
    r = co.gather_rows(layout)
    return attack_result(
        cfg, None, r["X_adv"], r["fooled"], r["pred_clean"], r["pred_adv"], r["attack_mask"],
        r["constraint_mask"], co.history, metrics, co.best_it, moved=r["moved"], sharded=sharded,
    )  # fmt: skip
