"""instabilities: the experiment library of the book "Instabilities and Flatness in Gradient Descent".

A map of the package (one home per concept; chapters import from here, tests mirror it):

Core (flat modules, bottom of the import graph)
    ``config``           validated frozen-dataclass configs with ``ci``/``full`` scales, ``ConfigError``, hashes
    ``results``          result files with provenance (current / stale / corrupt / missing), atomic writes
    ``data``             offline datasets (mnist1d, digits, teacher; CIFAR-10 / Fashion-MNIST from a local folder)
    ``models``           ``ModelSpec``, ``build_model``, ``FlatModel`` (one flat parameter vector per network)
    ``losses``           MSE (1/2 sum over outputs, mean over examples), cross-entropy, ``Objective``
    ``optim``            the one set of optimizer update rules (GD, SGD, momentum, Nesterov, Adam, RMSProp,
                         Clipped-Ada) used by single runs and populations alike
    ``train``            ``TrainConfig``, ``train`` -> ``History`` (divergence recorded, checkpoint/resume)
    ``population``       many runs as one vmapped computation (``train_population``, ``train_sweep``)
    ``sequence_models``  the RNN and transformer of the label-noise architectures chapter
    ``plotting``, ``widgets``   figure style and the pre-rendered slider (chapters only)
    ``cli``              ``python -m instabilities list | status | run | reproduce``

``curvature/``  every Hessian product and eigensolver
    ``operator`` (Hessian-vector products, one iterate and batched), ``eigen`` (Lanczos, batched Lanczos,
    power iteration), ``block`` (block Krylov), ``tracker`` (the sharpness tracker of training and benchmarks),
    ``preconditioned`` (preconditioned sharpness, optimizer thresholds), ``compare`` (solver comparison, timers)

``dynamics/``  closed forms and small dynamical systems, one module per topic
    ``quadratic``, ``toys``, ``rpe``, ``flatness``, ``sgd_stability``, ``label_noise``, ``gradient_flow``, ...

``experiments/``  the registered experiments (one module per part of the book) and their machinery
    ``registry`` (chapter API: ``experiments.config / run / stored``), ``reproduce`` (run-and-store,
    checkpoints, time budget bookkeeping, TIMINGS.md), ``common`` (``NetConfig``, ``run_population``),
    ``classical``, ``eos``, ``flatness``, ``sgd``, ``adaptive``, ``label_noise``, ``full_scale``, ...

Public names are the ones documented in the book's API appendix; names starting with ``_`` are internal.
"""

__version__ = "0.2.0"
