"""The ``advsyst`` command.

Sub-commands (each handler lives next to the code it drives and is imported lazily so
that ``advsyst --help`` stays fast):

* ``attack``    CONSERVAttack on a model + feature file      -> advsyst.attacks.cli
* ``train``     the paper's MLP tagger on a feature file      -> advsyst.models.cli
* ``generate``  Pythia 8 + FastJet samples in PFNano layout   -> advsyst.data.cli
* ``features``  coffea feature processor over ROOT files      -> advsyst.features.cli
* ``demo``      the main job, end to end                      -> advsyst.workflows.demo
* ``study``     the paper's robustness studies                -> advsyst.workflows.studies
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from advsyst import __version__
from advsyst.errors import AdvsystError

__all__ = ["main", "build_parser"]

# sub-command -> (module, function that adds arguments, function that runs)
_COMMANDS = {
    "attack": ("advsyst.attacks.cli", "Run CONSERVAttack on a model and a feature file."),
    "train": ("advsyst.models.cli", "Train the paper's MLP tagger on a feature file."),
    "generate": ("advsyst.data.cli", "Generate Pythia 8 + FastJet samples in PFNano layout."),
    "features": ("advsyst.features.cli", "Extract jet features from NanoAOD/PFNano ROOT files."),
    "demo": ("advsyst.workflows.demo", "The main job: samples -> tagger -> attack -> systematics."),
    "study": (
        "advsyst.workflows.studies",
        "The paper's robustness studies (detector, training...).",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advsyst", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"advsyst {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (modname, help_) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:  # keep the other sub-commands usable
            p.set_defaults(_module=None, _import_error=f"{modname}: {exc}")
            continue
        mod.add_arguments(p)
        p.set_defaults(_module=modname)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="[advsyst %(asctime)s] %(message)s",
        datefmt="%H:%M:%S",
    )
    if args._module is None:
        print(f"advsyst {args.command}: unavailable ({args._import_error})", file=sys.stderr)
        return 2
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except AdvsystError as exc:
        print(f"advsyst {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"advsyst {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
