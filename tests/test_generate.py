"""nets.generate: greedy generation is an argmax loop over ``model.apply`` written by hand
(Transformer, Mamba, LSTM); sampling replays with its key; temperature 0 is greedy; a model
or prompt it cannot serve is refused by name before anything runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nets
from nets import mamba, rnn, transformer

T, V = 8, 6
KW = dict(vocab_size=V, n_classes=V, seq_len=T, d_model=8)
MODELS = {
    "transformer": lambda: transformer.model(**KW, n_heads=2),
    "mamba": lambda: mamba.model(**KW, d_state=4),
    "lstm": lambda: rnn.model(**KW, d_hidden=8),
}


def _argmax_loop(net, params, prompt, steps):
    """Greedy decoding by hand: the whole sequence so far, padded with 0, through apply."""
    ids = list(prompt)
    for _ in range(steps):
        buf = np.zeros(T, np.int32)
        buf[:len(ids)] = ids
        ids.append(int(np.argmax(net.apply(params, jnp.asarray(buf))[len(ids) - 1])))
    return ids


@pytest.mark.parametrize("name", sorted(MODELS))
def test_greedy_is_an_argmax_loop_over_apply(name):
    net = MODELS[name]()
    params, _ = net.init(jax.random.key(0))
    for prompt, steps in (([1], T - 1), ([3, 0, 5], 2), ([2] * T, 0)):
        out = nets.generate(net, params, np.array(prompt), steps)
        assert out.shape == (len(prompt) + steps,)
        assert out.tolist() == _argmax_loop(net, params, prompt, steps)
    assert nets.generate(net, params, np.array([1, 2]), 4, key=jax.random.key(3),
                         temperature=0).tolist() == _argmax_loop(net, params, [1, 2], 4)


def test_sampling_replays_with_its_key_and_reads_the_temperature():
    net = MODELS["transformer"]()
    params, _ = net.init(jax.random.key(0))
    prompt = np.array([1, 2])
    draw = lambda k, temp=1.0: nets.generate(net, params, prompt, T - 2,  # noqa: E731
                                             key=jax.random.key(k), temperature=temp).tolist()
    assert draw(1) == draw(1)
    assert draw(1)[:2] == [1, 2]
    hot = {tuple(draw(k, 50.0)) for k in range(8)}  # near-uniform draws: not all the same
    assert len(hot) > 1
    cold = {tuple(draw(k, 1e-4)) for k in range(4)}  # near-greedy
    assert cold == {tuple(_argmax_loop(net, params, [1, 2], T - 2))}


@pytest.mark.parametrize("build, prompt, steps, error, match", [
    (lambda: transformer.model(**KW, n_heads=2, causal=False), [1], 1, ValueError,
     r"^model: generate expected a causal model .* got attention with causal=False"),
    (lambda: transformer.model(**KW, n_heads=2, readout="last"), [1], 1, ValueError,
     r"^model: generate expected scores at every position, output_shape \(8, 6\) "
     r"\(readout=\"all\"\), got output_shape \(6,\)"),
    (lambda: rnn.model(vocab_size=V, n_classes=3, seq_len=T), [1], 1, ValueError,
     r"^model: generate expected scores of the next token, n_classes == vocab_size 6, got "
     r"n_classes 3"),
    (lambda: rnn.model(d_in=3, n_classes=V, seq_len=T), [1], 1, ValueError,
     r"^model: generate expected a model of token ids, input_shape \(T,\), got input_shape "
     r"\(8, 3\)"),
    (MODELS["lstm"], [1] * (T + 1), 0, ValueError,
     r"^prompt: generate expected ids of shape \(len,\) with 1 <= len <= 8 .* got shape \(9,\)"),
    (MODELS["lstm"], [1, 6], 1, ValueError,
     r"^prompt: expected token ids in \[0, 6\) .* the first outside is prompt\[1\] = 6$"),
    (MODELS["lstm"], [-1], 1, ValueError, r"^prompt: expected token ids in \[0, 6\)"),
    (MODELS["lstm"], [1, 2, 3], T - 2, ValueError,
     r"^steps: generate expected len\(prompt\) \+ steps <= 8 \(the model's seq_len\), got "
     r"3 \+ 6 = 9$"),
    (MODELS["lstm"], [1.0], 1, TypeError, r"^prompt: generate expected integer token ids"),
], ids=["non_causal", "readout_last", "n_classes", "real_features", "long_prompt", "id_high",
        "id_negative", "too_many_steps", "float_prompt"])
def test_refusals_name_the_argument(build, prompt, steps, error, match):
    net = build()
    params, _ = net.init(jax.random.key(0))
    with pytest.raises(error, match=match):
        nets.generate(net, params, np.array(prompt), steps)
