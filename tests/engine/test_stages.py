"""dsetlog.engine.stages: a stage's share of the 0-100 scale, how a run ended, and the bridge from the
pipeline's stage reports of today."""

from __future__ import annotations

import pytest

from dsetlog.engine.stages import Outcome, Phase, Stage


@pytest.mark.parametrize("stage, percent", [
    (Stage(Phase.TITLING, "Titling chunk 5 of 10", 5, 10), 5.0),
    (Stage(Phase.GENERATING, "Processing chunk 0 of 0", 0, 0), 10.0),
    (Stage(Phase.GENERATING, "Processing chunk 45 of 100", 45, 100), 10 + 70 * 0.45),
    (Stage(Phase.GENERATING, "Processing chunk 9 of 4", 9, 4), 80.0),  # never past its span
    (Stage(Phase.EXPORTING, "Exporting"), 97.0),
    (Stage(Phase.FINISHED, "Finished", 3, 3), 100.0),
    (Stage(Phase.WAITING, "Waiting for job job_1 to finish dataset d"), None),
    (Stage(Phase.CANCELLING, "Cancelling", 4, 10), None),
])
def test_a_stage_gives_its_place_on_the_scale(stage: Stage, percent: float | None) -> None:
    assert stage.percent() == (pytest.approx(percent) if percent is not None else None)


def test_every_outcome_explains_itself() -> None:
    assert {o.value for o in Outcome} == {"completed", "failed", "interrupted", "budget", "fatal"}
    assert Outcome("budget").explain() == "stopped: the budget was reached"
    assert "submit the job again" in Outcome.FATAL.explain()
