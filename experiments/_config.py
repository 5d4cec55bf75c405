"""Experiment configs: `--set` values parsed by type, and every field checked, without JAX.

A `Config` field states what it allows in its type, with `typing.Annotated`: the aliases below
cover most fields, and `Annotated[T, *constraints]` the rest.

    @dataclasses.dataclass(frozen=True)
    class Config:
        hidden: Widths = (256,)  # widths of the hidden layers
        learning_rate: Positive = 0.1  # SGD step alpha
        momentum: Probability = 0.9  # heavy-ball momentum, in [0, 1)
        epochs: Count = 300  # most epochs
        seeds: Replicates = 5  # models trained together
        depths: Annotated[tuple[int, ...], NonEmpty(), Range(0, 100)] = (0, 1, 3)
        activation: Literal["relu", "tanh"] = "relu"  # a Literal or a bool needs nothing more
        seed: int = 0  # always checked: 0 <= seed < 2**32

Constraints on a tuple field apply to each entry (`NonEmpty`, `Distinct`, `Increasing` to
the whole tuple). A check across fields (`batch_size <= n_train`) goes in the experiment
module's `check(config) -> None`, which raises ValueError naming the field.

`make_config` applies all of it before anything is traced or any folder exists: a bad value
is one `UsageError` line naming the key, the value and what is allowed. The test suite checks
that every field of every registered experiment states a constraint (or is a bool/Literal).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import itertools
import math
import numbers
import re
import sys
import textwrap
import tokenize
import types
import typing
from typing import Annotated, Any, Literal

import numpy as np

from experiments import UsageError

__all__ = ["MAX_COUNT", "MAX_REPLICATES", "MAX_SAMPLES", "MAX_WIDTH", "SEED_LIMIT", "Annotated",
           "Count", "Distinct", "Fraction", "Increasing", "Literal", "Names", "NonEmpty",
           "NonNegative", "NonNegatives", "OneOf", "Positive", "Positives", "Probability",
           "Range", "Rates", "Replicates", "Rule", "Samples", "Width", "Widths", "allowed",
           "comments", "constraints", "convert", "describe_config", "describe_fields",
           "make_config", "validate"]

MAX_WIDTH = 16_384  # units or channels of one layer: a 16384 x 16384 float32 W is 1 GiB
MAX_SAMPLES = 1_000_000  # examples drawn, held or sampled at once, and batch sizes
MAX_COUNT = 10_000_000  # epochs, steps, iterations, patience (histories grow with them)
MAX_REPLICATES = 1_000  # models trained together by one vmap (seeds, starts, ensembles)
SEED_LIMIT = 2**32  # jax.random.key keeps a seed's low 32 bits (x32): larger ones repeat


# --- constraints ----------------------------------------------------------------------------

def _num(v) -> str:
    return f"{v:,}".replace(",", "_") if isinstance(v, int) and abs(v) >= 10_000 else f"{v:g}" \
        if isinstance(v, float) else str(v)


@dataclasses.dataclass(frozen=True)
class Range:
    """A number (or each entry of a tuple) in `[lo, hi]`; `lo_open`/`hi_open` exclude the end.
    Floats must also be finite.

    >>> Range(0, 1, lo_open=True, hi_open=True).allowed, Range(1).allows(0)
    ('a finite number in (0, 1)', False)
    """
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False  # set by `constraints` for int fields: says "an integer"

    def allows(self, v) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return ((self.lo is None or (v > self.lo if self.lo_open else v >= self.lo))
                and (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)))

    @property
    def allowed(self) -> str:
        what = "an integer" if self.integer else "a finite number"
        if self.lo is not None and self.hi is not None:
            return (f"{what} in {'(' if self.lo_open else '['}{_num(self.lo)}, "
                    f"{_num(self.hi)}{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{what} {'<' if self.hi_open else '<='} {_num(self.hi)}"
        return what


@dataclasses.dataclass(frozen=True)
class OneOf:
    """A string (or each entry of a tuple) among `choices` (e.g. a registry's names)."""
    choices: tuple

    def __init__(self, choices):
        object.__setattr__(self, "choices", tuple(choices))

    def allows(self, v) -> bool:
        return v in self.choices

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))


