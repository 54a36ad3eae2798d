"""`medrobust <step> [options]`: the only module that parses arguments.

One sub-command per entry of the step table (steps.STEPS), its options generated from the
step's config dataclass: each field becomes `--field-name` (nested data settings without a
prefix; `data.path` is `--data`), with the field's help text and default. The options are
collected as text and handed to `Config.from_dict`, so the CLI, MLproject and pipelines share
one set of types, defaults and checks. Nothing else happens here.
"""

import argparse
import logging
import sys
import typing
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any

from . import stopping
from .config import Settings, non_empty
from .errors import GateFailed, MedrobustError
from .steps import STEPS

log = logging.getLogger("medrobust")


def leaves(config_type: type[Settings], prefix: str = "") -> Iterator[tuple[str, Field[Any]]]:
    """(dotted name, field) of every setting of a config dataclass, nested ones included."""
    for f in fields(config_type):
        if is_dataclass(f.type):
            yield from leaves(f.type, prefix=f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def option(f: Field[Any]) -> str:
    """The CLI option of a field: --<flag or name>, dashes for underscores."""
    return "--" + (f.metadata.get("flag") or f.name).replace("_", "-")


def _default_text(f):
    value = f.default_factory() if f.default is MISSING else f.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, float) and abs(value * 255 - round(value * 255)) < 1e-9 and 0 < value < 1:
        return f"{round(value * 255)}/255"  # epsilons read as people write them
    return str(value)


def _metavar(f):
    kind = f.type
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is tuple:
        return "A,B,..." if args[-1] is Ellipsis else ",".join("X" * len(args))
    kind = args[0] if args else kind
    return {int: "N", float: "X", bool: "BOOL", str: "TEXT"}.get(kind, "VALUE")


def _help(f):
    text = f.metadata.get("help", "")
    choices = f.metadata.get("choices")
    if choices:
        text += f" [{' | '.join(map(str, choices))}]"
    return f"{text} (default: {_default_text(f)})".replace("%", "%%")


def _group_title(step, dotted):
    """Options are grouped by where they are defined: the step's own, data, training, run."""
    if "." in dotted:
        return dotted.split(".")[0]
    owner = next(c for c in reversed(step.config.__mro__) if dotted in vars(c).get("__annotations__", {}))
    return {"StepConfig": "run", "TrainConfig": "training", "ModelStepConfig": step.name}.get(owner.__name__, step.name)


class JoinRepeated(argparse.Action):
    """An option given several times (--set a=1 --set b=2) is one comma-joined text, the form
    MLproject passes it in."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, values if before in (None, argparse.SUPPRESS) else f"{before},{values}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medrobust",
                                     description="Attack and defend medical image classifiers, tracked in MLflow.")
    parser.add_argument("--verbose", action="store_true", help="debug lines and third-party start-up output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")
    for step in STEPS.values():
        summary = step.summary.replace("%", "%%")  # argparse formats help text with %
        p = sub.add_parser(step.name, help=summary, description=summary)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="debug lines and third-party start-up output")
        titled = [(_group_title(step, dotted), dotted, f) for dotted, f in leaves(step.config)]
        order = [step.name, "data", "training", "run"]
        groups = {t: p.add_argument_group(t) for t in order if any(title == t for title, _, _ in titled)}
        for title, dotted, f in titled:
            if f.metadata.get("positional") and typing.get_origin(f.type) is not tuple:
                p.add_argument(dotted, nargs="?", default=argparse.SUPPRESS, metavar=f.name.upper(), help=_help(f))
            elif f.metadata.get("positional"):
                required = f.metadata.get("check") is non_empty
                p.add_argument(dotted, nargs="+" if required else "*", metavar=f.name.upper(), help=_help(f))
            else:
                groups[title].add_argument(option(f), dest=dotted, default=argparse.SUPPRESS, metavar=_metavar(f),
                                           help=_help(f), action=JoinRepeated if f.metadata.get("repeat") else "store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; returns the exit status (0, 2 for bad input; a bug raises)."""
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    verbose = args.pop("verbose", False)
    from . import console

    console.configure(verbose)
    step = STEPS[command]
    # SIGTERM stops at the next checkpoint and unwinds like Ctrl-C (stopping.py): every open
    # run is ended KILLED and nothing half-done is registered.
    try:
        with stopping.stop_on_sigterm():
            step.run(step.config.from_dict(args))
    except MedrobustError as e:
        # Expected: bad input. One line naming the file, row, parameter or URI; no traceback.
        log.error("medrobust %s: %s: %s", command, "failed" if isinstance(e, GateFailed) else "error", e)
        return getattr(e, "exit_status", 2)
    except KeyboardInterrupt as e:
        log.error("medrobust %s: stopped (%s); its runs are marked KILLED", command, str(e) or "interrupted")
        return 143 if isinstance(e, stopping.Terminated) else 130  # 128 + the signal, as shells report it
    return 0


if __name__ == "__main__":
    sys.exit(main())
