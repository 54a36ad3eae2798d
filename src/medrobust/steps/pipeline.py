"""`medrobust pipeline FILE`: a YAML grid of steps run as one parent run, each step a nested run.

    settings:                    # every step whose config has the setting gets it
      data.image_size: 64
    steps:
      train:
        step: train
        grid: {arch: [small_cnn, mobile_cnn]}
      attack:
        step: attack
        with: {model_uri: "${train}", eps: 2/255}
        grid: {method: [fgsm, uap_fast]}
      report:
        step: report
        with: {runs: "${evaluate}"}

A step names an earlier step's output with "${name}": the model URI of train, poison and
defend (the registered version where there is one), the run id of every other step. A
reference in a single-valued setting fans out, one instance per instance of the step it names;
in a list setting (report's runs) it gathers them all. An instance combines only instances
of one lineage (an attack on the defended small_cnn never takes the small_resnet as its
surrogate by accident). Each instance is keyed by a hash of its full resolved configuration,
the run ids it consumes, the versions moving aliases point at, the package version and a hash
of the package source (the git commit is logged, not keyed: see instance_key):
a finished run of the experiment holding the same key is reused, not redone, so a pipeline
killed half-way resumes where it stopped and a changed setting re-runs exactly the instances
downstream of it. MLflow's multistep example keys on entry point and parameters only, and
misses code and upstream changes; this key does not.

Bad files fail before any run, naming the file and line: an unknown step, setting or key, a
reference to a step that does not exist or comes later, or into a setting that cannot take it,
a missing required setting, a value out of range, an unknown network or attack.
"""

import hashlib
import itertools
import math
import json
import logging
import re
import subprocess
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import yaml

from .. import __version__, tracking
from ..config import PipelineConfig, flatten
from ..errors import ConfigError, GateFailed
from ..evaluation.report import format_eps

log = logging.getLogger(__name__)

# Steps a pipeline may hold (baseline and predict are not grid steps).
PIPELINE_STEPS = ("train", "poison", "attack", "defend", "evaluate", "tune", "promote", "report")
# Settings a pipeline step must give: the registry's moving aliases (@baseline) would make a
# pipeline's result depend on whatever ran last, so the model comes from the file.
REQUIRED = {"attack": ("model_uri",), "defend": ("model_uri",), "evaluate": ("model_uri",),
            "promote": ("model_uri",), "report": ("runs",)}
# The settings that name an instance, e.g. "attack fgsm 2/255 on small_cnn".
NAMED_BY = {"train": ("arch",), "poison": ("arch", "poison_fractions"), "attack": ("method", "eps"),
            "defend": ("defense",), "evaluate": ("suites",), "tune": ("objective",), "promote": (), "report": ()}
MODEL_STEPS = ("train", "poison", "defend")  # their output is a model URI
STEP_KEYS = ("step", "with", "grid")
TOP_KEYS = ("settings", "steps")
KEY_TAG, OUTPUT_TAG, NAME_TAG = "medrobust.pipeline_key", "medrobust.pipeline_output", "medrobust.pipeline_step"


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


@dataclass
class Instance:
    spec: StepSpec
    index: int  # among the instances of its step
    values: dict  # {dotted setting: value, Ref resolved to the upstream Instance, or a list of Instances}
    lineage: dict  # {step name: instance index} of itself and every instance upstream
    label: str = ""
    subject: str = ""  # what it is, for the labels of the instances downstream
    key: str | None = None
    run_id: str | None = None
    output: str | None = None
    reused: bool = False
    note: str = ""

    @property
    def upstream(self):
        out = []
        for v in self.values.values():
            out += [u for u in (v if isinstance(v, list) else [v]) if isinstance(u, Instance)]
        return out


@dataclass
class PipelineResult:
    run_id: str  # the parent run
    instances: list  # [{"name", "step", "label", "run_id", "output", "reused", "key", "note"}] in run order


# --- reading the file ------------------------------------------------------------------------

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


def read(path):
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


# What a reference may feed: a model setting takes a model (train, poison of one fraction,
# defend); report's runs take evaluate runs. Anything else would fail hours in, not here.
REFERENCE_TAKES = {"model_uri": MODEL_STEPS, "attack_model_uri": MODEL_STEPS, "retrained_uri": ("defend",),
                   "runs": ("evaluate",)}


