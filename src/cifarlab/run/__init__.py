"""What happens to a run, from the command line to metrics.json.

It imports nothing: train.py answers ``--help`` and a mistake in the config before Lightning or
torch is imported, and imports ``jobs`` only when the run starts.

- ``entry``: an entry point's task, a mistake in the input as one paragraph; ``run_folders``: a
  folder of its own for every run;
- ``jobs``: train.py's and eval.py's jobs, build -> fit -> test -> report; ``records``: what they
  write into metrics.json; ``tune``: ``tune=lr_find``;
- ``build``: the DataModule, the LightningModule, callbacks, loggers and Trainer from the config;
  ``trainer``: the Trainer; ``hardware``: the trainer config against this machine's hardware;
  ``workers``: a SIGTERM reaching ddp_spawn/ddp_fork workers; ``host_memory``: CPU training's
  allocator; ``step_hooks``: what Lightning's hook calls cost a step; ``quiet_console``;
  ``loggers``;
- ``checkpoints``: writing and loading checkpoints safely; ``resume``: continuing a run from one;
  ``provenance``: the commit, versions and device that produced a run.
"""
