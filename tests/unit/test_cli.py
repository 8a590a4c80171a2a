from __future__ import annotations

import subprocess
import sys

import kubetune
from kubetune.cli import main


def test_version_command(capsys) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"kubetune {kubetune.__version__}"


def test_package_is_importable_as_kubetune_not_operator() -> None:
    import operator

    # The folder is operator/, but the standard library's operator module must stay untouched.
    assert hasattr(operator, "itemgetter")
    assert kubetune.__file__.endswith("operator/kubetune/__init__.py")


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "kubetune.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith("kubetune ")
