"""Closed forms and small dynamical systems, one module per topic (the theory behind the chapters).

* :mod:`.quadratic`: GD, momentum and Nesterov on quadratics; the 2/eta threshold (chapter 1).
* :mod:`.toys`: two-parameter models, catapults and self-stabilisation maps (chapters 3-4).
* :mod:`.rpe`: rotational polarity of eigenvectors in diagonal linear networks (chapter 5).
* :mod:`.flatness`: the curvature-instability dynamical system (chapter 6).
* :mod:`.sgd_stability`: linear stability of SGD (chapter 7).
* :mod:`.label_noise`: the exactly solvable label-noise model (chapters 9-11).
* :mod:`.gradient_flow`: gradient flow, for comparisons with GD.
* :mod:`.central_flow`: the central flow of Cohen et al., integrated for a network (chapter 4).
* :mod:`.gauss_newton`: the Gauss-Newton / residual split of the Hessian under the book's MSE (chapter 2).
* :mod:`.balancedness`: deep linear nets; balancedness matrices that only unstable GD steps change (ch. 5).
* :mod:`.deep_linear`: closed forms of the label-noise theorem for deep linear networks (chapter 9).

They are leaves: they import only the core (``config``, ``models``, ``losses``, ``optim``, ``curvature``).
A module here may iterate its own map (a toy recursion, a closed-form chain) because that map is the object
of study; training a network always goes through ``optim``'s update rules.
"""
