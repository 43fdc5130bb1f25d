"""``advsyst generate``: Pythia 8 + FastJet samples in PFNano layout (and the Donut toy).

Examples::

    advsyst generate --process ttbar --events 3000 --seed 1 --out ttbar.root
    advsyst generate --process ww --events 3000 --seed 2 --out ww.root --workers 2
    advsyst generate --process mix --pseudo-data --events 3000 --seed 3 --out data.root
    advsyst generate --process donut --events 20000 --out donut.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from advsyst.errors import InputError

__all__ = ["add_arguments", "run"]


def _parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    out = []
    for part in text.split(","):
        name, _, frac = part.partition("=")
        try:
            out.append((name.strip(), float(frac)))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"bad mixture entry {part!r} (want name=fraction)"
            ) from exc
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``generate`` options to ``parser``."""
    from advsyst.data.generate import DEFAULT_PTHAT_MIN

    parser.add_argument(
        "--process",
        required=True,
        choices=["ttbar", "ww", "qcd", "mix", "donut"],
        help="physics process; 'mix' is a mixture (pseudo-data); 'donut' writes the toy as .npz",
    )
    parser.add_argument("--events", type=int, required=True, help="number of events")
    parser.add_argument("--seed", type=int, default=1, help="master seed (default 1)")
    parser.add_argument(
        "--out", type=Path, required=True, help="output file (.root; .npz for donut)"
    )
    parser.add_argument(
        "--pseudo-data",
        action="store_true",
        help="collision-data stand-in: other tune and detector, no genWeight, no truth",
    )
    parser.add_argument(
        "--sqrt-s", type=float, default=13000.0, help="centre-of-mass energy in GeV (8000, 13000)"
    )
    parser.add_argument(
        "--pthat-min",
        type=float,
        default=None,
        help=f"minimum pT of the hard process in GeV (default {DEFAULT_PTHAT_MIN:g})",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--jet-r", type=float, default=0.4, help="radius of Jet (default 0.4)")
    parser.add_argument(
        "--fatjet-r", type=float, default=0.8, help="radius of FatJet (default 0.8)"
    )
    parser.add_argument(
        "--mix",
        type=_parse_mix,
        default=None,
        help="mixture for --process mix, e.g. ttbar=0.45,ww=0.45,qcd=0.1",
    )
    parser.add_argument(
        "--negative-weight-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="NLO-like sample: a fraction F of events (e.g. 0.25) gets a negative genWeight; "
        "the Runs tree's genEventSumw holds the signed sum",
    )
    parser.add_argument("--block-size", type=int, default=100, help="events per block")
    parser.add_argument(
        "--signal-fraction", type=float, default=0.5, help="donut only: fraction of signal"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``advsyst generate``."""
    if args.events < 1:
        raise InputError(f"--events must be >= 1, got {args.events}")
    if args.process == "donut":
        from advsyst._io import atomic_savez
        from advsyst.data.donut import DONUT_FEATURES, make_donut

        X, y = make_donut(args.events, seed=args.seed, signal_fraction=args.signal_fraction)
        atomic_savez(args.out, X=X, y=y, feature_names=np.array(DONUT_FEATURES))
        print(f"wrote {args.out}: {len(y)} donut events")
        return 0
    from advsyst.data.generate import generate_sample
    from advsyst.data.pfnano_writer import read_provenance

    options = {"jet_r": args.jet_r, "fatjet_r": args.fatjet_r, "block_size": args.block_size}
    if args.mix is not None:
        options["mix"] = args.mix
    if args.negative_weight_fraction:
        options["negative_weight_fraction"] = args.negative_weight_fraction
    path = generate_sample(
        args.process,
        args.events,
        args.out,
        seed=args.seed,
        pseudo_data=args.pseudo_data,
        sqrt_s=args.sqrt_s,
        pthat_min=args.pthat_min,
        workers=args.workers,
        progress=not args.no_progress,
        **options,
    )
    prov = read_provenance(path) or {}
    spe = prov.get("seconds_per_event")
    timing = f" ({1e3 * spe:.1f} ms/event)" if spe else ""
    print(f"wrote {path}: {args.events} events{timing}")
    return 0