@dataclasses.dataclass(frozen=True)
class Rule:
    """Any test of a value (each entry of a tuple): `allowed` says in words what passes."""
    allowed: str
    test: typing.Callable[[Any], bool]

    def allows(self, v) -> bool:
        return bool(self.test(v))


class _Whole:
    """A constraint on a tuple as a whole (not entry by entry)."""
    whole = True


@dataclasses.dataclass(frozen=True)
class NonEmpty(_Whole):
    """At least one entry."""
    allowed = "at least one entry"

    def allows(self, v) -> bool:
        return len(v) > 0


@dataclasses.dataclass(frozen=True)
class Distinct(_Whole):
    """No entry twice."""
    allowed = "distinct entries"

    def allows(self, v) -> bool:
        return len(set(v)) == len(v)


@dataclasses.dataclass(frozen=True)
class Increasing(_Whole):
    """Strictly increasing entries."""
    allowed = "strictly increasing entries"

    def allows(self, v) -> bool:
        return all(a < b for a, b in itertools.pairwise(v))


# The usual fields, type and constraint in one name.
Count = Annotated[int, Range(1, MAX_COUNT)]  # epochs, steps, patience, iterations
Samples = Annotated[int, Range(1, MAX_SAMPLES)]  # examples, samples, batch sizes
Replicates = Annotated[int, Range(1, MAX_REPLICATES)]  # models trained together
Width = Annotated[int, Range(1, MAX_WIDTH)]  # units or channels of a layer
Widths = Annotated[tuple[int, ...], NonEmpty(), Range(1, MAX_WIDTH)]  # hidden layers, >= 1
Positive = Annotated[float, Range(0, lo_open=True)]  # step sizes, scales, tolerances
NonNegative = Annotated[float, Range(0)]  # penalties lambda, margins
Fraction = Annotated[float, Range(0, 1, lo_open=True, hi_open=True)]  # a share of a data set
Probability = Annotated[float, Range(0, 1, hi_open=True)]  # drop rates, momentum, decays
Positives = Annotated[tuple[float, ...], NonEmpty(), Range(0, lo_open=True)]  # a grid of steps
NonNegatives = Annotated[tuple[float, ...], NonEmpty(), Range(0)]  # a grid of penalties
Rates = Annotated[tuple[float, ...], NonEmpty(), Range(0, 1, hi_open=True), Increasing()]  # drop


def Names(choices, *, empty: bool = False):  # a type, like the aliases above
    """The type of a tuple of distinct strings among `choices` (non-empty unless `empty`).

    >>> Names(("relu", "tanh"))
    typing.Annotated[tuple[str, ...], NonEmpty(), Distinct(), OneOf(choices=('relu', 'tanh'))]
    """
    return Annotated[(tuple[str, ...], *(() if empty else (NonEmpty(),)), Distinct(),
                      OneOf(choices))]


def _strip_optional(hint):
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner
    return hint


@functools.cache
def constraints(cls) -> dict[str, tuple]:
    """`{field: constraints}` of config class `cls`, from its `Annotated` hints."""
    # The module's namespace as globals: a lambda in an annotation then sees the module's
    # names when it runs (by default a class's annotations are evaluated with its own
    # namespace as globals).
    module = sys.modules.get(cls.__module__)
    hints = typing.get_type_hints(cls, globalns=vars(module) if module else None,
                                  include_extras=True)
    out = {}
    for f in dataclasses.fields(cls):
        hint = _strip_optional(hints[f.name])
        found = ()
        if typing.get_origin(hint) is Annotated:
            base, *found = typing.get_args(hint)
            base = _strip_optional(base)
            is_int = base is int or typing.get_args(base)[:1] == (int,)
            found = tuple(dataclasses.replace(c, integer=True) if isinstance(c, Range) and is_int
                          else c for c in found)
        out[f.name] = found
    return out


