"""What a run leaves for people to read: its figures, its tables and its report.

- ``figures``: every figure, for TensorBoard and the run folder alike;
- ``analysis``: the test's error analysis (per-class scores, confused pairs, calibration);
- ``report``: the per-class table on the console and the per-class chart;
- ``hparams_tab``: the columns of TensorBoard's HParams tab;
- ``tables``: every CSV and markdown table, in one format.
"""
