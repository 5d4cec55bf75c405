"""Shared pieces of the experiments' smoke tests (tests/test_exp_*.py)."""

import json
import re

from experiments import _framework

PNG = b"\x89PNG\r\n\x1a\n"


def run(tmp_path_factory, name: str):
    """`(metrics, outdir)` of experiment `name` run at smoke size into a fresh folder."""
    out = tmp_path_factory.mktemp(name) / "run"
    return _framework.execute(name, out=out, smoke=True, progress=False)


def assert_files(outdir, files, figures) -> None:
    """The run folder holds exactly `files`, and each of `figures` is a PNG."""
    assert {p.name for p in outdir.iterdir()} == set(files)
    for name in figures:
        assert (outdir / name).read_bytes()[:8] == PNG, name


def assert_no_timings_in_metrics(outdir) -> dict:
    """Same seed, same machine: a byte-identical metrics.json, so no key of it names a time;
    returns the run's timings.json (where the times go)."""
    keys = re.findall(r'"([^"]*)":', (outdir / "metrics.json").read_text())
    assert keys and not [k for k in keys if re.search("second|time", k, re.IGNORECASE)]
    return json.loads((outdir / "timings.json").read_text())
