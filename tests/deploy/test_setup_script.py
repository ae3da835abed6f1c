"""``scripts/setup.sh``: says what it does, shows pip's progress, and skips pip when the
environment already holds what pyproject.toml asks for (fakes stand in for python/pip)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fake_checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A checkout with the real setup.sh and pyproject.toml, and a ``python3`` that logs."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts/setup.sh", root / "scripts/setup.sh")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # python3 -m venv .venv makes a .venv/bin/python that logs its pip calls
    (bin_dir / "python3").write_text(
        "#!/bin/sh\n"
        f'echo "python3 $*" >> "{log}"\n'
        "mkdir -p .venv/bin\n"
        f'printf \'#!/bin/sh\\necho "venv-python $*" >> "{log}"\\necho Collecting numpy\\n\''
        " > .venv/bin/python\n"
        "chmod +x .venv/bin/python\n"
    )
    (bin_dir / "python3").chmod(0o755)
    return root, log


def run_setup(root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/setup.sh", "train,service"],
        cwd=root,
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_first_setup_says_it_takes_minutes_and_shows_pips_progress(tmp_path: Path) -> None:
    root, log = fake_checkout(tmp_path)

    result = run_setup(root, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "the first time takes a few minutes" in result.stdout
    assert "Collecting numpy" in result.stdout  # pip's own lines reach the user
    install = [line for line in log.read_text().splitlines() if ".[train,service]" in line]
    assert install, log.read_text()
    assert "--quiet" not in install[0]


def test_a_second_setup_with_the_same_pyproject_skips_pip(tmp_path: Path) -> None:
    root, log = fake_checkout(tmp_path)
    assert run_setup(root, tmp_path).returncode == 0
    log.unlink()

    again = run_setup(root, tmp_path)

    assert again.returncode == 0
    assert "nothing to install" in again.stdout
    assert not log.exists()

    # a changed pyproject.toml installs again
    (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text() + "\n# changed\n")
    assert run_setup(root, tmp_path).returncode == 0
    assert log.exists()
