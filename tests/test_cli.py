import gc
import os
import signal
import subprocess
import sys

import pytest

from retino.stage import catching_interrupts
from tests.conftest import ROOT


class _SlowFinaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while a finaliser runs


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_swallows_is_still_honoured_by_check():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup, else Python's default
    with catching_interrupts() as interrupts:
        _SlowFinaliser()  # the KeyboardInterrupt raised in __del__ is only printed
        gc.collect()
        assert interrupts.received
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    assert signal.getsignal(signal.SIGINT) is before  # restored


STAGES = sorted((ROOT / "stages").glob("*.py"))


@pytest.mark.parametrize("script", STAGES, ids=[s.stem for s in STAGES])
def test_every_stage_help_says_what_it_reads_and_the_choices(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "params.yaml" in result.stdout or "Reads no params" in result.stdout
    if script.stem in ("train", "evaluate"):
        assert "resnet18, resnet50" in result.stdout and "pretrained, scratch" in result.stdout
        assert "auto | cpu | cuda" in result.stdout


def test_summary_without_results_names_the_stage_to_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "retino", "summary", "--metrics-dir",
                             str(tmp_path), "--history-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "run `dvc repro evaluate@resnet18-pretrained`" in result.stderr
