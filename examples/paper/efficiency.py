"""Replay of the paper's detector clean-event efficiency on simulation vs data (Fig. 16).

R detector runs (Table 14 adversaries, Table 22 detector); each one's clean-event
efficiency (fraction of clean jets *not* flagged) against the threshold on the simulated
test slice and on the generated pseudo-data (a different tune and detector response),
averaged over runs with the run-to-run spread as the band.

    python examples/paper/efficiency.py --quick --workdir out/
"""

from __future__ import annotations

import common

from advsyst.attacks.cli import load_config
from advsyst.workflows.studies import run_study


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], quick_runs=3, full_runs=10)
    args = p.parse_args()
    events, runs = common.sizes(args)
    paths = common.prepare(args.workdir, events, args.seed, args.epochs)
    cfg = {
        "attack": load_config(str(common.CONFIGS / "paper_table14_ttww_detector.yaml")),
        "n_runs": runs,
        "seed": args.seed,
        "detector": {"train_fraction": 0.8},
        "threshold": 0.8,
    }
    out = f"{args.workdir}/study_efficiency_{events}ev"
    r = run_study("efficiency", paths["data"], paths["model"], cfg, out,
                  real_data=paths["real_data"], resume=args.resume).result  # fmt: skip
    a = r["at_threshold"]
    print(
        common.table(
            [
                (
                    "clean efficiency, simulation, threshold 0.8",
                    common.pm(a["simulation"]),
                    "≈ 0.8",
                    "Sect. 8, Fig. 16 (tt̄ vs WW)",
                ),
                (
                    "clean efficiency, data, threshold 0.8",
                    common.pm(a["data"]),
                    "≈ simulation (larger run-to-run spread)",
                    "Sect. 8, Fig. 16",
                ),
                ("data − simulation pull", f"{a['comparison']['pull']:.2f}", "≈ 0", "Fig. 16"),
            ]
        )  # fmt: skip
    )
    print(f"\nfigure: {out}/efficiency.png")


if __name__ == "__main__":
    main()
