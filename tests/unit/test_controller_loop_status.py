"""What the reconcile loop says about itself (``GET /status``, ``loop``): passes started, and
whether the last completed pass was quiet at the controller's instant. A pass that takes a
trigger, changes state or leaves training running is not quiet; what ``driftloop demo``
waits for before it moves its simulated clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.launcher import LaunchStatus
from kernel.spec import DatasetSpec
from tests.unit.controller_harness import make_world

T = datetime(2026, 1, 7, tzinfo=UTC)


def test_a_pass_is_quiet_only_when_nothing_happened_and_nothing_runs(
        tmp_path: Path, churn_spec: DatasetSpec) -> None:
    world = make_world(tmp_path, churn_spec)
    now = [T]
    c = world.controller
    c.clock = lambda: now[0]
    assert c.loop_status() == {"passes_started": 0, "last_pass": None}

    c.reconcile_once()                      # the first pass saves the model's first state
    assert c.last_pass is not None and (c.last_pass.seq, c.last_pass.quiet) == (1, False)
    c.reconcile_once()
    assert (c.last_pass.seq, c.last_pass.at, c.last_pass.quiet) == (2, T, True)

    now[0] = T + timedelta(hours=1)
    world.store.add_trigger(model="churn", source="manual", action="retrain", reason="test",
                            now=now[0])
    c.reconcile_once()                      # takes the trigger, launches training
    assert not c.last_pass.quiet and world.launcher.requests
    c.reconcile_once()                      # nothing changed, but the training still runs
    assert not c.last_pass.quiet and c.load("churn")[0].phase == "training"

    world.launcher.status = lambda cycle_id, attempt: LaunchStatus("exited", returncode=2)
    c.reconcile_once()                      # the training ended (failed): state changed
    assert not c.last_pass.quiet
    c.reconcile_once()
    assert c.last_pass.quiet and c.last_pass.at == T + timedelta(hours=1)

    model = c.status()["churn"]
    assert model["loop"] == {"passes_started": 6,
                             "last_pass": {"seq": 6, "at": T + timedelta(hours=1), "quiet": True}}
