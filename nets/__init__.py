"""Neural networks as pure JAX functions: ``init(key, ...) -> params``, ``apply(params, x)``.

Modules follow the note (Efron & Hastie, CASI ch. 18; ESL ch. 11):
:mod:`nets.activations` (g and g'), :mod:`nets.mlp` (z = W a + b, a = g(z)),
:mod:`nets.losses`, :mod:`nets.penalties` (J(W)), :mod:`nets.objective` (the penalized
objective), :mod:`nets.backprop` (the hand-derived chain rule) and :mod:`nets.gradcheck`.
Architectures compose from :mod:`nets.layers` (pure layers for one example: dense,
convolution, pooling, normalisation, dropout; serial, residual, concat) into a
:class:`nets.model.Model`; :mod:`nets.metrics` scores batched outputs. Architectures of the
note, each a short module over the layers: :mod:`nets.cnn` (ESL's Net-1..5),
:mod:`nets.resnet` (plain vs residual deep nets), :mod:`nets.densenet` (dense blocks, and a
plain CNN of equal size), :mod:`nets.autoencoder` (linear and deep autoencoders, PCA);
:mod:`nets.adversarial` (FGSM and PGD adversarial examples). Sequence models over ONE
sequence ``(T, d)``: :mod:`nets.rnn` (RNN and LSTM by ``lax.scan``), :mod:`nets.transformer`
(causal multi-head attention, positional encoding, pre-LN blocks), :mod:`nets.mamba` (S6,
the selective scan, as a parallel ``associative_scan``); :mod:`nets.backprop_sequence`
(LSTM through time and attention, by hand); :func:`nets.generate` draws tokens from any of
them built as a causal language model. Generative models: :mod:`nets.gan` (two players
in one training step, PacGAN, mode metrics), :mod:`nets.diffusion` (DDPM). Contrastive
image-text models: :mod:`nets.clip` (CLIP: two encoders, the symmetric cross-entropy, zero-shot
classification) with :mod:`nets.tokenizer` (a word-level tokenizer for captions).
"""

from nets import (activations, adversarial, autoencoder, backprop, cnn, densenet, gradcheck,
                  layers, losses, metrics, mlp, model, objective, penalties, resnet)
from nets import backprop_sequence, mamba, rnn, transformer
from nets import diffusion, gan
from nets import clip, tokenizer
from nets._sequence import generate
from nets.layers import count_params
from nets.model import Model

__all__ = ["activations", "adversarial", "autoencoder", "backprop", "cnn", "densenet",
           "gradcheck", "layers", "losses", "metrics", "mlp", "model", "objective", "penalties",
           "resnet", "backprop_sequence", "mamba", "rnn", "transformer", "diffusion", "gan",
           "clip", "tokenizer",
           "count_params", "Model", "generate"]
