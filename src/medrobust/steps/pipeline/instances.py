"""A pipeline's instances: each step's grid expanded along the lineage of the steps it names,
labelled, and turned into step configs (checked before any run)."""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ...config import PipelineConfig, Settings
from ...errors import ConfigError
from ...evaluation.report import format_eps
from .. import MODEL, STEPS
from .spec import Ref, StepSpec, _err, _field, _is_list


def _step(name):
    return STEPS[name]


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
    def upstream(self) -> "list[Instance]":
        out = []
        for v in self.values.values():
            out += [u for u in (v if isinstance(v, list) else [v]) if isinstance(u, Instance)]
        return out


def _consistent(lineages):
    """Whether lineages agree on every step they share (one network, one defense ...)."""
    merged = {}
    for lineage in lineages:
        for step, index in lineage.items():
            if merged.setdefault(step, index) != index:
                return False
    return True



def expand(specs: Sequence[StepSpec], max_instances: int = 1000) -> list[Instance]:
    """Every Instance of every step, in run order (file order, then grid order). A step whose
    grid would make more than `max_instances` instances, or a file that would in all, is refused
    before anything is built (a typo'd grid of 10^6 runs would otherwise expand for minutes)."""
    by_name, out = {}, []
    for spec in specs:
        config_type = _step(spec.step).config
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
    instance is, named by its step entry's named_by settings (given or default) and grid values, then by the
    model it works on."""
    spec, values = instance.spec, instance.values
    defaults = _step(spec.step).config()
    named = {k: values.get(k, getattr(defaults, k)) for k in _step(spec.step).named_by}
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



def build_config(instance: Instance, pipeline: PipelineConfig) -> Settings:
    """The step config of an instance (its upstream outputs resolved), in the pipeline's
    experiment, seed unless the step sets its own."""
    step = _step(instance.spec.step)
    values = {"seed": pipeline.seed} | _resolve(instance.values)
    values |= {"experiment": pipeline.experiment, "run_name": instance.label}
    try:
        values = step.call("route", instance.spec.grid, values) or values
        return step.config.from_dict(values)
    except ConfigError as e:
        raise _at_setting(e, instance.spec, pipeline.file) from None


def _at_setting(error, spec, path):
    """A step's ConfigError pointed at the file's line of the setting it names (error.settings;
    a nested one such as data.image_size may be given whole or by its last part)."""
    line = next((spec.lines[k] for s in error.settings for k in spec.lines if k == s or k.endswith(f".{s}")
                 or s.endswith(f".{k}")), spec.line)
    return _err(path, line, f"step {spec.name!r}: {error}")


def _placeholder(instance):
    """Stand-in outputs, so that every config is checked before any run."""
    return "models:/medrobust-placeholder/1" if _step(instance.spec.step).output == MODEL else "0" * 32


def check(instances: Sequence[Instance], pipeline: PipelineConfig) -> None:
    """Build every instance's config with placeholder outputs: bad settings fail before any run."""
    for instance in instances:
        saved = {id(u): u.output for u in instance.upstream}
        for u in instance.upstream:
            u.output = u.output or _placeholder(u)
        try:
            config = build_config(instance, pipeline)
            try:  # what the config cannot check itself (a registry of the step's own)
                _step(instance.spec.step).call("check", config)
            except ConfigError as e:
                raise _at_setting(e, instance.spec, pipeline.file) from None
        finally:
            for u in instance.upstream:
                u.output = saved[id(u)]