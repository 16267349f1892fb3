"""The Lightning callbacks of a run, one concern a module; conf/callbacks/default.yaml lists the
ones a run can switch off (``callbacks.<name>=null``), cifarlab.run.build adds the others.

- ``console``: the network summary and the progress bar; ``curves``: history.csv and curves.png;
- ``class_figures``, ``image_grids``, ``hparams`` (and ``tensorboard``, the logger they share):
  what TensorBoard shows beyond the scalars;
- ``early_stopping``; ``divergence``: a non-finite loss stops the run;
- ``error_analysis`` (and ``eval_outputs``, the logits it collects): every test's analysis;
  ``temperature``: eval.py's temperature fit;
- ``checkpoint_state``: the config and random states every checkpoint carries; ``provenance``:
  what produced the run, in its folder and checkpoints;
- ``trial_pruning``: a search trial stopped when the study's pruner says so.
"""
