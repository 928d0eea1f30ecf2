"""``python -m neural_avatar``: every verb answers --help, unknown verbs fail, the package runs
as a module in the venv."""
import subprocess
import sys

import pytest

from neural_avatar.__main__ import VERBS, main


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_top_level_help_and_unknown_verb(capsys):
    assert main([]) == 0 and "verbs:" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2


def test_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "neural_avatar", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "import-motion" in out.stdout
