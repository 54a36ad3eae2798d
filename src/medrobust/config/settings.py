"""The settings machinery: `setting()` fields with their checks, coercion from text, and the
Settings base class (every field checked on creation, from_dict / to_dict); shared names."""


import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import MISSING, asdict, field, fields, is_dataclass
from typing import Any, Self, TypeVar

from ..data.split import SPLITS  # defined with the split; re-exported here
from ..errors import ConfigError

# The registered name every step defaults to: the latest network `train` registered.
BASELINE_URI = "models:/medrobust-small_cnn@baseline"
CANDIDATE_URI = "models:/medrobust-small_cnn@candidate"
CLASS_WEIGHTS = ("balanced", "sqrt", "none")  # see models.training.class_weights
# medrobust.models.ARCHITECTURES' names, here so a config is checked without importing TensorFlow
# (tests/unit/test_models.py keeps the two equal).
ARCHITECTURE_NAMES = ("small_cnn", "resnet50", "inception_v3", "mobilenet_v2", "small_resnet")
NORMS = ("inf", "2")
EPS_NOTE = "images are on [0, 1]; 2/255 = 0.0078"


def setting(default: Any = MISSING, help: str = "", *, factory: Any = MISSING,
            check: Callable[[Any], str | None] | None = None, choices: Sequence[Any] | None = None,
            flag: str | None = None, positional: bool = False, repeat: bool = False) -> Any:
    """A dataclass field with its help text and check. check(value) returns what is wrong (a
    phrase such as 'must be at least 1') or None; it is not called for None. choices: the
    allowed values (each element, for a tuple field). flag: the CLI option name when it is not
    the field's name; positional: a CLI positional argument; repeat: a text option that may be
    given several times (the CLI joins the values with commas)."""
    metadata = {"help": help, "check": check, "choices": choices, "flag": flag, "positional": positional,
                "repeat": repeat}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def at_least(low: float) -> Callable[[float], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False,
            note: str = "") -> Callable[[float], str | None]:
    """A check for low <= v <= high (either end open if asked); `note` explains the scale."""
    def check(v):
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        if above and below:
            return None
        text = f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        return f"{text} ({note})" if note else text
    return check


def positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def each(check: Callable[[Any], str | None]) -> Callable[[Iterable[Any]], str | None]:
    def check_all(values):
        return next((f"{problem} (element {v!r})" for v in values if (problem := check(v))), None)
    return check_all


def non_empty(values: Sized) -> str | None:
    return None if len(values) else "needs at least one value"


eps_range = between(0, 1, note=EPS_NOTE)


def split_fractions(values: Sequence[float]) -> str | None:
    if min(values) <= 0 or abs(sum(values) - 1) > 1e-6:
        return "must be three positive numbers summing to 1"
    return None


# --- text to typed values (CLI, MLproject and YAML share it) -----------------------------------

NONE_TEXT = ("", "none", "None", "null")


def _number(text, kind):
    text = text.strip()
    if kind is float and "/" in text:  # 2/255: epsilons are read as people write them
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return kind(text)


def coerce(value: Any, kind: Any, name: str) -> Any:
    """`value` (text, or already typed) as type `kind`; ConfigError naming `name` if it cannot be."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, str) and value.strip() in NONE_TEXT):
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], name)
    if origin is tuple:
        items = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], name) for v in items)
        if len(items) != len(args):
            raise ConfigError(f"{name} takes {len(args)} comma-separated values, got {value!r}", [name])
        return tuple(coerce(v, a, name) for v, a in zip(items, args))
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind in (int, float):
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, str):
                return _number(value, kind)
            if kind is int and float(value) != int(value):
                raise ValueError
            return kind(value)
        if kind is str:
            if isinstance(value, (dict, list, tuple)):
                raise ValueError
            return str(value)
    except (ValueError, TypeError, ZeroDivisionError):
        raise ConfigError(f"{name} must be {_type_name(kind)}, got {value!r}", [name]) from None
    raise TypeError(f"no coercion to {kind} for setting {name}")  # a field type we do not handle: a bug


def _optional(kind) -> bool:
    return typing.get_origin(kind) in (types.UnionType, typing.Union) and type(None) in typing.get_args(kind)


def _type_name(kind):
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) if a is not type(None) else "none" for a in args)
    if origin is tuple:
        return f"comma-separated {_type_name(args[0])}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(kind, kind.__name__)


class Settings:
    """Checks every field on creation, builds from and turns into plain dicts."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and value.strip() in NONE_TEXT and _optional(f.type):
                object.__setattr__(self, f.name, None)  # "none" means no value from Python as from the CLI
                continue
            if value is None or is_dataclass(value):
                continue
            choices = f.metadata.get("choices")
            if choices is not None:
                for v in value if isinstance(value, tuple) else (value,):
                    if v not in choices:
                        raise ConfigError(f"{f.name} must be one of {', '.join(map(str, choices))}, got {v!r}", [f.name])
            check = f.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                raise ConfigError(f"{f.name} {problem}, got {value!r}", [f.name])
        self.validate()

    def validate(self) -> None:
        """Checks across fields; a subclass raises ConfigError naming the settings."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """An instance from {name: value}: nested dicts (or dotted keys such as 'data.image_size')
        for nested settings, text or typed values. Unknown keys are refused by name."""
        nested, own = {}, {}
        for key, value in dict(values).items():
            head, dot, rest = key.partition(".")
            if dot:
                nested.setdefault(head, {})[rest] = value
            else:
                own[key] = value
        by_name = {f.name: f for f in fields(cls)}
        unknown = sorted((set(own) | set(nested)) - set(by_name))
        if unknown:
            raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
                              f"{cls.__name__}; expected {', '.join(by_name)}", unknown)
        kwargs = {}
        for name, f in by_name.items():
            if is_dataclass(f.type):
                part = own.get(name, {})
                if isinstance(part, f.type):
                    part = part.to_dict()
                if not isinstance(part, dict):
                    raise ConfigError(f"{name} takes a mapping of {f.type.__name__} settings, got {part!r}", [name])
                if part or name in nested:
                    try:
                        kwargs[name] = f.type.from_dict(part | nested.get(name, {}))
                    except ConfigError as e:  # the settings at fault, dotted as the caller spells them
                        raise ConfigError(str(e), [f"{name}.{s}" for s in e.settings]) from None
            elif name in own:
                kwargs[name] = coerce(own[name], f.type, name)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """{name: value}, nested settings as nested dicts; from_dict(to_dict()) gives an equal config."""
        return asdict(self)


def flatten(config: Settings, prefix: str = "") -> dict[str, Any]:
    """Flat {name: value} of a (nested) config dataclass; nested names are dotted (data.image_size)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            out.update(flatten(value, prefix=f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


_SettingsT = TypeVar("_SettingsT", bound=Settings)


def narrow(config: Settings, cls: type[_SettingsT]) -> _SettingsT:
    """The `cls` view of a config that has all of cls's fields (a PoisonConfig as a TrainConfig)."""
    return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})
