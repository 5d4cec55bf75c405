"""Every experiment's config is checked, as a whole, before anything runs (issue 12, item 5).

In process: `make_config` and `main()` on the real registered experiments, with `run` and the
compilation cache replaced by failures, so a check that came late would show. One subprocess
shows the whole path: `python -m experiments run ...` exits 2 without starting a JAX backend.
"""

import dataclasses
import math
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

import experiments
from experiments import UsageError, _config, _framework
from experiments import __main__ as cli

ROOT = Path(__file__).resolve().parents[1]
MODULES = {name: experiments.load(name) for name in experiments.EXPERIMENTS}


def _plain(hint):
    """`hint` without `| None`."""
    args = typing.get_args(hint)
    if type(None) in args:
        (hint,) = [a for a in args if a is not type(None)]
    return hint


@pytest.fixture
def nothing_runs(monkeypatch, tmp_path):
    """cwd is an empty folder; running an experiment or touching the cache fails the test."""
    monkeypatch.chdir(tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("validation came too late: the run started")

    for module in MODULES.values():
        monkeypatch.setattr(module, "run", fail)
    monkeypatch.setattr(_framework, "enable_compilation_cache", fail)
    return tmp_path


def _usage_error(capsys, *argv) -> str:
    """`main(argv)` must exit 2 with a one-line error; returns that line."""
    assert cli.main(["run", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m experiments run: error: "), lines
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("name", experiments.EXPERIMENTS)
def test_every_field_states_what_it_allows(name):
    """A new field without a constraint fails here: give it one (experiments/_config.py)."""
    cls = MODULES[name].Config
    hints = typing.get_type_hints(cls)
    found = _config.constraints(cls)
    bare = [f.name for f in dataclasses.fields(cls)
            if not found[f.name] and f.name != "seed"  # the seed is checked for every config
            and _plain(hints[f.name]) is not bool
            and typing.get_origin(_plain(hints[f.name])) is not typing.Literal]
    assert not bare, f"{name}: fields with no constraint (Annotated[...]): {bare}"
    # the defaults and the smoke size pass (the accelerator benchmark's defaults refuse a
    # CPU backend: tests/test_exp_benchmark_gpu.py)
    here = {"allow_cpu": "true"} if name == "benchmark-gpu" else None
    _config.make_config(MODULES[name], overrides=here)
    _config.make_config(MODULES[name], smoke=True)


@pytest.mark.parametrize("name", experiments.EXPERIMENTS)
def test_every_field_says_what_it_means(name):
    """`run NAME --help` shows each field's comment: a new field without one fails here."""
    notes = _config.comments(MODULES[name].Config)
    assert list(notes) == [f.name for f in dataclasses.fields(MODULES[name].Config)]
    assert not [k for k, v in notes.items() if not v], f"{name}: fields with no comment"


def test_comments_are_read_beside_or_above_a_field():
    diffusion, sequence = MODULES["diffusion"].Config, MODULES["sequence"].Config
    assert _config.comments(diffusion)["T"] == "diffusion steps"
    assert _config.comments(diffusion)["keep"] == "steps t shown in reverse_*.png (each in [0, T])"
    assert _config.comments(sequence)["transformer_impl"].startswith(
        'the Transformer\'s backward pass: "written" (autodiff, the published numbers) or '
        '"custom_vjp" (hand-derived')
    assert _config.comments(sequence)["generalize_models"] == (
        "models tested at other lengths (among `models`)")


def _bad_values(hint) -> list:
    """Values no field of that type allows: negative, NaN/infinite, or far past any cap."""
    hint = _plain(hint)
    if hint is int:
        return [-1, 10**12]
    if hint is float:
        return [-1.0, math.nan, math.inf]
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[0] in (int, float):
        return [(-1,), (1, 10**12)] if typing.get_args(hint)[0] is int else [(-0.5,), (math.nan,)]
    return []


_TABLE = [(name, f.name, value) for name, module in MODULES.items()
          for f in dataclasses.fields(module.Config)
          for value in _bad_values(typing.get_type_hints(module.Config)[f.name])]


def test_bad_numbers_are_refused_in_every_experiment(nothing_runs):
    """Each numeric field of each experiment, each value in `_bad_values`: one UsageError line
    naming the key, the value and what is allowed; nothing written, nothing run."""
    assert len({name for name, _, _ in _TABLE}) == len(MODULES)
    wrong = []
    for name, key, value in _TABLE:
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        for given in (value, text):  # a Python value, and the string --set gives
            try:
                _config.make_config(MODULES[name], overrides={key: given})
                wrong.append((name, key, given, "accepted"))
            except UsageError as e:
                if not str(e).startswith(f"bad value for {key}: {text} (allowed: ") or (
                        "\n" in str(e)):
                    wrong.append((name, key, given, str(e)))
    assert not wrong, "\n".join(map(str, wrong))
    assert not any(nothing_runs.iterdir())


@pytest.mark.parametrize("argv, words", [
    (["--set", "hidden="], ("hidden", "(empty)", "at least one entry")),
    (["--set", "test_fraction=0"], ("test_fraction", "0.0", "(0, 1)")),
    (["--set", "ensemble=0"], ("ensemble", "0", "[1, 1000]")),
    (["--set", "learning_rate=-1"], ("learning_rate", "-1.0", "> 0")),
    (["--set", "epochs=0"], ("epochs", "0", "[1, ")),
    (["--set", "hidden=1000000000"], ("hidden", "1000000000", "[1, 16_384]")),
    (["--seed", str(2**80)], ("seed", str(2**80), "[0, 2**32)")),
    (["--seed", str(2**32)], ("seed", str(2**32), "[0, 2**32)")),
    (["--seed", "-1"], ("seed", "-1", "[0, 2**32)")),
    (["--set", "val_fraction=0.6", "--set", "test_fraction=0.395"],
     ("val_fraction + test_fraction", "training set")),
    (["--out", "."], ("'.'", "current folder")),
    (["--out", ".."], ("'..'", "current folder")),
])
def test_issue_items_are_usage_errors(nothing_runs, capsys, argv, words):
    line = _usage_error(capsys, "digits", "--smoke", *argv)
    assert all(w in line for w in words), line
    assert not any(nothing_runs.iterdir()), "nothing may be written"


def test_seed_range_ends_are_allowed():
    for seed in (0, 2**32 - 1):
        assert _config.make_config(MODULES["digits"], seed=seed).seed == seed


def test_out_under_a_file_or_unwritable(nothing_runs, capsys, monkeypatch):
    (nothing_runs / "a-file").write_text("")
    line = _usage_error(capsys, "digits", "--out", "a-file/run")
    assert "cannot be created" in line and "is a file" in line
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as if not ours (we are root)
    line = _usage_error(capsys, "digits", "--out", "new/run")
    assert "cannot be created" in line and "not writable" in line
    assert [p.name for p in nothing_runs.iterdir()] == ["a-file"]


def test_out_refused_by_the_system(nothing_runs, capsys, monkeypatch):
    """A folder that looked writable but is not (a read-only mount): still a usage error."""
    def refuse(target):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(_framework, "enable_compilation_cache", lambda: None)
    monkeypatch.setattr(_framework, "_claim", refuse)
    line = _usage_error(capsys, "digits", "--out", "run")
    assert line.endswith("output folder run cannot be created: Permission denied"), line


@pytest.mark.parametrize("name, overrides, words", [
    ("regularization", {"lambda_min": "1", "lambda_max": "0.5"}, "lambda_min: expected at most"),
    ("optimizers", {"epochs": "5,5"}, "epochs: expected one entry per batch size"),
    ("activations", {"saturating": "elu", "activations": "relu"}, "saturating: expected a subset"),
    ("digits", {"test_fraction": "0.001"}, "test_fraction: expected at least 10"),
])
def test_checks_across_fields_run_before_anything(name, overrides, words):
    with pytest.raises(UsageError, match=f"^bad config: {words}"):
        _config.make_config(MODULES[name], overrides=overrides)


def test_names_and_choices_are_checked():
    with pytest.raises(UsageError, match=r"bad value for activations: relu,nope \(allowed: .*one "
                                         r"of 'sigmoid'"):
        _config.make_config(MODULES["resnet"], overrides={"activations": "relu,nope"})
    with pytest.raises(UsageError, match="bad value for nets: net1,net1 .*distinct"):
        _config.make_config(MODULES["cnn"], overrides={"nets": "net1,net1"})
    with pytest.raises(UsageError, match="bad value for combinations: l2\\+nope"):
        _config.make_config(MODULES["regularization"], overrides={"combinations": "l2+nope"})


def test_help_example_names_a_real_key():
    help_text = cli._parser()[1].format_help()
    example = help_text.split("e.g. --set ")[1].split("=")[0]
    assert example in {f.name for f in dataclasses.fields(MODULES["digits"].Config)}, help_text


def test_cli_exits_2_before_jax_starts(tmp_path):
    """The one subprocess: a bad value exits 2, one line, no folder, and no JAX backend."""
    code = ("import sys; from experiments.__main__ import main; rc = main(sys.argv[1:]); "
            "from jax._src import xla_bridge; assert not xla_bridge._backends, 'JAX started'; "
            "sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code, "run", "digits", "--set", "epochs=0"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [(
        "python -m experiments run: error: bad value for epochs: 0 (allowed: an integer in "
        "[1, 10_000_000])")]
    assert not any(tmp_path.iterdir())


def test_a_rule_may_read_its_module_names(monkeypatch):
    """A lambda in an annotation sees the module's globals (`from __future__ import
    annotations` evaluates it in the class's namespace unless told otherwise)."""
    module = types.ModuleType("experiments_fake")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec("from __future__ import annotations\n"  # noqa: S102 (a module written here)
         "import dataclasses\n"
         "from experiments._config import Annotated, Rule\n"
         "LIMIT = 3\n"
         "@dataclasses.dataclass(frozen=True)\n"
         "class Config:\n"
         "    n: Annotated[int, Rule('at most LIMIT', lambda v: v <= LIMIT)] = 2\n"
         "    seed: int = 0\n"
         "SMOKE = {}\n", vars(module))
    assert _config.make_config(module, overrides={"n": "3"}).n == 3
    with pytest.raises(UsageError, match=r"^bad value for n: 4 \(allowed: at most LIMIT\)$"):
        _config.make_config(module, overrides={"n": "4"})