def _check_reference(kinds, key, ref, complain):
    takes = REFERENCE_TAKES.get(key)
    kind, body = kinds[ref.name]
    if takes is None:
        raise complain(f"{key} cannot take a reference (references feed "
                       f"{', '.join(REFERENCE_TAKES)}); give a value")
    if kind not in takes:
        article = "an" if str(kind)[:1] in "aeiou" else "a"
        raise complain(f"{key} takes the output of {' or '.join(takes)}; ${{{ref.name}}} is {article} {kind} step")
    if kind == "poison":  # a sweep's output is its parent run, not a model
        fractions = (body.get("with") or {}).get("poison_fractions")
        if isinstance(fractions, list) and len(fractions) != 1 or isinstance(fractions, str) and "," in fractions:
            raise complain(f"${{{ref.name}}} is a poison sweep, not one model: give it one fraction per "
                           "instance (grid: {poison_fractions: [[0.1], [0.3]]})")


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


def split_overrides(text):
    """The STEP.SETTING=VALUE items of a --set text: split at the commas that start a new
    item, so a value may hold commas (poison.poison_fractions=0.1,0.3,inception.weights=/w.h5)."""
    if not text:
        return []
    return [item.strip() for item in re.split(r",(?=\s*[A-Za-z_][\w-]*\.[\w.]+=)", text) if item.strip()]


def apply_overrides(document, overrides, path):
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


def parse(path, overrides=()):
    """The StepSpecs of a pipeline file, in file order, every name, setting and reference
    checked (ConfigError naming the file and line); `overrides` as apply_overrides."""
    from . import STEPS

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
        if kind not in PIPELINE_STEPS:
            raise _err(path, at("step"), f"step {name!r}: unknown step {kind!r}; expected one of "
                                         f"{', '.join(PIPELINE_STEPS)}")
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
                        _check_reference(kinds, key, ref, complain)
                    elif section == "with" and isinstance(settings[key], list) and not _is_list(f):
                        raise complain(f"{key} takes one value, got the list {settings[key]!r} (a grid varies it)")
        for key in REQUIRED.get(kind, ()):
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


# --- instances -------------------------------------------------------------------------------

def _consistent(lineages):
    """Whether lineages agree on every step they share (one network, one defense ...)."""
    merged = {}
    for lineage in lineages:
        for step, index in lineage.items():
            if merged.setdefault(step, index) != index:
                return False
    return True


def expand(specs, max_instances=1000):
    """Every Instance of every step, in run order (file order, then grid order). A step whose
    grid would make more than `max_instances` instances, or a file that would in all, is refused
    before anything is built (a typo'd grid of 10^6 runs would otherwise expand for minutes)."""
    by_name, out = {}, []
    for spec in specs:
        config_type = _config_type(spec.step)
        axes = []  # [(setting, [choice])]: a choice is a value or an upstream Instance
        for key, values in spec.grid.items():
            choices = []
            for v in values:
                choices += by_name[v.name] if isinstance(v, Ref) else [v]
            axes.append((key, choices))
        gathers = {}  # {list setting: [Ref or literal]}: every consistent instance of each Ref
        for key, v in spec.settings.items():
            if isinstance(v, list) and any(isinstance(e, Ref) for e in v):
                gathers[key] = v
            elif isinstance(v, Ref):
                if _is_list(_field(config_type, key)):
                    gathers[key] = [v]
                else:
                    axes.append((key, by_name[v.name]))
        size = math.prod(len(choices) for _, choices in axes)
        if size > max_instances or len(out) + size > max_instances:
            raise _err(spec.path, spec.line, f"step {spec.name!r}: its grid makes up to {size:,} runs "
                       f"({len(out) + size:,} with the steps before it), over max_instances {max_instances:,}; "
                       "shrink the grid or raise --max-instances")
        mine = []
        for combo in itertools.product(*(choices for _, choices in axes)):
            picked = dict(zip((k for k, _ in axes), combo))
            ups = [v for v in picked.values() if isinstance(v, Instance)]
            if not _consistent([u.lineage for u in ups]):
                continue
            lineage = {}
            for u in ups:
                lineage |= u.lineage
            values = {k: v for k, v in spec.settings.items() if not isinstance(v, Ref)} | picked
            for key, elements in gathers.items():
                values[key] = [u for e in elements for u in (by_name[e.name] if isinstance(e, Ref) else [e])
                               if not isinstance(u, Instance) or _consistent([u.lineage, lineage])]
                if not any(isinstance(u, Instance) for u in values[key]):
                    raise _err(spec.path, spec.lines.get(key, spec.line), f"step {spec.name!r}: {key} gathers no "
                               "run: the steps it names have no instance on this step's lineage")
            instance = Instance(spec, len(mine), values, lineage | {spec.name: len(mine)})
            instance.label, instance.subject = _label(instance)
            mine.append(instance)
        if not mine:
            raise _err(spec.path, spec.line, f"step {spec.name!r} has no instance: the steps it names share no lineage")
        by_name[spec.name] = mine
        out += mine
    labels = [i.label for i in out]
    for i in out:  # a name two instances share gets the step's name: every run name says what it is
        if labels.count(i.label) > 1:
            i.label = f"{i.label} ({i.spec.name})"
    return out


