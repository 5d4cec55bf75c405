"""A small word-level tokenizer for captions: words to token ids of a fixed length and back.

Text is split into *words* by :func:`words`: lower case, a run of ASCII letters ``a-z``, a run
of ASCII digits ``0-9``, or one other character, a punctuation mark (``"The number 7."`` ->
``["the", "number", "7", "."]``). A non-ASCII letter or digit (``"café"``, ``"Straße"``)
is refused with a ValueError naming the text and the character, rather than silently cut
into fragments (``"caf"``, ``"é"``); transliterate such text to ASCII first. A
:class:`Tokenizer` maps each word to its index in a fixed vocabulary whose first three
entries are the special tokens

    id 0  ``<pad>``   fills the sequence after the end token (a sequence model built
                      with ``pad_id=0`` hides it: :mod:`nets._sequence`, "Padding")
    id 1  ``<end>``   closes every caption (a causal text encoder reads its summary there)
    id 2  ``<unk>``   a word outside the vocabulary (``unknown="unk"``, the default)

so a caption of ``k`` words becomes ``(w_1, ..., w_k, <end>, <pad>, ..., <pad>)`` of length
``length`` (``k + 1 <= length``, else a ``ValueError``). :func:`build` makes the vocabulary
from example texts (sorted, so the same texts give the same ids). Encoding runs on the host
(NumPy), never traced: captions are data, prepared before training.

``level="char"`` (:func:`build`) makes a character-level tokenizer instead: every character
of the text is a token, as it is (no lower-casing; spaces and any Unicode character
included), and :meth:`Tokenizer.decode` joins them without spaces; the special tokens,
``length`` and padding are the same. That is the tokenizer of a character-level language
model (:func:`nets.generate`).

>>> chars = build(["abba", "cab"], level="char")
>>> chars.vocab, chars.length
(('<pad>', '<end>', '<unk>', 'a', 'b', 'c'), 5)
>>> chars.encode("bad"), chars.decode(chars.encode("bad"))
(array([4, 3, 2, 1, 0], dtype=int32), 'ba<unk>')

This plays the part of CLIP's byte-pair encoding (Radford et al. 2021, section 2.4: a
lower-cased BPE of 49,152 entries, sequences bracketed by [SOS] and [EOS], the text
transformer's activation at [EOS] taken as the text's feature) for a vocabulary of a few
dozen words: whole words suffice, and an [SOS] token adds nothing to a causal encoder that
pools at the end.

>>> tok = build(["a handwritten seven", "the number 7"])
>>> tok.vocab
('<pad>', '<end>', '<unk>', '7', 'a', 'handwritten', 'number', 'seven', 'the')
>>> tok.length                         # the longest text (3 words) plus the end token
4
>>> tok.encode("A handwritten 7")
array([4, 5, 3, 1], dtype=int32)
>>> tok.decode(tok.encode("A handwritten 7"))
'a handwritten 7'
>>> tok.encode("a blurry seven")       # an unknown word
array([4, 2, 7, 1], dtype=int32)

References:
  Radford, Kim, Hallacy, Ramesh, Goh, Agarwal, Sastry, Askell, Mishkin, Clark, Krueger &
  Sutskever, Learning Transferable Visual Models From Natural Language Supervision, ICML
  2021, https://arxiv.org/abs/2103.00020 (section 2.4, the text encoder's tokens).
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from nets import _checks

PAD, END, UNK = "<pad>", "<end>", "<unk>"
SPECIALS = (PAD, END, UNK)  # ids 0, 1, 2
UNKNOWN = ("unk", "error")
LEVELS = ("word", "char")

_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """``text`` lower-cased and split into words: runs of ASCII letters ``a-z``, runs of
    ASCII digits ``0-9``, and single other characters (punctuation marks); white space
    separates and is dropped. A non-ASCII letter or digit is a ValueError (module doc).

    >>> words("The number 12, by hand.")
    ['the', 'number', '12', ',', 'by', 'hand', '.']
    >>> words("a café")
    Traceback (most recent call last):
      ...
    ValueError: text: expected ASCII letters and digits only (a word is a run of a-z or 0-9; transliterate first), got the non-ASCII letter 'é' at position 5 of 'a café'
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__} {text!r}")
    if not text.isascii():
        for i, ch in enumerate(text):
            if not ch.isascii() and ch.isalnum():
                kind = "digit" if ch.isdigit() or ch.isnumeric() else "letter"
                raise ValueError(f"text: expected ASCII letters and digits only (a word is a "
                                 f"run of a-z or 0-9; transliterate first), got the non-ASCII "
                                 f"{kind} {ch!r} at position {i} of {text!r}")
    return _WORD.findall(text.lower())


