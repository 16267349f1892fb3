"""A folder of its own for every run and sweep, and never a folder that holds another run.

Hydra's ``${now:...}`` names a folder to the second, so two runs started in the same second would
write into one folder: one ``.hydra`` record, the last ``metrics.json``, mixed checkpoints. The
configs (conf/hydra/default.yaml) name run and sweep folders with ``${unique_now:<strftime
pattern>}`` instead: the time to the microsecond and a random suffix, so names still sort by time.
Like ``now`` its value is cached in the config, and Hydra copies that cache into every job's
config (``load_sweep_config``), so every job of a sweep, in any launcher's worker, sees one sweep
folder. Importing this module registers the resolver: the entry points import it before Hydra
composes, and worker processes import it when they unpickle the Hydra callback below.

``OwnRunFolder`` (a Hydra callback, configured under ``hydra.callbacks``) checks the folder before
Hydra writes anything into it: a folder given with ``hydra.run.dir`` or ``hydra.sweep.dir`` that
already holds another run's results is refused with one paragraph and exit code 2, its files
untouched. The one exception is train.py continuing a run in its own folder (``ckpt_path`` inside
that folder).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cifarlab.errors import CifarlabError

RESOLVER = "unique_now"
# what a run leaves in its folder (train, eval, predict, lr_find); Hydra's own record is added
# where this process is the only one writing it (see results_in)
RESULTS = (
    "metrics.json",
    "checkpoints",
    "predictions.csv",
    "predictions.json",
    "lr_find.json",
    "provenance.json",
)
SWEEP_RECORD = "multirun.yaml"
# the environment variables Lightning reads a process's rank from (rank_zero_only.rank)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def unique_now(pattern: str) -> str:
    """``datetime.now()`` in ``pattern`` and 4 random hex digits: unique even for processes that
    start in the same microsecond, and sorted by time."""
    return f"{datetime.now().strftime(pattern)}_{secrets.token_hex(2)}"


if not OmegaConf.has_resolver(RESOLVER):
    OmegaConf.register_new_resolver(RESOLVER, unique_now, use_cache=True)


def launched_rank() -> int | None:
    """This process's rank when a launcher started it as one of several (Lightning's script
    launcher, SLURM, torchrun, LSF); None for a process started on its own."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def results_in(folder: Path, record_subdir: str | None, with_record: bool) -> list[str]:
    """The names in ``folder`` that belong to a run: its results, and Hydra's record
    (``record_subdir``, ``.hydra``) when ``with_record``."""
    names = [*RESULTS, *([record_subdir] if with_record and record_subdir else [])]
    return [name for name in names if (folder / name).exists()]


def _inside(path: str | None, folder: Path) -> bool:
    return bool(path) and Path(path).resolve().is_relative_to(folder.resolve())


def resume_folder(
    ckpt_path: str, stored: dict[str, Any], fresh_folder: Callable[[], str]
) -> str | None:
    """The folder a run resumed from ``ckpt_path`` goes on in when the command does not say
    (``paths.output_dir``); None keeps the one its ``stored`` config names, which happens only
    when the checkpoint lies in it. A run folder that was copied or moved goes on where it now is
    (the checkpoint lies in that run's checkpoint folder, ``<run>/checkpoints/``, beside its
    ``.hydra`` record or ``metrics.json``); a checkpoint kept on its own goes on in this command's
    new folder, ``fresh_folder()``. So a resume never writes into a folder its checkpoint is not in,
    such as the run a copy was made from."""
    stored_folder = (stored.get("paths") or {}).get("output_dir")
    if not isinstance(stored_folder, str) or _inside(ckpt_path, Path(stored_folder)):
        return None
    ckpt_folder = Path(ckpt_path).resolve().parent
    for node in (stored.get("callbacks") or {}).values():
        dirpath = node.get("dirpath") if isinstance(node, dict) else None
        if not isinstance(dirpath, str) or not Path(dirpath).is_relative_to(stored_folder):
            continue
        inside = Path(dirpath).relative_to(stored_folder).parts  # ("checkpoints",)
        if inside and ckpt_folder.parts[-len(inside) :] == inside:
            run = ckpt_folder.parents[len(inside) - 1]
            if (run / ".hydra").is_dir() or (run / "metrics.json").is_file():
                return str(run)
    return fresh_folder()


