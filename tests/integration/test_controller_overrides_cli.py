"""``driftloop promote / rollback / retrain`` against a live controller (uvicorn on 127.0.0.1,
the reconcile loop running, InMemoryRegistry): a refusal is one line on stderr and exit 1, a
connection error exit 2, an accepted override prints the id of the cycle it created."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from driftloop.cli import main
from driftloop.processes import free_port
from kernel.spec import DatasetSpec
from tests.unit.controller_harness import TOKEN, World, add_version, make_world


@pytest.fixture
def live(tmp_path: Path, churn_spec: DatasetSpec, home: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    world = make_world(tmp_path, churn_spec, controller_tick_seconds=0.2)
    v1, _ = add_version(world.registry), add_version(world.registry)
    world.registry.set_alias("churn", "champion", v1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(world.app(run_loop=True, manual_wait_seconds=20),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while thread.is_alive() and not server.started:
        started.wait(0.01)
    assert server.started
    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_TOKEN", TOKEN)
    try:
        yield world
    finally:
        server.should_exit = True
        thread.join(30)
        world.store.close()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


@pytest.mark.parametrize(("args", "says"), [
    (["promote", "99", "--reason", "r"], "churn v99 not found"),
    (["promote", "1", "--reason", "r"], "v1 is already champion"),
    (["rollback", "--reason", "r"], "no @previous version"),
    (["promote", "2", "--reason", "r", "--model", "nope"], "model 'nope' is not managed here"),
    (["rollback", "--reason", "r", "--model", "nope"], "model 'nope' is not managed here"),
    (["retrain", "--reason", "r", "--model", "nope"], "model 'nope' is not managed here"),
])
def test_a_refusal_is_one_line_and_exit_1(live: World, capsys: pytest.CaptureFixture[str],
                                          args: list[str], says: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 1 and out == []
    (line,) = err
    assert says in line and line.startswith("refused: controller answered 4")
    assert live.registry.aliases("churn") == {"champion": 1}
    assert live.registry.decisions == [] and live.store.triggers_of() == []


def decided(world: World, count: int) -> list:
    """The registry's decisions once there are ``count`` (the loop records a decision just
    after it marks the trigger taken, so the answer can come a moment before it)."""
    pause = threading.Event()
    for _ in range(3000):
        if len(world.registry.decisions) >= count:
            break
        pause.wait(0.01)
    return world.registry.decisions


def test_an_accepted_override_prints_its_own_cycle(live: World,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "retrain", "--reason", "drift")
    assert code == 0 and out[0].startswith("retrain churn: started (cycle churn-")
    retrain_cycle = out[0].split("(cycle ")[1].rstrip(")")
    code, out, err = run(capsys, "promote", "2", "--reason", "hotfix")
    assert (code, err) == (0, [])
    (decision,) = decided(live, 1)
    assert decision.cycle_id != retrain_cycle
    assert out == [f"promote churn: started (cycle {decision.cycle_id})"]
    assert decision.kind == "manual_promote" and live.registry.aliases("churn")["champion"] == 2
    code, out, _ = run(capsys, "rollback", "--reason", "back")
    assert code == 0
    assert out == [f"rollback churn: started (cycle {decided(live, 2)[-1].cycle_id})"]
    assert live.registry.aliases("churn") == {"champion": 1, "previous": 2}


def test_an_unreachable_controller_is_exit_2(home: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_URL", f"http://127.0.0.1:{free_port()}")
    code, out, err = run(capsys, "promote", "2", "--reason", "r")
    assert code == 2 and out == []
    (line,) = err
    assert "controller not reachable" in line
