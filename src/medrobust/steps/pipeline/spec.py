"""Reading a pipeline file: YAML with line numbers, `--set` overrides, and every step, setting
and reference checked against the step table before anything runs."""

import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from ...errors import ConfigError

STEP_KEYS = ("step", "with", "grid")
TOP_KEYS = ("settings", "steps")


@dataclass(frozen=True)
class Ref:
    """A "${name}" in the file: the output of every instance of step `name`."""
    name: str


@dataclass
class StepSpec:
    name: str
    step: str
    settings: dict  # {dotted setting: value or Ref}, the file's settings and `with`
    grid: dict  # {dotted setting: [values or Refs]}
    line: int
    lines: dict  # {dotted setting: line}
    path: str = ""  # the pipeline file


def _err(path, line, message):
    return ConfigError(f"{path}:{line}: {message}" if line else f"{path}: {message}")


def _lines(node, prefix=()):
    """{key path: line} of every mapping key of a composed YAML node (1-based lines)."""
    out = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = prefix + (str(key.value),)
            out[k] = key.start_mark.line + 1
            out.update(_lines(value, k))
    return out


def read(path: Path | str) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """(document, {key path: line}) of a pipeline file; ConfigError naming file and line for
    YAML that does not parse, duplicate keys or a document that is not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"pipeline file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"pipeline file {path} cannot be read: {e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise _err(path, mark.line + 1 if mark else None, f"not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(document, dict):
        raise _err(path, 1, "a pipeline is a mapping with `steps` (and optional `settings`)")
    _no_duplicates(node, path)
    return document, _lines(node)


def _no_duplicates(node, path):
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            if key.value in seen:  # PyYAML keeps the last silently; a pipeline refuses it
                raise _err(path, key.start_mark.line + 1, f"key {key.value!r} given twice")
            seen.add(key.value)
            _no_duplicates(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _no_duplicates(item, path)


def _ref(value, where):
    """Ref for a "${name}" string (each element of a list likewise), the value itself
    otherwise; a partial "${" is refused."""
    if isinstance(value, list):
        return [_ref(v, where) for v in value]
    if isinstance(value, str) and "${" in value:
        text = value.strip()
        if not (text.startswith("${") and text.endswith("}") and text.count("${") == 1):
            raise where(f"a reference is a whole value \"${{step}}\", got {value!r}")
        return Ref(text[2:-1].strip())
    return value


def _check_reference(kinds, step, key, ref, complain):
    """ConfigError unless setting `key` of `step` (a Step) may take the output of ${ref.name}."""
    from .. import STEPS

    kind, body = kinds[ref.name]
    feeding = sorted({k for s in STEPS.values() for k in s.references})
    if key not in step.references:
        raise complain(f"{key} cannot take a reference (references feed {', '.join(feeding)}); give a value")
    if not step.takes(key, STEPS[kind]):
        accepted = [s.name for s in STEPS.values() if s.in_pipeline and step.takes(key, s)]
        article = "an" if str(kind)[:1] in "aeiou" else "a"
        raise complain(f"{key} takes the output of {' or '.join(accepted)}; ${{{ref.name}}} is {article} {kind} step")
    problem = STEPS[kind].call("referred", body.get("with") or {})
    if problem:
        raise complain(f"${{{ref.name}}} is {problem}")


def _field(config_type, dotted):
    """The dataclass field of a dotted setting, or None."""
    head, _, rest = dotted.partition(".")
    f = next((f for f in fields(config_type) if f.name == head), None)
    if f is None:
        return None
    if rest:
        return _field(f.type, rest) if is_dataclass(f.type) else None
    return None if is_dataclass(f.type) else f


def _is_list(f):
    kind = f.type
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return typing.get_origin(kind) is tuple or (args and typing.get_origin(args[0]) is tuple)


def split_overrides(text: str | None) -> list[str]:
    """The STEP.SETTING=VALUE items of a --set text: split at the commas that start a new
    item, so a value may hold commas (poison.poison_fractions=0.1,0.3,inception.weights=/w.h5)."""
    if not text:
        return []
    return [item.strip() for item in re.split(r",(?=\s*[A-Za-z_][\w-]*\.[\w.]+=)", text) if item.strip()]


def apply_overrides(document: dict[str, Any], overrides: Iterable[str], path: Path | str) -> dict[str, Any]:
    """The document with each "step.setting=value" of `overrides` set in that step's `with`
    ("settings.setting=value": in the shared settings); values read as YAML."""
    for item in overrides:
        target, dot, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not (dot and eq and key):
            raise ConfigError(f"--set {item!r}: expected STEP.SETTING=VALUE")
        try:
            value = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
        if target == "settings":
            document["settings"] = dict(document.get("settings") or {}) | {key: value}
            continue
        steps = document.get("steps") or {}
        if target not in steps or not isinstance(steps[target], dict):
            raise ConfigError(f"--set {item!r}: {path} has no step {target!r}")
        steps[target]["with"] = dict(steps[target].get("with") or {}) | {key: value}
    return document


def parse(path: Path | str, overrides: Sequence[str] = ()) -> list[StepSpec]:
    """The StepSpecs of a pipeline file, in file order, every name, setting and reference
    checked (ConfigError naming the file and line); `overrides` as apply_overrides."""
    from .. import STEPS

    pipeline_steps = [s for s in STEPS if STEPS[s].in_pipeline]

    document, lines = read(path)
    document = apply_overrides(document, overrides, path)
    for key in document:
        if key not in TOP_KEYS:
            raise _err(path, lines.get((str(key),)), f"unknown key {key!r}; a pipeline has {', '.join(TOP_KEYS)}")
    shared = document.get("settings") or {}
    steps = document.get("steps")
    if not isinstance(shared, dict):
        raise _err(path, lines.get(("settings",)), "settings is a mapping of setting: value")
    if not isinstance(steps, dict) or not steps:
        raise _err(path, lines.get(("steps",)), "steps is a mapping of step name: {step, with, grid}")
    specs, names = [], list(map(str, steps))
    kinds = {str(n): (b.get("step") if isinstance(b, dict) else None, b) for n, b in steps.items()}
    for key, value in shared.items():
        if "${" in str(value):
            raise _err(path, lines.get(("settings", str(key))), f"settings: {key} holds a reference; references "
                                                                "belong in a step's `with` or `grid`")
    for name, body in steps.items():
        name = str(name)
        line = lines.get(("steps", name))

        def at(key=None, sub=None, _name=name, _line=line):
            return lines.get(("steps", _name) + ((key,) if key else ()) + ((sub,) if sub else ()), _line)

        if not isinstance(body, dict):
            raise _err(path, line, f"step {name!r} is a mapping with `step` (and `with`, `grid`)")
        for key in body:
            if key not in STEP_KEYS:
                raise _err(path, at(str(key)), f"step {name!r}: unknown key {key!r}; a step has {', '.join(STEP_KEYS)}")
        kind = body.get("step")
        if kind not in pipeline_steps:
            raise _err(path, at("step"), f"step {name!r}: unknown step {kind!r}; expected one of "
                                         f"{', '.join(pipeline_steps)}")
        config_type = STEPS[kind].config
        settings, grid, where = {}, {}, {}
        for section in ("with", "grid"):
            part = body.get(section) or {}
            if not isinstance(part, dict):
                raise _err(path, at(section), f"step {name!r}: {section} is a mapping of setting: value")
            for key, value in part.items():
                key, line_of = str(key), at(section, str(key))
                f = _field(config_type, key)
                if f is None or key in ("experiment", "run_name"):
                    raise _err(path, line_of, f"step {name!r}: {kind} has no setting {key!r}"
                                              if f is None else f"step {name!r}: {key} is the pipeline's")

                def complain(message, _line=line_of):
                    return _err(path, _line, f"step {name!r}: {message}")

                if section == "grid":
                    if not isinstance(value, list) or not value:
                        raise complain(f"grid {key} takes a non-empty list of values, got {value!r}")
                    if key in settings:
                        raise complain(f"{key} is given in `with` and in `grid`; give it once")
                    grid[key] = _ref(value, complain)
                    refs = grid[key]
                else:
                    settings[key] = _ref(value, complain)
                    refs = settings[key] if isinstance(settings[key], list) else [settings[key]]
                where[key] = line_of
                for ref in refs:
                    if isinstance(ref, list):  # a grid value that is a list (of a list setting)
                        if any(isinstance(r, Ref) for r in ref):
                            raise complain(f"a list setting ({key}) gathers every instance; give it in `with`")
                        continue
                    if isinstance(ref, Ref):
                        if ref.name not in names:
                            raise complain(f"refers to ${{{ref.name}}}, which is no step of this pipeline")
                        if ref.name == name:
                            raise complain(f"refers to ${{{ref.name}}}, itself")
                        if names.index(ref.name) > names.index(name):
                            raise complain(f"refers to ${{{ref.name}}}, which comes later (steps run in file "
                                           "order; a reference back is a cycle)")
                        if section == "grid" and _is_list(f):
                            raise complain(f"a list setting ({key}) gathers every instance; give it in `with`")
                        _check_reference(kinds, STEPS[kind], key, ref, complain)
                    elif section == "with" and isinstance(settings[key], list) and not _is_list(f):
                        raise complain(f"{key} takes one value, got the list {settings[key]!r} (a grid varies it)")
        for key in STEPS[kind].required:
            if key not in settings and key not in grid:
                raise _err(path, line, f"step {name!r}: {kind} in a pipeline needs `{key}` (a \"${{step}}\" "
                                       "reference or a value)")
        own = {k: v for k, v in shared.items() if _field(config_type, str(k)) is not None and k not in grid}
        shared_lines = {k: lines.get(("settings", str(k))) for k in own if k not in settings}
        specs.append(StepSpec(name, kind, own | settings, grid, line, shared_lines | where, str(path)))
    for key in shared:
        if not any(_field(STEPS[s.step].config, str(key)) for s in specs):
            raise _err(path, lines.get(("settings", str(key))), f"setting {key!r} belongs to no step of this pipeline")
    return specs