def allowed(cls, name: str) -> str:
    """What field `name` of `cls` allows, in words ('' when its type says it all)."""
    found = constraints(cls)[name]
    hint = typing.get_type_hints(cls)[name]
    each = typing.get_origin(_strip_optional(hint)) is tuple
    words = [c.allowed if (getattr(c, "whole", False) or not each) else f"each {c.allowed}"
             for c in found]
    if name == "seed" and not found:
        words = ["an integer in [0, 2**32)"]
    if found and _strip_optional(hint) is not hint:
        words.append("or none")
    return ", ".join(words)


def _allows(found: tuple, value) -> bool:
    """Whether `value` passes every constraint in `found` (None always does: `T | None`)."""
    if value is None:
        return True
    entries = value if isinstance(value, tuple) else (value,)
    return all(c.allows(value) if getattr(c, "whole", False) else all(map(c.allows, entries))
               for c in found)


def validate(module, config) -> None:
    """UsageError unless every field of `config` is allowed by its constraints, its `seed` is
    in [0, 2**32), and `module.check(config)` (if any) passes."""
    cls = type(config)
    for name, found in constraints(cls).items():
        value = getattr(config, name)
        if name == "seed" and not 0 <= value < SEED_LIMIT:
            raise UsageError(f"bad value for seed: {value} (allowed: an integer in [0, 2**32); "
                             "jax.random.key keeps 32 bits)")
        if not _allows(found, value):
            raise UsageError(f"bad value for {name}: {_show(value)} (allowed: "
                             f"{allowed(cls, name)})")
    check = getattr(module, "check", None)
    if check is not None:
        try:
            check(config)
        except (ValueError, TypeError) as e:
            raise UsageError(f"bad config: {e}") from None


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "(empty)"  # as --set takes it
    return repr(value) if isinstance(value, str) else str(value)


# --- parsing --------------------------------------------------------------------------------

_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _type_name(hint) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def convert(value: Any, hint) -> Any:
    """`value` (a command-line string, or a Python value) as type `hint`; ValueError if not one.

    Supports int, float, bool (true/false/yes/no/1/0), str, `tuple[T, ...]` of those
    (comma-separated), `Literal[...]` and `T | None` (`none`).

    >>> convert("8,16", tuple[int, ...]), convert("yes", bool), convert(3, float)
    ((8, 16), True, 3.0)
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return convert(value, inner)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")] if value.strip() else []
        if isinstance(value, (list, tuple)):
            return tuple(convert(v, args[0]) for v in value)
    elif origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and value == str(a)):
                return a
    elif hint is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
    elif hint is int:
        if isinstance(value, str):
            return int(value)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif hint is float:
        if isinstance(value, str):
            return float(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise ValueError(f"fields of type {_type_name(hint)} cannot be set")
    raise ValueError(f"cannot be read as {_type_name(hint)}")


def describe_fields(cls) -> str:
    """One line `name: type = default  (allowed)` per field of config class `cls`."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        rule = allowed(cls, f.name)
        lines.append(f"  {f.name}: {_type_name(hints[f.name])} = {_default(f)!r}"
                     + (f"  ({rule})" if rule else ""))
    return "\n".join(lines)


