import subprocess
import sys

from m2po_lab.cli import main


def test_help_runs_as_console_script():
    out = subprocess.run([sys.executable, "-m", "m2po_lab.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "m2po-lab" in out.stdout


def test_losses_lists_the_registry(capsys):
    assert main(["losses"]) == 0
    text = capsys.readouterr().out
    for name in ("grpo", "m2po", "m2po_released", "gspo", "cispo", "tis", "mis", "no_tr"):
        assert name in text
