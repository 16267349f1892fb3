"""How much wall time a pruner saves: two studies of one search, pruned and not, side by side.

Reads two Optuna storages written by the same ``train.py hparams_search=...`` command, one with
a pruner (``hydra/sweeper/pruner=median``) and one without (``hydra/sweeper/pruner=none``), and
prints markdown tables for docs/results.md: after every ``--every`` trials, the elapsed time of
each study, the share the pruner saved, and each study's best trial so far; with ``--trials``,
every trial of both. Elapsed time after n trials runs from the start of trial 0 to the end of
trial n-1 as the storage recorded them, so each worker's Python start-up (a few seconds before
its first trial) is not in it::

    uv run python benchmarks/pruning_savings.py sqlite:///median.db sqlite:///none.db \
        --study lr_width --every 16 --trials
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState


def load_trials(storage: str, study: str) -> list[FrozenTrial]:
    """The study's finished trials in number order; a study with a trial still running is refused,
    since its elapsed times would be short."""
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    running = [t.number for t in trials if not t.state.is_finished()]
    if running:
        raise SystemExit(f"{storage}: trials {running} have not finished; compare ended studies")
    return sorted(trials, key=lambda t: t.number)


def elapsed_s(trials: Sequence[FrozenTrial], n: int) -> float:
    return (trials[n - 1].datetime_complete - trials[0].datetime_start).total_seconds()


def best(trials: Sequence[FrozenTrial], maximize: bool) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    return (max if maximize else min)(complete, key=lambda t: t.value)


def describe(trial: FrozenTrial | None) -> str:
    if trial is None:
        return "none complete"
    test = trial.user_attrs.get("test/acc")
    test_text = "-" if test is None else f"{test:.4f}"
    params = ", ".join(f"{value:.3g}" for value in trial.params.values())
    return f"{trial.value:.4f} / {test_text} (trial {trial.number}: {params})"


def savings_table(
    pruned: Sequence[FrozenTrial], unpruned: Sequence[FrozenTrial], every: int, maximize: bool
) -> list[str]:
    counts = sorted({*range(every, min(len(pruned), len(unpruned)) + 1, every), len(pruned)})
    rows = [
        "| trials | pruned search | unpruned search | saved | complete / pruned | "
        "best value / its test/acc, pruned search | the same, unpruned search |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in counts:
        with_pruner, without = elapsed_s(pruned, n), elapsed_s(unpruned, n)
        states = [t.state for t in pruned[:n]]
        rows.append(
            f"| {n} | {with_pruner:,.0f} s | {without:,.0f} s | "
            f"**{1 - with_pruner / without:.1%}** | "
            f"{states.count(TrialState.COMPLETE)} / {states.count(TrialState.PRUNED)} | "
            f"{describe(best(pruned[:n], maximize))} | {describe(best(unpruned[:n], maximize))} |"
        )
    return rows


def trials_table(pruned: Sequence[FrozenTrial], unpruned: Sequence[FrozenTrial]) -> list[str]:
    """A row a trial number: the pruned search's trial, and the unpruned search's, whose
    parameters are shown again where they differ (once the two samplers saw different results)."""
    rows = [
        f"| trial | {', '.join(pruned[0].params)} | pruned search: status | epochs | value | s | "
        "unpruned search: parameters | value | test/acc | s |",
        "| --- " * 10 + "|",
    ]
    for with_pruner, without in zip(pruned, unpruned, strict=False):
        params = ", ".join(f"{value:.3g}" for value in with_pruner.params.values())
        own = ", ".join(f"{value:.3g}" for value in without.params.values())
        test = without.user_attrs.get("test/acc")
        rows.append(
            f"| {with_pruner.number} | {params} | {with_pruner.state.name.lower()} | "
            f"{with_pruner.user_attrs.get('epochs', '-')} | {with_pruner.value:.4f} | "
            f"{with_pruner.user_attrs.get('wall_time_s', 0):.0f} | "
            f"{'same' if own == params else own} | {without.value:.4f} | "
            f"{'-' if test is None else f'{test:.4f}'} | "
            f"{without.user_attrs.get('wall_time_s', 0):.0f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pruned", help="storage URL of the study run with the pruner")
    parser.add_argument("unpruned", help="storage URL of the study run without one")
    parser.add_argument("--study", required=True, help="the study name in both storages")
    parser.add_argument("--every", type=int, default=16, help="a savings row every N trials")
    parser.add_argument("--trials", action="store_true", help="also every trial of both")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruned, unpruned = load_trials(args.pruned, args.study), load_trials(args.unpruned, args.study)
    maximize = (
        optuna.load_study(study_name=args.study, storage=args.pruned).direction
        == optuna.study.StudyDirection.MAXIMIZE
    )
    differ = [a.number for a, b in zip(pruned, unpruned, strict=False) if a.params != b.params]
    print("\n".join(savings_table(pruned, unpruned, args.every, maximize)))
    print(f"\nTrials whose parameters differ between the two studies: {differ or 'none'}.")
    if args.trials:
        print("\n" + "\n".join(trials_table(pruned, unpruned)))


if __name__ == "__main__":
    main()