def _units(text: str, level: str) -> list[str]:
    """The tokens of ``text``: its :func:`words`, or its characters for ``"char"``."""
    if level == "word":
        return words(text)
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__} {text!r}")
    return list(text)


def _check_level(level) -> str:
    if level not in LEVELS:
        raise ValueError(f"level: expected one of {LEVELS}, got {level!r}")
    return level


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A fixed vocabulary and sequence length (module doc).

    Attributes:
      vocab: the tokens by id; the first three are :data:`SPECIALS` (``<pad>``, ``<end>``,
        ``<unk>``), the rest distinct words as :func:`words` splits them, or distinct
        single characters with ``level="char"``.
      length: the length of every encoded sequence (tokens, the end token, padding), >= 2.
      level: ``"word"`` (the default) or ``"char"`` (module doc).
    """

    vocab: tuple
    length: int
    level: str = "word"

    def __post_init__(self):
        if not isinstance(self.vocab, (tuple, list)):
            raise TypeError(f"vocab: expected a tuple of str, got {type(self.vocab).__name__}")
        vocab = tuple(self.vocab)
        object.__setattr__(self, "vocab", vocab)
        if vocab[:3] != SPECIALS:
            raise ValueError(f"vocab: expected the special tokens {SPECIALS} first, got "
                             f"{vocab[:3]}")
        _check_level(self.level)
        for i, w in enumerate(vocab[3:], start=3):
            if self.level == "char" and not (isinstance(w, str) and len(w) == 1):
                raise ValueError(f"vocab: expected single characters (level='char'), got "
                                 f"{w!r} at id {i}")
            if self.level == "word" and (not isinstance(w, str) or words(w) != [w]):
                raise ValueError(f"vocab: expected single lower-case words (as tokenizer.words "
                                 f"splits text), got {w!r} at id {i}")
        if len(set(vocab)) != len(vocab):
            dup = sorted({w for w in vocab if vocab.count(w) > 1})
            raise ValueError(f"vocab: expected distinct words, got duplicates {dup}")
        _checks.check_int(self.length, "length", 2)

    @functools.cached_property
    def _ids(self) -> dict:
        return {w: i for i, w in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        """Entries of the vocabulary, the special tokens included."""
        return len(self.vocab)

    pad_id = 0
    end_id = 1
    unk_id = 2

    def encode(self, text: str, *, unknown: str = "unk") -> np.ndarray:
        """Token ids ``(length,)`` int32: the words (or characters) of ``text``, ``<end>``,
        then ``<pad>``.

        ``unknown``: ``"unk"`` maps a token outside the vocabulary to ``<unk>``; ``"error"``
        raises a ValueError naming it. A text with no token, or with more than
        ``length - 1``, is a ValueError.
        """
        if unknown not in UNKNOWN:
            raise ValueError(f"unknown: expected one of {UNKNOWN}, got {unknown!r}")
        ws = _units(text, self.level)
        unit = "word" if self.level == "word" else "character"
        if not ws:
            raise ValueError(f"text: expected at least one {unit}, got {text!r}")
        if len(ws) + 1 > self.length:
            raise ValueError(f"text: {text!r} has {len(ws)} {unit}s, and with the end token "
                             f"needs a length of {len(ws) + 1}; this tokenizer's length is "
                             f"{self.length} (at most {self.length - 1} {unit}s)")
        ids = np.full(self.length, self.pad_id, np.int32)
        for i, w in enumerate(ws):
            if w not in self._ids and unknown == "error":
                raise ValueError(f"text: the {unit} {w!r} of {text!r} is not in the "
                                 f"vocabulary ({self.vocab_size} entries)")
            ids[i] = self._ids.get(w, self.unk_id)
        ids[len(ws)] = self.end_id
        return ids

    def encode_batch(self, texts, *, unknown: str = "unk") -> np.ndarray:
        """``(n, length)`` int32, :meth:`encode` of each of the ``n`` texts."""
        if isinstance(texts, str) or not isinstance(texts, (tuple, list)):
            raise TypeError(f"texts: expected a list or tuple of str, got "
                            f"{type(texts).__name__}")
        if not texts:
            raise ValueError("texts: expected at least one text, got none")
        return np.stack([self.encode(t, unknown=unknown) for t in texts])

    def decode(self, ids) -> str:
        """The words of a sequence of token ids up to its ``<end>`` (or its last id), joined
        by spaces (characters, with ``level="char"``: joined as they are); ``<unk>`` reads
        as ``"<unk>"``. ``decode(encode(t))`` is
        ``" ".join(words(t))`` when every word is in the vocabulary. A ``<pad>`` before the
        end token, an id outside ``[0, vocab_size)``, or ids that are not a 1-D integer
        array are errors."""
        arr = np.asarray(ids)
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"ids: expected integer token ids, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"ids: expected one sequence of shape (T,), got shape {arr.shape}")
        bad = np.flatnonzero((arr < 0) | (arr >= self.vocab_size))
        if bad.size:
            raise ValueError(f"ids: expected token ids in [0, {self.vocab_size}), got "
                             f"{int(arr[bad[0]])} at position {int(bad[0])}")
        out = []
        for i, t in enumerate(arr.tolist()):
            if t == self.end_id:
                break
            if t == self.pad_id:
                raise ValueError(f"ids: a padding token at position {i}, before the end token")
            out.append(self.vocab[t])
        return ("" if self.level == "char" else " ").join(out)


def build(texts, *, length: int | None = None, extra_words=(), level: str = "word") -> Tokenizer:
    """A :class:`Tokenizer` whose vocabulary is the special tokens, then the sorted distinct
    words of ``texts`` and ``extra_words`` (their characters with ``level="char"``);
    ``length`` defaults to the most tokens in one of ``texts`` plus one (the end token); a
    ``length`` too short for one of ``texts`` is a ValueError."""
    level = _check_level(level)
    if isinstance(texts, str) or not isinstance(texts, (tuple, list)):
        raise TypeError(f"texts: expected a list or tuple of str, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts: expected at least one text, got none")
    split = [_units(t, level) for t in texts]
    if isinstance(extra_words, str) or not isinstance(extra_words, (tuple, list)):
        raise TypeError(f"extra_words: expected a list or tuple of str, got "
                        f"{type(extra_words).__name__}")
    extra = [w for e in extra_words for w in _units(e, level)]
    specials = {w for ws in split for w in ws} & set(SPECIALS)
    if specials:  # words() never returns "<pad>": a guard should its pattern change
        raise ValueError(f"texts: the special tokens {sorted(specials)} may not be words")
    vocab = SPECIALS + tuple(sorted({w for ws in split for w in ws} | set(extra)))
    longest = max(len(ws) for ws in split)
    if length is None:
        length = max(longest + 1, 2)
    elif not isinstance(length, bool) and isinstance(length, (int, np.integer)) \
            and length < longest + 1:
        i = next(i for i, ws in enumerate(split) if len(ws) == longest)
        unit = "words" if level == "word" else "characters"
        raise ValueError(f"length: expected at least {longest + 1} (the {longest} {unit} of "
                         f"texts[{i}] = {texts[i]!r} and the end token), got {length}")
    return Tokenizer(vocab, length, level)


__all__ = ["PAD", "END", "UNK", "SPECIALS", "UNKNOWN", "LEVELS", "words", "Tokenizer",
           "build"]
