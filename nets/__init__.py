"""Neural networks as pure JAX functions: ``init(key, ...) -> params``, ``apply(params, x)``.

Modules follow the note (Efron & Hastie, CASI ch. 18; ESL ch. 11):
:mod:`nets.activations` (g and g'), :mod:`nets.mlp` (z = W a + b, a = g(z)),
:mod:`nets.losses`, :mod:`nets.penalties` (J(W)), :mod:`nets.objective` (the penalized
objective), :mod:`nets.backprop` (the hand-derived chain rule) and :mod:`nets.gradcheck`.
"""

from nets import activations, backprop, gradcheck, losses, mlp, objective, penalties

__all__ = ["activations", "backprop", "gradcheck", "losses", "mlp", "objective", "penalties"]
