"""instabilities: the experiment library of the book "Instabilities and Flatness in Gradient Descent".

Modules: ``config`` (validated configs with ci/full scales), ``results`` (result files with provenance),
``data``, ``models``, ``losses``, ``curvature`` (HVPs, Lanczos, power iteration), ``train``
(GD/SGD loops with sharpness tracking).
"""
__version__ = "0.1.0"
