"""The dropout experiment at smoke size: every file and metric, the rates swept in one
program (each model trains at its own rates; rates 0 train the net without Dropout layers),
and bad configs refused before anything is compiled."""

import csv
import dataclasses
import json

import numpy as np
import pytest

import train
from experiments import _framework
from experiments import dropout as exp
from nets import objective

FIGURES = {"curves.png", "rate.png"}
FILES = {"config.json", "environment.json", "metrics.json", "history.csv", "models.csv",
         *FIGURES}


def config():
    return dataclasses.replace(exp.Config(), **exp.SMOKE)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("dropout") / "run"
    metrics, outdir = _framework.execute("dropout", out=out, smoke=True, progress=False)
    with open(outdir / "history.csv") as f:
        history = list(csv.DictReader(f))
    return metrics, outdir, history


def _column(history, name, input_rate, hidden_rate, seed):
    return np.array([float(row[name]) for row in history
                     if (float(row["input_rate"]), float(row["hidden_rate"]), int(row["seed"]))
                     == (input_rate, hidden_rate, seed)])


def test_smoke_writes_every_file_and_the_metrics(smoke):
    metrics, outdir, history = smoke
    c = config()
    I, H, S = len(c.input_rates), len(c.hidden_rates), c.seeds
    assert {p.name for p in outdir.iterdir()} == FILES
    for name in FIGURES:
        assert (outdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert json.loads((outdir / "metrics.json").read_text()) == metrics
    assert metrics["compilations"] == 1 and metrics["models"] == I * H * S  # ONE program
    assert (metrics["input_rates"], metrics["hidden_rates"]) == (list(c.input_rates),
                                                                  list(c.hidden_rates))
    by = metrics["by_setting"]
    for name, values in by.items():
        assert np.shape(values) == (I, H), name
    for name, values in metrics["per_seed"].items():
        assert np.shape(values) == (I, H, S), name
    chosen = (c.input_rates.index(metrics["chosen"]["input_rate"]),
              c.hidden_rates.index(metrics["chosen"]["hidden_rate"]))
    assert by["val_error_mean"][chosen[0]][chosen[1]] == np.min(by["val_error_mean"])
    assert metrics["test_error"] == by["test_error_mean"][chosen[0]][chosen[1]]
    assert metrics["test_error_no_dropout"] == by["test_error_mean"][0][0]
    assert np.all(np.asarray(by["best_test_error_mean"]) <= np.asarray(by["test_error_mean"]))
    versus = metrics["versus_no_dropout"]
    assert set(versus) == {"chosen", "best_hidden_only", "best_input_only"}
    assert {k: versus["chosen"][k] for k in ("input_rate", "hidden_rate")} == metrics["chosen"]
    assert versus["best_hidden_only"]["input_rate"] == versus["best_input_only"]["hidden_rate"] == 0
    for v in versus.values():
        assert v["seeds_lower"] + v["seeds_tied"] + v["seeds_higher"] == S
        assert v["test_error_gain"] == pytest.approx(v["test_error_no_dropout"] - v["test_error"])
    assert np.shape(metrics["gap_over_epochs"]["error"]) == (I, H, c.epochs)  # eval_every 1
    assert len(history) == I * H * S * c.epochs
    # The final evaluation (all sets in one program) agrees with the sweep's last epoch.
    last = [[[_column(history, "test_error", ri, rh, s)[-1] for s in range(S)]
             for rh in c.hidden_rates] for ri in c.input_rates]
    np.testing.assert_allclose(metrics["per_seed"]["test_error"], last, atol=1e-6)


def test_each_model_trains_at_its_rates_and_rate_zero_is_the_net_without_dropout(smoke):
    """Seed 0 starts alike and sees the same minibatches at every pair of rates: the
    training losses differ between the pairs, so each model trained at its own rates; and
    rates (0, 0) reproduce ``train.fit`` of the net built without Dropout layers."""
    _, _, history = smoke
    c = config()
    losses = [_column(history, "minibatch_loss", ri, rh, 0)
              for ri in c.input_rates for rh in c.hidden_rates]
    assert all(len(loss) == c.epochs for loss in losses)
    for i in range(len(losses)):
        for j in range(i):
            assert not np.allclose(losses[i], losses[j], rtol=1e-4), (i, j)

    model, at_input, at_hidden = exp.net(c)
    plain, _, _ = exp.net(c, dropout=False)
    k_data, init_keys, order_keys = exp.keys(c)
    params = model.init(init_keys[0])[0]
    dropout_at = {at_input, *at_hidden}
    params = tuple(p for i, p in enumerate(params) if i not in dropout_at)
    X, y = (a[:c.n_train] for a in train.data.load_digits(key=k_data).train)
    fitted = train.fit(objective.make(plain), params, (X, y),
                       optimizer=train.sgd(c.learning_rate, momentum=c.momentum),
                       key=order_keys[0], epochs=c.epochs, batch_size=c.batch_size,
                       progress=False)
    np.testing.assert_allclose(fitted.history["loss"], losses[0], rtol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"hidden_rates": (0.1, 0.5)}, r"hidden_rates: expected 0 among the rates"),
    ({"input_rates": (0.0, 1.0)}, r"input_rates: expected a finite number >= 0 and < 1, got 1.0"),
    ({"hidden_rates": (0.0, 0.5, 0.3)}, r"hidden_rates: expected strictly increasing rates"),
    ({"input_rates": ()}, r"input_rates: expected at least one drop rate"),
    ({"hidden": ()}, r"hidden: expected at least one hidden layer"),
    ({"n_train": 5000}, r"n_train: expected at most 1079"),
])
def test_bad_configs_are_refused_before_training(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        exp.run(dataclasses.replace(config(), **change), tmp_path)
    assert not any(tmp_path.iterdir())
