"""Workflows built from the engine's pieces.

* :mod:`~advsyst.workflows.detector` - the adversarial detector (clean vs adversarial MLP).
* :mod:`~advsyst.workflows.twopass` - the two-pass coffea flow (features, attack, histograms).
* :mod:`~advsyst.workflows.robustness` - repeated-misclassification significance, grey-box
  matrix, adversarial training and augmentation (paper Sections 6-8).
* :mod:`~advsyst.workflows.demo` - ``advsyst demo``, the main job.
"""
