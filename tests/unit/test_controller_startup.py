"""``driftloop controller`` refuses to start on a bad spec, launcher or schedule: one line on
stderr, exit 2, no traceback, nothing bound (each case fails before uvicorn runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.cli import main

SPEC = Path(__file__).resolve().parents[2] / "examples" / "churn" / "spec.yaml"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DRIFTLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRIFTLOOP_CONTROLLER_TOKEN", "t")
    for name in ("DRIFTLOOP_CONTROLLER_SPECS", "DRIFTLOOP_CONTROLLER_SCHEDULE", "GITHUB_TOKEN",
                 "DRIFTLOOP_CONTROLLER_GITHUB_TOKEN", "DRIFTLOOP_CONTROLLER_GITHUB_REPO",
                 "DRIFTLOOP_CONTROLLER_LAUNCHER"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(["controller", "--port", "1", *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_a_missing_spec_file_stops_start_up(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "nosuch.yaml" in _refused(capsys, ["--spec", "nosuch.yaml"])


@pytest.mark.parametrize(("text", "says"), [
    ("model_name: [unclosed\n", "not valid YAML"),
    ("foo: 1\n", "model_name"),
    ("", "bad.yaml"),
])
def test_a_malformed_spec_file_stops_start_up(env: Path, capsys: pytest.CaptureFixture[str],
                                              text: str, says: str) -> None:
    (env / "bad.yaml").write_text(text)
    assert says in _refused(capsys, ["--spec", "bad.yaml"])


@pytest.mark.parametrize(("settings", "says"), [
    ({"DRIFTLOOP_CONTROLLER_LAUNCHER": "nosuch"}, "nosuch"),
    ({"DRIFTLOOP_CONTROLLER_LAUNCHER": "github"}, "DRIFTLOOP_CONTROLLER_GITHUB_REPO"),
    ({"DRIFTLOOP_CONTROLLER_LAUNCHER": "github", "DRIFTLOOP_CONTROLLER_GITHUB_REPO": "o/r"},
     "DRIFTLOOP_CONTROLLER_GITHUB_TOKEN"),
    ({"DRIFTLOOP_CONTROLLER_SCHEDULE": "61 * * * *"}, "DRIFTLOOP_CONTROLLER_SCHEDULE"),
    ({"DRIFTLOOP_CONTROLLER_SCHEDULE": "every day"}, "expected 5 fields"),
    ({"DRIFTLOOP_CONTROLLER_SCHEDULE": "0 0 * * funday"}, "DRIFTLOOP_CONTROLLER_SCHEDULE"),
])
def test_bad_settings_stop_start_up(env: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str],
                                    says: str) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert says in _refused(capsys, ["--spec", str(SPEC)])
