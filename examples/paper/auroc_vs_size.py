"""Replay of the paper's detector AUROC against the training size (Section 9, Fig. 24).

One attack of the detector-training and of the test slice (Table 14); for each size the
detector (Table 22) trains on that many clean + adversarial jets (50/50) and is scored on
all test pairs; R seeds per size.

    python examples/paper/auroc_vs_size.py --quick --workdir out/
"""

from __future__ import annotations

import common

from advsyst.attacks.cli import load_config
from advsyst.workflows.studies import run_study


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], quick_runs=2, full_runs=5)
    common.add_detector_options(p)
    args = p.parse_args()
    events, runs = common.sizes(args)
    paths = common.prepare(args.workdir, events, args.seed, args.epochs)
    cfg = {
        "attack": load_config(str(common.CONFIGS / args.attack_config)),
        "n_runs": runs,
        "seed": args.seed,
        "detector_inputs": args.inputs,
        "sizes": [100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000],
    }
    out = f"{args.workdir}/study_auroc_vs_size_{events}ev_{args.inputs}_{args.attack_config.split('.')[0]}"
    r = run_study("auroc-vs-size", paths["data"], paths["model"], cfg, out,
                  resume=args.resume).result  # fmt: skip
    c = r["curve"]
    rows = [(f"AUROC, {x['size']} training jets", common.pm(x), "", "") for x in c]
    rows[0] = (*rows[0][:2], "rises with size, not saturated at small sizes",
               "Sect. 9, Fig. 24 (Higgs)")  # fmt: skip
    print(common.table(rows))
    print(f"\nfigure: {out}/auroc-vs-size.png")


if __name__ == "__main__":
    main()
