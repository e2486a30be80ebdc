"""Closed forms and small dynamical systems, one module per topic (the theory behind the chapters).

* :mod:`.quadratic`: GD, momentum and Nesterov on quadratics; the 2/eta threshold (chapter 1).
* :mod:`.toys`: two-parameter models, catapults and self-stabilisation maps (chapters 3-4).
* :mod:`.rpe`: rotational polarity of eigenvectors in diagonal linear networks (chapter 5).
* :mod:`.flatness`: the curvature-instability dynamical system (chapter 6).
* :mod:`.sgd_stability`: linear stability of SGD (chapter 7).
* :mod:`.label_noise`: the exactly solvable label-noise model (chapters 9-11).
* :mod:`.gradient_flow`: gradient flow, for comparisons with GD.

They are leaves: they import only the core (``config``, ``models``, ``curvature``).
"""
