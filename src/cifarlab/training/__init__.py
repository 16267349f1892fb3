"""What trains the network: the LightningModule and the tricks that change the trained weights.

- ``module``: ``ClassifierModule``, the loss, the training and evaluation steps, the metrics
  (``epoch_sums``: the training loss and accuracy summed on the device);
- ``optimizers``: the optimizer over the net's parameter groups (``optimizer=``), ``muon`` Muon;
- ``schedules``: the learning-rate schedule, a factor per parameter group (``scheduler=``);
- ``ema``: the exponential moving average of the weights (``ema.decay``);
- ``tta``: test-time augmentation (``tta=``).
"""
