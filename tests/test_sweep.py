"""cifarlab.sweep: a failed job's error is read through Hydra's public JobReturn API."""

from __future__ import annotations

import pytest
from hydra.core.utils import JobReturn, JobStatus

from cifarlab.sweep import job_error


def test_a_failed_jobs_error_comes_from_hydras_public_return_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = ValueError("optimizer.lr=-1 must be a positive number")
    failed = JobReturn(overrides=["optimizer.lr=-1"], status=JobStatus.FAILED)
    failed.return_value = error
    assert job_error(failed) is error
    assert capsys.readouterr().err == ""  # Hydra's own "Error executing job" line is held back
    completed = JobReturn(overrides=["optimizer.lr=0.1"], status=JobStatus.COMPLETED)
    completed.return_value = 0.9
    with pytest.raises(ValueError, match="did not fail"):
        job_error(completed)
