"""Nothing in the library executes data: no pickle (or its relatives), no eval or exec.

Checkpoints are msgpack with a SHA-256 header (train/checkpoint.py), configs are frozen
dataclasses parsed field by field (experiments/_config.py), NumPy files are read with
``allow_pickle=False`` (its default). This scans the source, so a later change that brings
one of them in fails here and has to say why.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(
    r"(?:^|[^._A-Za-z0-9])(?:eval|exec)\("  # builtins, not jax.eval_shape or x.eval(...)
    r"|\b(?:import|from)\s+(?:c?pickle|dill|marshal|shelve|cloudpickle)\b"
    r"|allow_pickle\s*=\s*True|\bpickle\.loads?\(|\btorch\.load\(")


def test_no_pickle_eval_or_exec_in_the_library():
    found = []
    for package in ("nets", "train", "experiments"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if FORBIDDEN.search(line.split("#")[0]):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_scan_finds_what_it_looks_for():
    for line in ("import pickle", "from dill import loads", "x = eval(text)",
                 "np.load(f, allow_pickle=True)", "exec(code)"):
        assert FORBIDDEN.search(line), line
    for line in ("jax.eval_shape(f, x)", "model.evaluate(x)", "np.load(f)", "run_eval(x)"):
        assert not FORBIDDEN.search(line), line
