"""The README's "Using it on your own data" recipe, run as written (issue 13).

The test reads the recipe's ``bash`` block from README.md and runs its commands one by one in
a fresh directory (the embedded default home ``./.driftloop``, no ``DRIFTLOOP_*`` or
``MLFLOW_*`` variables from the outside), with real processes on 127.0.0.1: ``driftloop
serve`` and ``driftloop controller`` in the background, the rest in the foreground. What the
test adds: free ports instead of 8000/8001, a shorter controller tick and evaluation timeout,
a wait for the cycle's decision before ``driftloop status``. No labelled traffic reaches the
log in the recipe, so the retrain learns from exactly the champion's data: the decision is
``no_change`` (a version registered, judged, not promoted). The last line, ``driftloop ui``
(interactive), is not run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx

from driftloop.processes import ProcessGroup, driftloop_command, free_port, wait_http, wait_until
from kernel.settings import CommonSettings
from registry import TAG_PREFIX as TAG
from registry import open_registry

ROOT = Path(__file__).resolve().parents[2]
EVALUATION_TIMEOUT = 20  # seconds instead of 72 h


def recipe() -> list[list[str]]:
    """The recipe's commands: continuation lines joined, comments dropped, split like a shell."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using it on your own data", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the recipe's bash block is gone"
    joined = block.group(1).replace("\\\n", " ")
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def fresh_env(ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DRIFTLOOP_", "MLFLOW_"))}
    env.update({
        "DRIFTLOOP_SERVING_PORT": str(ports["8000"]),
        "DRIFTLOOP_CONTROLLER_PORT": str(ports["8001"]),
        "DRIFTLOOP_CONTROLLER_URL": f"http://127.0.0.1:{ports['8001']}",
        "DRIFTLOOP_CONTROLLER_TICK_SECONDS": "0.5",
        "DRIFTLOOP_CONTROLLER_EVALUATE_EVERY_SECONDS": "0.5",
        "DRIFTLOOP_CONTROLLER_EVALUATION_TIMEOUT_SECONDS": str(EVALUATION_TIMEOUT),
        "DRIFTLOOP_SERVING_POLL_INTERVAL": "1",
    })
    return env


def on_free_ports(word: str, ports: dict[str, int]) -> str:
    return re.sub(r"127\.0\.0\.1:(8000|8001)\b", lambda m: f"127.0.0.1:{ports[m.group(1)]}", word)


def test_the_readme_recipe_retrains_and_ends_with_a_gate_decision(tmp_path: Path) -> None:
    work = tmp_path / "user"
    (work / "examples" / "churn").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "churn" / "spec.yaml", work / "examples" / "churn")
    ports = {"8000": free_port(), "8001": free_port()}
    env = fresh_env(ports)
    serving, controller = (f"http://127.0.0.1:{ports[p]}" for p in ("8000", "8001"))
    ran: list[str] = []
    outputs: dict[str, str] = {}
    with ProcessGroup(tmp_path / "logs") as group:
        for words in recipe():
            words = [on_free_ports(w, ports) for w in words]
            if words[0] == "export":
                env.update(dict(w.split("=", 1) for w in words[1:]))
                continue
            own = {}
            while "=" in words[0] and not words[0].startswith("-"):
                key, value = words.pop(0).split("=", 1)
                own[key] = value
            background = words[-1] == "&"
            args = words[:-1] if background else words
            assert args[0] == "driftloop", f"not a driftloop command: {args}"
            command = args[1]
            ran.append(command)
            if command == "ui":
                continue
            if command == "status":  # what an operator sees once the gate has decided
                wait_until(lambda: _decided(controller), timeout=EVALUATION_TIMEOUT + 180,
                           what="the cycle's decision", interval=0.5)
            if background:
                child = group.start(command, driftloop_command(*args[1:]),
                                    env={**env, **own}, cwd=work)
                wait_http((serving + "/readyz") if command == "serve" else
                          (controller + "/healthz"), timeout=120, child=child)
                continue
            done = subprocess.run(driftloop_command(*args[1:]), cwd=work, env={**env, **own},
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{shlex.join(args)}:\n{done.stdout}\n{done.stderr}"
            outputs[command] = done.stdout

        assert ran == ["generate", "train", "serve", "controller", "drift-check", "retrain",
                       "status", "ui"]
        assert "retrain churn: started (cycle " in outputs["retrain"]
        cycle_id = outputs["retrain"].split("(cycle ", 1)[1].split(")", 1)[0]
        info = httpx.get(controller + "/status", timeout=10).json()["churn"]
    assert "churn: cooldown" in outputs["status"]

    registry = open_registry(CommonSettings(home=work / ".driftloop"))
    [v2] = registry.find_versions("churn", {TAG + "cycle_id": cycle_id})
    assert v2.version == 2 and registry.aliases("churn")["champion"] == 1
    # it trained on the data the champion recorded: the recipe's own file
    assert v2.tags[TAG + "data_sources"] == f'["{(work / "data" / "churn.parquet").resolve()}"]'
    assert v2.tags[TAG + "decision"] == "no_change"
    assert v2.tags[TAG + "decision_cycle_id"] == cycle_id
    [decision] = [d for d in info["last_decisions"] if d["cycle_id"] == cycle_id]
    assert decision["outcome"] == "no_change" and decision["challenger_version"] == 2
    assert any("same data" in r for r in decision["reasons"]), decision
    runs = registry.list_decisions("churn")
    assert [(d.cycle_id, d.outcome) for d in runs] == [(cycle_id, "no_change")]


def _decided(controller: str) -> bool:
    info = httpx.get(controller + "/status", timeout=5).json()["churn"]
    return info["state"] in ("cooldown", "failed") and bool(info["last_decisions"])
