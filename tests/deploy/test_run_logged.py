"""``scripts/run.sh``'s first run is quiet: the trainer's chatter (TensorFlow's C++ log
lines) goes to a log file, the terminal gets a few lines saying what happens."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOGGED = REPO / "scripts" / "logged.sh"
NOISY = 'for i in $(seq 300); do echo "I0000 port.cc:153] oneDNN custom operations $i" >&2; done'


def run_logged(log: Path, command: str) -> subprocess.CompletedProcess[str]:
    script = (
        f'set -euo pipefail; source "{LOGGED}"; run_logged "{log}" "doing it" bash -c \'{command}\''
    )
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_chatty_step_shows_a_few_lines_and_logs_the_rest(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "assemble.log"
    result = run_logged(log, NOISY)

    assert result.returncode == 0, result.stderr
    shown = (result.stdout + result.stderr).splitlines()
    assert len(shown) <= 3, shown
    assert shown[0] == "run: doing it ..."
    assert str(log) in shown[1]
    assert "oneDNN" not in result.stdout + result.stderr
    logged = [line for line in log.read_text().splitlines() if line.startswith("I0000")]
    assert len(logged) == 300


def test_a_failing_step_shows_the_end_of_its_log_and_its_status(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    result = run_logged(log, NOISY + '; echo "error: the real reason" >&2; exit 3')

    assert result.returncode == 3
    assert "error: the real reason" in result.stderr
    assert "oneDNN custom operations 1 " not in result.stderr  # only the end
    assert str(log) in result.stderr


def test_run_sh_logs_every_trainer_step() -> None:
    lines = (REPO / "scripts" / "run.sh").read_text().splitlines()
    trainer_calls = [i for i, line in enumerate(lines) if "-m trainer" in line]
    assert trainer_calls
    for i in trainer_calls:
        assert any("run_logged" in line for line in lines[max(0, i - 3) : i + 1]), lines[i]