def _config_type(step):
    from . import STEPS
    return STEPS[step].config


def _upstream(value):
    return isinstance(value, Instance) or (isinstance(value, list) and any(isinstance(u, Instance) for u in value))


def _shown(key, value):
    if "eps" in key and isinstance(value, float):
        return format_eps(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _label(instance):
    """('attack fgsm 2/255 on small_cnn', 'fgsm 2/255 on small_cnn'): the run name and what the
    instance is, named by its NAMED_BY settings (given or default) and grid values, then by the
    model it works on."""
    spec, values = instance.spec, instance.values
    defaults = _config_type(spec.step)()
    named = {k: values.get(k, getattr(defaults, k)) for k in NAMED_BY[spec.step]}
    named |= {k: values[k] for k in spec.grid if k not in named}
    own = " ".join(_shown(k, v) for k, v in named.items() if not _upstream(v))
    model, surrogate = values.get("model_uri"), values.get("attack_model_uri")
    if isinstance(model, Instance):
        subject = f"{own} on {model.subject}" if own else model.subject
        label = f"{spec.step} {subject}"
    else:
        subject = own or spec.name
        label = f"{spec.step} {own}".strip() if own else spec.name
    if isinstance(surrogate, Instance):
        label += f" from {surrogate.subject}"
    return label, subject


# --- running ---------------------------------------------------------------------------------

def _resolve(values):
    """The instance's settings with each upstream Instance replaced by its output."""
    out = {}
    for k, v in values.items():
        if isinstance(v, Instance):
            v = v.output
        elif isinstance(v, list) and v and all(isinstance(u, Instance) for u in v):
            v = [u.output for u in v]
        out[k] = v
    return out


def build_config(instance, pipeline):
    """The step config of an instance (its upstream outputs resolved), in the pipeline's
    experiment, seed unless the step sets its own."""
    config_type = _config_type(instance.spec.step)
    values = {"seed": pipeline.seed} | _resolve(instance.values)
    values |= {"experiment": pipeline.experiment, "run_name": instance.label}
    try:
        if instance.spec.step == "defend":
            values = _defense_settings(instance.spec, values)
        if instance.spec.step == "attack" and "method" in instance.spec.grid:
            values = _method_settings(instance.spec, values)
        return config_type.from_dict(values)
    except ConfigError as e:
        spec = instance.spec
        named = str(e).split(" ", 1)[0]  # a config's error starts with the setting's own name
        line = next((spec.lines[k] for k in spec.lines if k == named or k.endswith(f".{named}")), spec.line)
        raise _err(pipeline.file, line, f"step {spec.name!r}: {e}") from None


def _defense_settings(spec, values):
    """A defend step's settings for one instance. Where the grid varies the defense, a setting
    given once (`rounds: 2`) goes to the instances whose defense reads it (retrain, not llt);
    with one defense, a setting it does not read stays an error, as on the command line."""
    from ..config import DefendConfig
    from ..defenses import applicable, check_settings, parse_spec

    names = parse_spec(values.get("defense", DefendConfig().defense))
    eval_attacks = values.get("eval_attacks", DefendConfig().eval_attacks)
    also = ("uap_max_steps",) if "uap_fast" in (eval_attacks.split(",") if isinstance(eval_attacks, str)
                                                else eval_attacks) else ()
    if "defense" in spec.grid:
        values = applicable(names, values, also_read=also)
    check_settings(names, DefendConfig.from_dict(values), also_read=also)  # before any run, not hours in
    return values


def _method_settings(spec, values):
    """An attack instance's settings where the grid varies the method: a method's own setting
    given once (`max_steps: 60` beside `method: [fgsm, uap_fast]`) goes to the methods that take
    it; one that no method of the grid takes is an error. With one method, a setting it does not
    take stays an error (attack.method_params)."""
    from .. import attacks
    from .attack import method_settings

    methods = [m for m in spec.grid["method"] if m in attacks.ATTACKS]  # an unknown one: check_attack names it
    taken = set().union(*(attacks.ATTACKS[m].params for m in methods))
    stray = [k for k in values if k in method_settings() and k not in taken]
    if stray and methods:
        raise ConfigError(f"{stray[0]} is taken by none of the attack methods {', '.join(methods)}")
    takes = attacks.ATTACKS[values["method"]].params if values.get("method") in attacks.ATTACKS else ()
    return {k: v for k, v in values.items() if k in takes or k not in method_settings()}


def _placeholder(instance):
    """Stand-in outputs, so that every config is checked before any run."""
    return "models:/medrobust-placeholder/1" if instance.spec.step in MODEL_STEPS else "0" * 32


def check(instances, pipeline):
    """Build every instance's config with placeholder outputs: bad settings fail before any run."""
    for instance in instances:
        saved = {id(u): u.output for u in instance.upstream}
        for u in instance.upstream:
            u.output = u.output or _placeholder(u)
        try:
            config = build_config(instance, pipeline)
            if instance.spec.step == "attack":  # the attack registry knows its methods; the config does not
                from ..attacks import check_attack
                from .attack import method_params, method_settings
                spec = instance.spec
                try:
                    check_attack(config.method, config.eps, config.norm)
                except ConfigError as e:
                    raise _err(pipeline.file, spec.lines.get("method", spec.line), f"step {spec.name!r}: {e}") from None
                try:
                    method_params(config)
                except ConfigError as e:
                    refused = str(e).split(";")[0].split(" takes no ")[-1].split(", ")
                    line = next((spec.lines[n] for n in refused if n in spec.lines), spec.line)
                    raise _err(pipeline.file, line, f"step {spec.name!r}: {e}") from None
        finally:
            for u in instance.upstream:
                u.output = saved[id(u)]


def code_identity():
    """{version, source, commit}: the package version, a SHA-256 of its source files
    (uncommitted edits count) and the git commit of its checkout (None outside git)."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"version": __version__, "source": digest.hexdigest(), "commit": commit}


def moving_inputs(step, config):
    """What a step reads that its settings do not fix: the version a models:/<name>@<alias>
    URI points at now, and for promote the version its gate compares against (@robust)."""
    out = {}
    for key in ("model_uri", "attack_model_uri"):
        uri = getattr(config, key, None)
        if uri and "@" in str(uri):
            out[key] = tracking.pinned_uri(uri)
    if step == "promote":
        found = tracking.registered_version(config.model_uri)
        current = tracking.model_aliases(found[0]).get(config.alias) if found else None
        # The gate compares with another version only: once it has promoted its own, a re-run
        # of the pipeline is the same gate (and is reused), not a new one.
        out["current"] = None if found and current == found[1] else current
    return out


def instance_key(step, config, inputs, code, moving=None):
    """SHA-256 over the step, its whole resolved configuration (the run name aside), the run
    ids it consumes, what it reads that moves (moving_inputs) and the code: the package version
    and its source hash. Not the git commit: a commit that changes only documents, tests or
    pipeline files would re-run every step, and an edit not yet committed would not."""
    settings = {k: v for k, v in flatten(config).items() if k != "run_name"}
    text = json.dumps({"step": step, "config": settings, "inputs": sorted(inputs), "moving": moving or {},
                       "code": {k: code[k] for k in ("version", "source")}}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def output_of(step, result):
    """What the next steps get: a model URI (the registered version where there is one) or the run id."""
    if step in MODEL_STEPS:
        if step == "poison":
            if len(result.runs) != 1:
                return result.run_id
            result = next(iter(result.runs.values()))
        return f"models:/{result.registered_name}/{result.version}" if result.version else result.model_uri
    return result.run_id


def _finished(experiment, key):
    """The newest finished run holding this key and its output, or None."""
    for run in tracking.finished_runs(experiment, {KEY_TAG: key}):
        if OUTPUT_TAG in run["tags"]:  # a run whose tags a kill cut short is not reused
            return run
    return None


def _reuse(instance, run):
    instance.run_id, instance.output, instance.reused = run["run_id"], run["tags"][OUTPUT_TAG], True
    if run["tags"].get("medrobust.gate") == "failed":
        instance.note = "gate failed (reused run; the reasons are the version's gate_reasons tag)"


def plan(instances, config, code, experiment):
    """Dry run: key every instance whose inputs are known and say which runs would be reused."""
    for instance in instances:
        if any(u.output is None for u in instance.upstream):
            instance.note = "would run (after a step it needs)"
            log.info("  %s: %s", instance.label, instance.note)
            continue
        step_config = build_config(instance, config)
        instance.key = instance_key(instance.spec.step, step_config, [u.run_id for u in instance.upstream], code,
                                    moving_inputs(instance.spec.step, step_config))
        found = None if config.rerun else _finished(experiment, instance.key)
        if found:
            _reuse(instance, found)
        instance.note = instance.note or ("would reuse" if found else "would run")
        log.info("  %s: %s%s", instance.label, instance.note, f" {instance.run_id}" if found else "")


def run_pipeline(config: PipelineConfig) -> PipelineResult:
    """Run every instance of the pipeline at config.file in order, reusing finished ones."""
    from . import STEPS

    specs = parse(config.file, split_overrides(config.overrides))
    instances = expand(specs, config.max_instances)
    check(instances, config)
    code = code_identity()
    log.info("pipeline %s: %d steps, %d runs to make or reuse", config.file, len(specs), len(instances))
    if config.dry_run:
        plan(instances, config, code, config.experiment)
        return PipelineResult(None, [_summary(i) for i in instances])
    tags = {"medrobust.step": "pipeline", "medrobust.pipeline": Path(config.file).name}
    with tracking.run(config.experiment, run_name=config.run_name or f"pipeline {Path(config.file).stem}",
                      tags=tags) as run_id:
        # Under `mlflow run` the runs land in the experiment it chose, not config.experiment.
        experiment = tracking.experiment_name(run_id)
        tracking.log_params(flatten(config) | {f"code.{k}": v for k, v in code.items()})
        tracking.log_text(Path(config.file).read_text(encoding="utf-8"), f"pipeline/{Path(config.file).name}")
        for n, instance in enumerate(instances, 1):
            step = STEPS[instance.spec.step]
            step_config = build_config(instance, config)
            instance.key = instance_key(step.name, step_config, [u.run_id for u in instance.upstream], code,
                                        moving_inputs(step.name, step_config))
            found = None if config.rerun else _finished(experiment, instance.key)
            if found:
                _reuse(instance, found)
                log.info("pipeline [%d/%d] %s: reused run %s", n, len(instances), instance.label, instance.run_id)
                continue
            log.info("pipeline [%d/%d] %s", n, len(instances), instance.label)
            try:
                result = step.run(step_config)
            except GateFailed as e:  # a verdict, not a failure of the pipeline: recorded, and on
                if e.result is None:
                    raise
                result, instance.note = e.result, f"gate failed: {e}"
                log.warning("pipeline: %s: %s", instance.label, instance.note)
            instance.run_id, instance.output = result.run_id, output_of(step.name, result)
            tracking.tag_run(instance.run_id, {KEY_TAG: instance.key, OUTPUT_TAG: instance.output,
                                               NAME_TAG: instance.spec.name})
        summary = [_summary(i) for i in instances]
        tracking.log_json(summary, "pipeline/steps.json")
        tracking.log_metrics({"steps_run": sum(not i.reused for i in instances),
                              "steps_reused": sum(i.reused for i in instances),
                              "gates_failed": sum(i.note.startswith("gate failed") for i in instances)})
    log.info("pipeline %s: run %s, %d steps run, %d reused", config.file, run_id,
             sum(not i.reused for i in instances), sum(i.reused for i in instances))
    return PipelineResult(run_id, summary)


def _summary(i):
    return {"name": i.spec.name, "step": i.spec.step, "label": i.label, "run_id": i.run_id, "output": i.output,
            "reused": i.reused, "key": i.key, "note": i.note}


__all__ = ["PipelineResult", "expand", "parse", "run_pipeline"]
