"""The character-level tokenizer (``tokenizer.build(..., level="char")``): every character a
token as it is, the same specials, length and padding as the word level; its ids feed a
padded character model and ``nets.generate``; bad levels and vocabularies are refused."""

import jax
import numpy as np
import pytest

import nets
from nets import tokenizer, transformer


def test_characters_round_trip_as_they_are():
    tok = tokenizer.build(["Hello, world", "hé!"], level="char")
    assert tok.level == "char" and tok.vocab[:3] == tokenizer.SPECIALS
    assert set(tok.vocab[3:]) == set("Hello, world") | set("hé!")
    assert tok.length == len("Hello, world") + 1
    for text in ("Hello, world", "hé!", " "):
        ids = tok.encode(text)
        assert ids.shape == (tok.length,) and ids[len(text)] == tok.end_id
        assert (ids[len(text) + 1:] == tok.pad_id).all()
        assert tok.decode(ids) == text  # no lower-casing, spaces kept
    assert tok.decode(tok.encode("Hex")) == "He<unk>"
    with pytest.raises(ValueError, match=r"the character 'x' of 'Hex' is not in the "
                                         r"vocabulary"):
        tok.encode("Hex", unknown="error")
    with pytest.raises(ValueError, match=r"has 13 characters, and with the end token needs a "
                                         r"length of 14"):
        tok.encode("Hello, world!")
    with pytest.raises(ValueError, match=r"expected at least one character"):
        tok.encode("")


def test_the_word_level_is_unchanged_and_bad_levels_and_vocabularies_are_refused():
    words = tokenizer.build(["The cat", "a dog"])
    assert words.level == "word" and words.decode(words.encode("a cat")) == "a cat"
    with pytest.raises(ValueError, match=r"level: expected one of \('word', 'char'\), got "
                                         r"'byte'"):
        tokenizer.build(["x"], level="byte")
    with pytest.raises(ValueError, match=r"vocab: expected single characters \(level='char'\), "
                                         r"got 'ab' at id 3"):
        tokenizer.Tokenizer(tokenizer.SPECIALS + ("ab",), 4, "char")
    with pytest.raises(ValueError, match=r"length: expected at least 6 \(the 5 characters of "
                                         r"texts\[0\] = 'abcde' and the end token\), got 3"):
        tokenizer.build(["abcde"], length=3, level="char")


def test_a_character_model_reads_padded_ids_and_generates_text():
    tok = tokenizer.build(["abcabcabc"], level="char", length=12)
    X = tok.encode_batch(["abcabc", "bcab", "cabca"])
    net = transformer.model(vocab_size=tok.vocab_size, n_classes=tok.vocab_size,
                            seq_len=tok.length, d_model=8, n_layers=1, pad_id=tok.pad_id)
    params, _ = net.init(jax.random.key(0))
    assert net.batch_apply(params, X)[0].shape == (3, tok.length, tok.vocab_size)
    out = np.asarray(nets.generate(net, params, tok.encode("ab")[:2], 5))
    assert out.shape == (7,) and (out >= 0).all() and (out < tok.vocab_size).all()
