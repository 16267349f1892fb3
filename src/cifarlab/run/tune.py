"""``train.py tune=lr_find``: Lightning's learning-rate range test instead of a training run.

The finder trains for ``lr_find.num_training`` steps with the lr rising exponentially from
``min_lr`` to ``max_lr`` (the configured schedule is set aside), records the loss, and suggests the
lr where the loss falls fastest. The plot, the numbers and the suggestion go into the run directory
and the override to use is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig

from cifarlab.errors import CifarlabError
from cifarlab.files import write_json
from cifarlab.review.figures import save_png
from cifarlab.run.trainer import build_trainer
from cifarlab.utils import to_plain_dict


def find_lr(
    cfg: DictConfig, module: L.LightningModule, datamodule: L.LightningDataModule, output_dir: Path
) -> dict[str, Any]:
    """Runs the range test; writes lr_find.png and lr_find.json; returns what it found."""
    options = {
        "min_lr": 1e-6,
        "max_lr": 1.0,
        "num_training": 100,
        **to_plain_dict(cfg.get("lr_find")),
    }
    # num_training steps decide, even where an epoch has fewer batches (an epoch has at least
    # one); a finite max_epochs keeps the schedule's step count finite while it is built
    trainer = build_trainer(
        cfg.trainer,
        cfg.get("hardware"),
        callbacks=[],
        logger=False,
        default_root_dir=str(output_dir),
        max_epochs=int(options["num_training"]),
    )
    finder = Tuner(trainer).lr_find(module, datamodule=datamodule, update_attr=False, **options)
    if finder is None:
        raise CifarlabError("The lr finder did not run (trainer.fast_dev_run is set?).")
    suggestion = finder.suggestion()
    fig = finder.plot(suggest=suggestion is not None)
    save_png(fig, output_dir / "lr_find.png")
    result = {
        "suggested_lr": suggestion,
        "override": f"optimizer.lr={suggestion:.3g}" if suggestion else None,
        "optimizer": cfg.optimizer.name,
        **options,
        "lr": finder.results["lr"],
        "loss": finder.results["loss"],
        "output_dir": str(output_dir),
    }
    write_json(output_dir / "lr_find.json", result)
    if suggestion:
        print(
            f"\nSuggested learning rate: {suggestion:.3g} (steepest fall of the loss; plot in "
            f"{output_dir / 'lr_find.png'}). Train with:\n  train.py {result['override']} "
            "<your other overrides>\n"
        )
    else:
        print(
            f"\nThe lr finder found no clear suggestion; look at {output_dir / 'lr_find.png'} "
            "and pick an lr a little below where the loss is lowest (or raise "
            "lr_find.num_training).\n"
        )
    return result