@functools.cache
def comments(cls) -> dict[str, str]:
    """`{field: its comment}` of config class `cls`, read from its source: the comment on the
    field's line(s), else the comment lines just above it ('' when there is neither, or no
    source)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        return {f.name: "" for f in dataclasses.fields(cls)}
    # line -> (the comment stands on a line of its own, its text)
    notes = {t.start[0]: (not t.line[:t.start[1]].strip(), t.string.lstrip("#").strip())
             for t in tokens if t.type == tokenize.COMMENT}
    found = {}
    for stmt in tree.body[0].body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        text = [notes[i][1] for i in range(stmt.lineno, stmt.end_lineno + 1)
                if i in notes and not notes[i][0]]
        if not text:
            line = stmt.lineno - 1
            while line in notes and notes[line][0]:
                text.insert(0, notes[line][1])
                line -= 1
        found[stmt.target.id] = " ".join(text)
    return {f.name: found.get(f.name, "") for f in dataclasses.fields(cls)}


def _setting(value) -> str:
    """`value` as `--set` takes it: tuples comma-separated, None as `none`."""
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "(empty)"
    return "none" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


def describe_config(module, width: int = 100) -> str:
    """Every config field of experiment `module`, for `run NAME --help`: a line
    `name: type = default` (with its `--smoke` value, if `SMOKE` sets it), then, indented, the
    field's comment and what it allows."""
    cls = module.Config
    hints, notes = typing.get_type_hints(cls), comments(cls)
    smoke = getattr(module, "SMOKE", {})
    lines = []
    for f in dataclasses.fields(cls):
        head = f"  {f.name}: {_type_name(hints[f.name])} = {_setting(_default(f))}"
        if f.name in smoke:
            head += f"  (--smoke: {_setting(smoke[f.name])})"
        lines.append(head)
        # no line break inside a range: "[1, 16_384]" (a no-break space is not one textwrap
        # breaks at)
        rule = re.sub(r"[\[(][^\[\]()]*[\])]", lambda m: m[0].replace(" ", "\xa0"),
                      allowed(cls, f.name))
        text = "; ".join(t for t in (notes[f.name], rule and f"allowed: {rule}") if t)
        if text:
            lines += [line.replace("\xa0", " ") for line in textwrap.wrap(
                text, width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                break_on_hyphens=False)]
    return "\n".join(lines)


def _default(field: dataclasses.Field):
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def at_most(config, name: str, bound: str, why: str = "") -> None:
    """A cross-field check for an experiment's ``check(config)``: ``config.<name>`` at most
    ``config.<bound>`` (a batch within the training set), else a ValueError naming both."""
    value, limit = getattr(config, name), getattr(config, bound)
    if value > limit:
        raise ValueError(f"{name}: expected at most {bound}={limit}{why}, got {value}")


def even(config, name: str, why: str) -> None:
    """A cross-field check: ``config.<name>`` even (a width split over 2 heads), else a
    ValueError saying ``why``."""
    if getattr(config, name) % 2:
        raise ValueError(f"{name}: expected an even width ({why}), got {getattr(config, name)}")


def make_config(module, config=None, *, smoke=False, overrides=None, seed=None):
    """`config` (default `module.Config()`) with `module.SMOKE` (if `smoke`), then `overrides`
    (strings parsed by the field's type), then `seed`; then every field checked against its
    constraints and `module.check` (see `validate`). UsageError on a bad key or value."""
    cls = module.Config
    if config is None:
        config = cls()
    elif type(config) is not cls:
        raise TypeError(f"config is a {type(config).__name__}, expected {module.__name__}.Config")
    changes = {**(module.SMOKE if smoke else {}), **(overrides or {})}
    if seed is not None:
        changes["seed"] = seed
    hints = typing.get_type_hints(cls)
    for key, value in changes.items():
        if key not in {f.name for f in dataclasses.fields(cls)}:
            raise UsageError(f"unknown config key {key!r}; valid keys (type = default):\n"
                             f"{describe_fields(cls)}")
        try:
            changes[key] = convert(value, hints[key])
        except (ValueError, TypeError) as e:
            raise UsageError(f"bad value for {key} (type {_type_name(hints[key])}): "
                             f"{value!r} ({e})") from None
    config = dataclasses.replace(config, **changes)
    validate(module, config)
    return config
