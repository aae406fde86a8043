import argparse
import gc
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

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


def _fundus_photo(path):
    """A wide photo of a reddish disc on black, as a fundus camera takes it."""
    image = Image.new("RGB", (300, 240))
    ImageDraw.Draw(image).ellipse((40, 10, 260, 230), fill=(170, 80, 40))
    ImageDraw.Draw(image).line((80, 120, 220, 60), fill=(90, 30, 20), width=8)  # a 'vessel'
    image.save(path)
    return path


def test_preview_augment_draws_a_grid_of_what_the_network_trains_on(tmp_path, capsys):
    from retino.cli import main

    photo, out = _fundus_photo(tmp_path / "eye.png"), tmp_path / "grid.png"
    main(["preview", "--augment", str(photo), "--size", "64", "--count", "5", "--out",
          str(out)])
    assert f"wrote {out}" in capsys.readouterr().out
    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert sheet.shape == (2 * (64 + 18 + 8), 4 * (64 + 8), 3)  # 6 panels in rows of 4
    panels = [sheet[18 + row * 90:18 + row * 90 + 64, col * 72:col * 72 + 64]
              for row in range(2) for col in range(4)][:6]
    assert all(not np.array_equal(panels[0], panel) for panel in panels[1:])
    assert all((panel[0, 0] == 0).all() for panel in panels)  # black corners stay black


def test_preview_refuses_a_count_outside_its_range(tmp_path, capsys):
    from retino.cli import main

    with pytest.raises(SystemExit):
        main(["preview", "--augment", str(tmp_path / "eye.png"), "--count", "0"])
    assert "--count: '0': must be an integer from 1 to 64" in capsys.readouterr().err


def test_retino_help_is_plain_text_and_every_argument_says_what_it_is():
    from retino.cli import parser

    main = parser()
    assert "``" not in main.format_help() and "`" not in main.description
    commands = next(a for a in main._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"retino {name} {action.option_strings or action.dest}"


@pytest.mark.parametrize("argv, message", [
    (["preview", "eye.png", "--size", "7"], "--size: '7': must be an integer from 32 to 2048"),
    (["predict", "--model", "m.pt", "photos", "--batch-size", "0"],
     "--batch-size: '0': must be an integer from 1 to 4096"),
    (["predict", "--model", "m.pt", "photos", "--workers", "-1"],
     "--workers: '-1': must be an integer from 0 to 256"),
    (["summary", "--format", "html"], "--format: invalid choice: 'html'")])
def test_a_value_no_command_can_use_is_refused_before_any_work(argv, message, capsys):
    from retino.cli import main

    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_captions_keep_their_spaces():
    # before: Pillow's default bitmap font drew "as downscaled" as "asdownscaled"
    from retino.data.photos import caption_font

    font = caption_font()
    assert font.getlength("as downscaled") > font.getlength("asdownscaled") + 2


def test_a_ctrl_c_in_any_stage_is_one_line_without_a_traceback(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from retino.stage import run_stage\n"
                      "def main():\n    raise KeyboardInterrupt\n"
                      "run_stage(main)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert " ".join(result.stderr.split()) == (
        "interrupted: stage.py stopped by Ctrl-C; its outputs are written whole or not at "
        "all, so none is half-written: run it again (`dvc repro`)")