def check_run_folder(
    run_dir: Path,
    *,
    record_subdir: str | None = ".hydra",
    ckpt_path: str | None = None,
    resumes: bool = False,
    rank: int | None = None,
) -> None:
    """Raises CifarlabError when ``run_dir`` holds another run, and claims it otherwise.

    ``resumes``: this entry point continues the run of ``ckpt_path`` in that run's own folder
    (train.py), so a ``ckpt_path`` inside ``run_dir`` may share it. ``rank``: see
    ``launched_rank``. A process started on its own claims the folder by creating Hydra's record
    folder, which fails if another process started there at the same moment. Under a launcher,
    ranks above 0 share their rank 0's folder by design and are not checked, and rank 0 cannot tell
    another run's ``.hydra`` from one its own ranks wrote, so there only the results count.
    """
    if rank is not None and rank > 0:
        return
    found = results_in(run_dir, record_subdir, with_record=rank is None)
    if resumes and _inside(ckpt_path, run_dir):
        return
    if not found and rank is None and record_subdir:
        try:
            (run_dir / record_subdir).mkdir(parents=True)
            return
        except FileExistsError:
            found = [record_subdir]  # another process started in this folder just now
    if found:
        last = run_dir / "checkpoints" / "last.ckpt"
        if resumes and last.is_file():
            other = (
                f", or continue that run from its checkpoint with train.py ckpt_path={last} "
                "(it goes on in its own folder)"
            )
        elif found == [record_subdir]:
            other = (
                ", or remove that folder if it is the record of a run of yours that stopped "
                "before it saved anything (e.g. at a mistake in its input)"
            )
        else:
            other = ""
        raise CifarlabError(
            f"hydra.run.dir={run_dir} already holds another run ({', '.join(found)}), and a run "
            "never writes into another's folder: its config record, metrics and checkpoints "
            "would be mixed with this one's. Give a folder of its own (another hydra.run.dir, "
            f"or leave hydra.run.dir out for a new time-named one){other}."
        )


def check_sweep_folder(sweep_dir: Path, record_subdir: str | None = ".hydra") -> None:
    """Raises CifarlabError when ``sweep_dir`` holds another sweep: its job folders 0, 1, ...
    would be written over by this sweep's jobs of the same numbers."""
    if not sweep_dir.is_dir():
        return
    found = [SWEEP_RECORD] if (sweep_dir / SWEEP_RECORD).exists() else []
    found += sorted(
        p.name for p in sweep_dir.iterdir() if p.is_dir() and results_in(p, record_subdir, True)
    )
    if found:
        shown = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
        raise CifarlabError(
            f"hydra.sweep.dir={sweep_dir} already holds another sweep ({shown}), and this "
            "sweep's jobs would write into its job folders. Give a folder of its own (another "
            "hydra.sweep.dir, or leave it out for a new time-named one). To finish an "
            f"interrupted sweep, run the commands its {sweep_dir / 'summary.md'} lists."
        )


def _refuse(err: CifarlabError) -> None:
    """Hydra turns a callback's exception into a warning and goes on, so the refusal ends the
    process here, before Hydra writes into the folder; the same paragraph and exit code as any
    other input mistake (cifarlab.run.entry.run_entry)."""
    print(f"\nerror: {err}\n", file=sys.stderr)
    sys.exit(2)


class OwnRunFolder(Callback):
    """Hydra callback: refuses a run or sweep folder that holds another run, before Hydra writes.

    Args:
        resuming_task: the ``task_name`` whose ``ckpt_path`` continues a run in that run's own
            folder (train.py's), which may therefore share it.
    """

    def __init__(self, resuming_task: str = "train") -> None:
        self.resuming_task = resuming_task

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # as run_job does, for ${hydra:...} in the dir
        try:
            check_run_folder(
                Path(str(config.hydra.run.dir)),
                record_subdir=config.hydra.output_subdir,
                ckpt_path=config.get("ckpt_path"),
                resumes=config.get("task_name") == self.resuming_task,
                rank=launched_rank(),
            )
        except CifarlabError as err:
            _refuse(err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if (launched_rank() or 0) > 0:
            return
        try:
            check_sweep_folder(Path(str(config.hydra.sweep.dir)), config.hydra.output_subdir)
        except CifarlabError as err:
            _refuse(err)
