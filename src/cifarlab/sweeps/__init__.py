"""Many runs at once: Hydra multiruns (``train.py -m``), their summary, and the Optuna search.

It imports nothing: Hydra builds the sweep callback (``summary.SweepCallback``) before train.py's
first checks, which answer without importing torch.

- ``plan``: what a sweep varies and how its jobs are named; ``job_files``: what a job leaves in its
  folder, read back; ``rows``: one summary row per job; ``unfinished``: the jobs not finished and
  their commands; ``summary``: summary.csv/summary.md and the Hydra callback that writes them;
- ``compare``: mean +- std over seeds, one line per setting;
- ``search``: one worker of an Optuna study; ``search_space``, ``storage``, ``heartbeat`` and
  ``trials`` (how each trial ended, trials.csv and search.md).
"""
