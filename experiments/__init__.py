"""Reproducible research scripts: one module per experiment, run by `python -m experiments`.

An experiment `NAME` lives in `experiments/NAME.py` (`-` in the name becomes `_`) and defines:

- `Config`: a frozen, typed `dataclasses.dataclass`, a comment per field, and a `seed: int`;
  each field's type states what it allows (`experiments._config`: `Count`, `Widths`,
  `Probability`, `Annotated[T, Range(...)]`, ...), and an optional `check(config)` checks
  across fields: a bad `--set` is a usage error before anything runs;
- `SMOKE`: a dict of field overrides that shrink the run to seconds (`--smoke`, the tests);
- `run(config, outdir) -> dict`: trains and evaluates, writes its figures (PNG) and optional
  `history.csv` into `outdir`, and returns the headline metrics (classifiers: `test_error`);
- a module docstring whose first line is the description shown by `list`, and whose rest
  records the full run's command, its result and its wall time on a named device.

Only the names in `EXPERIMENTS` exist for the CLI. Modules are imported only when run, so
`list` stays fast and one broken experiment does not break the others.
"""

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = (  # the registry, in the order `list` shows it
    "digits",
    "esl-simulation",
    "activations",
    "optimizers",
    "regularization",
    "gradcheck",
    "resnet",
    "autoencoder",
    "cnn",
    "dropout",
    "adversarial",
    "densenet",
    "gan",
    "diffusion",
    "clip",
    "benchmark",
    "benchmark-gpu",
    "sequence",
    "padding",
)

_LAZY = {  # re-exported from `experiments._framework` on first use (it imports jax)
    "execute", "make_config", "write_csv", "write_json", "to_jsonable", "progress", "progress_enabled",
    "enable_compilation_cache",
}
__all__ = ["EXPERIMENTS", "UsageError", "describe", "load", "module_name", *sorted(_LAZY)]


class UsageError(ValueError):
    """A bad request (experiment name, config key or value, output folder); nothing has run."""


def module_name(name: str) -> str:
    """The module implementing experiment `name`.

    >>> module_name("esl-simulation")
    'experiments.esl_simulation'
    """
    return f"{__name__}.{name.replace('-', '_')}"


def _check_registered(name: str) -> None:
    if name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}; registered: {', '.join(EXPERIMENTS)}")


def load(name: str) -> ModuleType:
    """Import registered experiment `name`; UsageError if it is unknown or its module is missing."""
    _check_registered(name)
    modname = module_name(name)
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name != modname:  # the module exists but one of its own imports failed
            raise
        raise UsageError(f"experiment {name!r} is registered but {modname} does not exist "
                         f"(no file experiments/{modname.rpartition('.')[2]}.py)") from None


def describe(name: str) -> str:
    """The first line of experiment `name`'s module docstring, read without importing it."""
    _check_registered(name)
    modname = module_name(name)
    try:
        if modname in sys.modules:
            doc = sys.modules[modname].__doc__
        else:
            spec = importlib.util.find_spec(modname)
            if spec is None or not spec.origin:
                return f"(missing: no module {modname})"
            doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text()))
    except Exception as e:  # a broken module must not break `list`
        return f"(unreadable: {type(e).__name__}: {e})"
    return doc.strip().splitlines()[0] if doc and doc.strip() else "(no docstring)"


def __getattr__(attr: str):
    if attr in _LAZY:
        from experiments import _framework
        return getattr(_framework, attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
