"""CI runs exactly what the README tells a new user to type."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README must open with a bash block of commands"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_setup_and_test_commands():
    cmds = readme_commands()
    assert cmds[0] == "bash scripts/setup.sh"
    assert "pytest" in cmds[1]


def test_ci_runs_readme_commands_verbatim():
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    for cmd in readme_commands()[:2]:
        assert cmd in ci, f"{cmd!r} missing from .ci/run"


def test_setup_pins_cpu_torch_and_never_torchvision():
    setup = (ROOT / "scripts/setup.sh").read_text()
    assert "torch==2.13.0" in setup
    install_lines = [l for l in setup.splitlines() if "pip" in l and "install" in l and "uninstall" not in l]
    assert not any("torchvision" in l for l in install_lines)
    assert "torchvision" not in (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]
