"""The experiment framework and CLI, on a toy experiment registered only here."""

import dataclasses
import datetime
import errno
import json
import os
import pathlib
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache

import experiments
from experiments import UsageError
from experiments import __main__ as cli
from experiments import _framework
from tests import _toy_experiment as toy

ROOT = Path(__file__).resolve().parents[1]
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "draws.png"}
_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                  "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    """Point the compilation cache at a temporary folder; restore JAX's settings afterwards."""
    path = tmp_path_factory.mktemp("xla-cache")
    monkeypatch.setenv("JAXNETS_CACHE_DIR", str(path))
    saved = {k: getattr(jax.config, k) for k in _CACHE_OPTIONS}
    yield path
    for k, v in saved.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


@pytest.fixture
def registered(monkeypatch):
    """Register the toy as experiment `toy`, and `not-written` with no module."""
    names = (*experiments.EXPERIMENTS, "toy", "not-written")
    monkeypatch.setattr(experiments, "EXPERIMENTS", names)
    monkeypatch.setitem(sys.modules, "experiments.toy", toy)


def _cli(*args, cwd, cache_dir, register_toy=False):
    """Run `python -m experiments ARGS` in a fresh process (with the toy registered, via -c)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXNETS_CACHE_DIR": str(cache_dir)}
    if register_toy:
        code = ("import sys, experiments, tests._toy_experiment as toy; "
                "experiments.EXPERIMENTS += ('toy',); sys.modules['experiments.toy'] = toy; "
                "from experiments.__main__ import main; sys.exit(main(sys.argv[1:]))")
        command = [sys.executable, "-c", code, *args]
    else:
        command = [sys.executable, "-m", "experiments", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_list_subprocess_shows_every_registered_name(tmp_path, cache_dir):
    result = _cli("list", cwd=tmp_path, cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == list(experiments.EXPERIMENTS)


def test_list_shows_descriptions_and_missing_modules(registered, capsys):
    assert cli.main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["toy"].split(None, 1)[1] == toy.__doc__.splitlines()[0]
    assert "missing: no module experiments.not_written" in lines["not-written"]


def test_run_subprocess_writes_every_file(tmp_path, cache_dir):
    out = tmp_path / "run"
    result = _cli("run", "toy", "--smoke", "--seed", "3", "--set", "steps=7", "--set", "centered=1",
                  "--out", str(out), "--no-progress", cwd=tmp_path, cache_dir=cache_dir,
                  register_toy=True)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == FILES
    assert "test_error = 0.5" in result.stdout and "draws.png" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["seed"], config["steps"], config["n"], config["centered"]) == (3, 7, 100, True)
    env = json.loads((out / "environment.json").read_text())
    assert env["command"].startswith("-c run toy --smoke")
    assert env["packages"]["jax"] == jax.__version__ and env["backend"] == jax.default_backend()


def test_run_writes_config_metrics_environment(registered, tmp_path, cache_dir):
    metrics, outdir = _framework.execute("toy", out=tmp_path / "run", smoke=True)
    assert outdir == tmp_path / "run" and {p.name for p in outdir.iterdir()} == FILES
    assert json.loads((outdir / "metrics.json").read_text()) == metrics
    assert metrics["test_error"] == 0.5 and len(metrics["first"]) == 3
    config = dataclasses.replace(toy.Config(), **toy.SMOKE)
    assert (outdir / "config.json").read_text() == _framework.dumps(dataclasses.asdict(config))
    env = json.loads((outdir / "environment.json").read_text())
    assert {"python", "platform", "packages", "backend", "device_kinds", "device_count", "x64",
            "command", "started_utc", "wall_time_s"} <= env.keys()
    assert set(env["packages"]) >= {"jax", "jaxlib", "optax", "flax", "numpy", "scikit-learn"}
    assert env["compilation_cache_dir"] == str(cache_dir)
    assert any(cache_dir.iterdir()), "the compiled toy step should be in the persistent cache"
    history = (outdir / "history.csv").read_text().splitlines()
    assert history[0] == "step,estimate" and len(history) == 1 + toy.SMOKE["steps"]


def test_same_seed_same_bytes_other_seed_differs(registered, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, a = _framework.execute("toy", smoke=True, seed=1)
    _, b = _framework.execute("toy", smoke=True, seed=1)
    _, c = _framework.execute("toy", smoke=True, seed=2)
    assert a != b and a.parent == b.parent == c.parent == Path("runs/toy")
    assert re.fullmatch(r"\d{8}T\d{6}Z-seed1", a.name), a.name
    assert re.fullmatch(r"\d{8}T\d{6}Z-seed1(-1)?", b.name), b.name
    assert re.fullmatch(r"\d{8}T\d{6}Z-seed2", c.name), c.name
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert (a / "metrics.json").read_bytes() != (c / "metrics.json").read_bytes()


def test_default_folder_gets_a_suffix_when_taken(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    first = _framework._target("toy", 7, None, now)
    assert first == Path("runs/toy/20260102T030405Z-seed7")
    first.mkdir(parents=True)
    assert _framework._target("toy", 7, None, now) == Path("runs/toy/20260102T030405Z-seed7-1")


@pytest.mark.parametrize("key, text, expected", [
    ("n", "12", 12),
    ("learning_rate", "1e-3", 1e-3),
    ("centered", "true", True),
    ("centered", "No", False),
    ("centered", "1", True),
    ("label", "hello world", "hello world"),
    ("widths", "64, 32,16", (64, 32, 16)),
    ("widths", "5", (5,)),
    ("rates", "0.5,1", (0.5, 1.0)),
    ("tags", "x,y", ("x", "y")),
    ("mode", "slow", "slow"),
    ("limit", "7", 7),
    ("limit", "none", None),
])
def test_set_parses_by_field_type(key, text, expected):
    config = _framework.make_config(toy, overrides={key: text})
    assert getattr(config, key) == expected
    assert type(getattr(config, key)) is type(expected)


def test_set_python_values_are_checked_too():
    config = _framework.make_config(toy, overrides={"learning_rate": 1, "widths": [2, 3]})
    assert config.learning_rate == 1.0 and config.widths == (2, 3)
    with pytest.raises(UsageError, match="bad value for n"):
        _framework.make_config(toy, overrides={"n": 1.5})


def test_unknown_key_lists_valid_keys_with_types_and_defaults(registered, capsys):
    assert cli.main(["run", "toy", "--set", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'nope'" in err
    for line in ("n: int = 1000", "widths: tuple[int, ...] = (4, 8)", "seed: int = 0",
                 "limit: int | None = None"):
        assert line in err


def _help(capsys, *argv) -> tuple[int, str, str]:
    """`main(argv)` where argparse exits: (status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code or 0, out, err


def test_run_name_help_lists_config_keys_with_defaults_types_and_meanings(registered, capsys):
    status, out, err = _help(capsys, "run", "toy", "--help")
    assert status == 0 and err == ""
    assert out.startswith("usage: python -m experiments run")
    assert f"toy: {toy.__doc__.splitlines()[0]}" in out
    keys = [line.split(":")[0].strip() for line in out.split("config keys (--set")[1].splitlines()
            if line.startswith("  ") and not line.startswith("   ")]
    assert keys == [f.name for f in dataclasses.fields(toy.Config)]
    for line in ("  n: int = 1000  (--smoke: 100)", "      number of draws",
                 "  widths: tuple[int, ...] = 4,8", "  limit: int | None = none",
                 "  mode: Literal['fast', 'slow'] = fast", "  centered: bool = false",
                 "      PRNG seed for the draws; allowed: an integer in [0, 2**32)"):
        assert line in out.splitlines(), line
    assert _help(capsys, "run", "toy", "-h", "--seed", "3")[1] == out  # -h, anywhere after NAME


def test_run_name_help_of_a_real_experiment_says_what_each_key_allows(capsys):
    from experiments import _config, gan

    status, out, _ = _help(capsys, "run", "gan", "--help")
    assert status == 0
    flat = " ".join(out.split())  # the descriptions are wrapped to the terminal's width
    notes = _config.comments(gan.Config)
    for f in dataclasses.fields(gan.Config):
        assert f"{f.name}: " in out and notes[f.name] and " ".join(notes[f.name].split()) in flat
        assert f"allowed: {_config.allowed(gan.Config, f.name)}" in flat, f.name
    assert "  hidden: tuple[int, ...] = 128,128  (--smoke: 8)" in out.splitlines()
    assert "allowed: an integer in [2, 64]" in flat  # pack: Annotated[int, Range(2, 64)]


def test_run_help_without_a_name_and_with_an_unknown_name(capsys):
    status, out, _ = _help(capsys, "run", "--help")
    assert status == 0 and "run NAME --help" in out and "config keys (" not in out
    status, out, err = _help(capsys, "run", "nope", "--help")
    assert status == 2 and out == "" and "unknown experiment 'nope'" in err


@pytest.mark.parametrize("item, words", [
    ("n=abc", ("n", "int", "'abc'")),
    ("centered=maybe", ("centered", "bool", "'maybe'")),
    ("rates=0.1,x", ("rates", "tuple[float, ...]", "'0.1,x'")),
    ("mode=medium", ("mode", "Literal['fast', 'slow']", "'medium'")),
])
def test_bad_value_names_field_type_and_value(registered, capsys, tmp_path, item, words):
    assert cli.main(["run", "toy", "--set", item, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not any(tmp_path.iterdir()), "validation must come before anything is written"


def test_unknown_experiment_lists_names(tmp_path, cache_dir):
    result = _cli("run", "nope", cwd=tmp_path, cache_dir=cache_dir)
    assert result.returncode == 2
    assert "unknown experiment 'nope'" in result.stderr
    assert all(name in result.stderr for name in experiments.EXPERIMENTS)
    assert not (tmp_path / "runs").exists()


def test_registered_but_missing_module_is_a_clear_error(registered):
    with pytest.raises(UsageError, match="'not-written' is registered but experiments.not_written"):
        _framework.execute("not-written")


def test_out_must_be_new_or_empty(registered, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    _framework.execute("toy", out=out, smoke=True)  # an empty folder is fine
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(UsageError, match="exists and is not an empty folder"):
        _framework.execute("toy", out=out, smoke=True, seed=5)
    assert (out / "metrics.json").read_bytes() == before


def test_an_empty_out_that_cannot_be_replaced_is_refused_before_the_run(registered, tmp_path,
                                                                        monkeypatch):
    """An empty mount point (or an immutable folder) cannot be replaced by the run's folder:
    refused before the run, instead of a traceback after it that took the results along."""
    out = tmp_path / "volume"
    out.mkdir()
    real_rmdir, ran = pathlib.Path.rmdir, []

    def busy(path):
        if path == out:
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_rmdir(path)

    monkeypatch.setattr(pathlib.Path, "rmdir", busy)
    monkeypatch.setattr(toy, "run", lambda *a, **k: ran.append(1) or {})
    with pytest.raises(UsageError, match=r"output folder .*volume is empty but cannot be "
                                         r"replaced by the run's folder \(Device or resource "
                                         r"busy: a mount point\?\); give a new folder inside it"):
        _framework.execute("toy", out=out, smoke=True)
    assert not ran and list(tmp_path.iterdir()) == [out] and not any(out.iterdir())


def test_failed_run_leaves_no_folder(registered, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="toy failure"):
        _framework.execute("toy", smoke=True, overrides={"fail": True}, out="run")
    with pytest.raises(RuntimeError, match="toy failure"):
        _framework.execute("toy", smoke=True, overrides={"fail": True})
    assert list(tmp_path.rglob("*")) == [tmp_path / "runs", tmp_path / "runs" / "toy"]


def test_non_finite_metrics_are_strings(tmp_path):
    _framework.write_json(tmp_path / "m.json", {"loss": float("nan"), "lr": [float("-inf"), 1.0]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"loss": "nan", "lr": ["-inf", 1.0]}


def test_write_csv_columns(tmp_path):
    _framework.write_csv(tmp_path / "h.csv", {"epoch": range(2), "loss": jnp.array([0.5, 0.25])})
    assert (tmp_path / "h.csv").read_text().splitlines() == ["epoch,loss", "0,0.5", "1,0.25"]
    with pytest.raises(ValueError, match="unequal"):
        _framework.write_csv(tmp_path / "bad.csv", {"a": [1], "b": [1, 2]})


@pytest.mark.parametrize("args, says", [
    (["--set", "epochs=2", "--set", "epochs=3"], "--set epochs given twice ('2' and '3')"),
    (["--seed", "2", "--set", "seed=1"], "--set seed=1 and --seed 2: give the seed once"),
])
def test_a_setting_given_twice_is_a_usage_error(capsys, args, says):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "digits", "--smoke", *args])
    assert e.value.code == 2
    assert says in capsys.readouterr().err


def test_the_summary_warns_when_a_training_run_became_non_finite(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    quiet = _framework.format_summary({"test_error": 0.1, "fit": {"stop_reason": "epochs"}},
                                      tmp_path)
    assert "warning" not in quiet
    loud = _framework.format_summary(
        {"test_error": 0.92, "single": {"stop_reason": "non_finite"}}, tmp_path)
    assert loud.splitlines()[-1] == (
        "warning: a training run became non-finite (single.stop_reason): its numbers are "
        "those of its last finite epoch; try a smaller learning rate")
