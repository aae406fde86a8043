"""Runs of several revisions side by side: the lab report's "Result Comparison" across
experiments, as one PNG (``retino compare-runs``), with no HTML page to open.

A revision is a git commit, branch or tag, the name of a DVC experiment (``dvc exp
show`` lists them; DVC keeps each as a git ref under ``refs/exps``), or ``workspace``,
the files on disk. Each revision's learning histories (``plots/history/*.csv``), test
metrics (``metrics/<run>.json``) and ``params.yaml`` are read with git; each revision is
labelled with the params it changes against the first one (``train.weighted_loss=true``).
"""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from retino.errors import DataError
from retino.params import ARCHS, INITS, run_name
from retino.report.card import flattened, yaml_text
from retino.report.figures import MODEL_COLOURS, plt, save_figure

WORKSPACE = "workspace"
LINE_STYLES = ("-", "--", ":", "-.")  # one per revision, in the order given
HATCHES = ("", "//", "..", "xx")
LOG_SCALE_RANGE = 100  # the losses' largest / smallest above which their axis is log


@dataclass(frozen=True)
class RunsAt:
    """The four models' histories and test reports at one revision."""

    revision: str
    params: dict
    histories: dict[str, pd.DataFrame]
    reports: dict[str, dict]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True)


def git_ref(revision: str) -> str | None:
    """What git calls ``revision`` (None for the workspace): a DVC experiment's name
    becomes its ref under refs/exps; anything else must be a revision git knows."""
    if revision == WORKSPACE:
        return None
    refs = _git("for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    experiments = [ref for ref in refs if ref.rsplit("/", 1)[-1] == revision]
    if experiments:
        return experiments[0]
    if _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").returncode:
        raise DataError(f"{revision!r}: neither a git revision nor a DVC experiment of this "
                        f"repository (dvc exp show lists them), nor {WORKSPACE!r}")
    return revision


def read_at(revision: str, path: str) -> str:
    """The text of ``path`` at ``revision``; a missing file names both."""
    ref = git_ref(revision)
    if ref is None:
        if not Path(path).is_file():
            raise DataError(f"{path}: not in the workspace; run `dvc repro` first")
        return Path(path).read_text(encoding="utf-8")
    shown = _git("show", f"{ref}:{path}")
    if shown.returncode:
        raise DataError(f"{path}: not found at {revision} (was the pipeline run and its "
                        "results committed there?)")
    return shown.stdout


def runs_at(revision: str) -> RunsAt:
    """The four models' histories and reports, and the params, at ``revision``."""
    from ruamel.yaml import YAML

    histories, reports = {}, {}
    for arch in ARCHS:
        for init in INITS:
            name = run_name(arch, init)
            histories[name] = pd.read_csv(io.StringIO(read_at(revision,
                                                              f"plots/history/{name}.csv")))
            reports[name] = json.loads(read_at(revision, f"metrics/{name}.json"))
    params = YAML(typ="safe").load(read_at(revision, "params.yaml"))
    return RunsAt(revision, params, histories, reports)


def revision_label(runs: RunsAt, first: RunsAt) -> str:
    """``workspace: train.weighted_loss=true``: the revision and the params it changes
    against the first revision."""
    mine, theirs = flattened(runs.params), flattened(first.params)
    changed = [f"{key}={yaml_text(mine.get(key))}" for key in sorted(set(mine) | set(theirs))
               if mine.get(key) != theirs.get(key)]
    if runs is first or not changed:
        return runs.revision if runs is first else f"{runs.revision}: same params"
    return f"{runs.revision}: {', '.join(changed)}"


def compare_runs(revisions: list[str], out: str | Path) -> None:
    """Write the PNG of ``revisions`` (two or more, at most four) to ``out``."""
    if not 2 <= len(revisions) <= len(LINE_STYLES):
        raise DataError(f"compare-runs takes 2 to {len(LINE_STYLES)} revisions, got "
                        f"{len(revisions)}")
    runs = [runs_at(revision) for revision in revisions]
    labels = [revision_label(r, runs[0]) for r in runs]
    figure, axes = plt.subplots(len(ARCHS), 3, figsize=(17, 5.2 * len(ARCHS)),
                                gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    for row, arch in enumerate(ARCHS):
        _curves(axes[row, 0], axes[row, 1], arch, runs, labels)
        _bars(axes[row, 2], arch, runs)
    figure.suptitle("Result comparison across revisions: " + "  |  ".join(
        f"{style} {label}" for style, label in zip(("solid", "dashed", "dotted", "dash-dot"),
                                                   labels)), fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    save_figure(figure, out)


def _curves(accuracy: plt.Axes, loss: plt.Axes, arch: str, runs: list[RunsAt],
            labels: list[str]) -> None:
    """Test accuracy and training loss per epoch: colour by model, line by revision."""
    for style, (runs_of, label) in zip(LINE_STYLES, zip(runs, labels)):
        for init in INITS:
            name = run_name(arch, init)
            history = runs_of.histories[name]
            shown = f"{init}, {label}"
            accuracy.plot(history["epoch"], history["acc_test"], style, marker="o",
                          markersize=3, color=MODEL_COLOURS[name], label=shown)
            loss.plot(history["epoch"], history["train_loss"], style, marker="o",
                      markersize=3, color=MODEL_COLOURS[name], label=shown)
    baseline = runs[0].reports[run_name(arch, INITS[0])]["baseline_acc"]
    accuracy.axhline(baseline, color="grey", linestyle="--", linewidth=1,
                     label=f"majority baseline {baseline:.1f} %")
    losses = [value for r in runs for init in INITS
              for value in r.histories[run_name(arch, init)]["train_loss"] if value > 0]
    if losses and max(losses) / min(losses) > LOG_SCALE_RANGE:
        loss.set_yscale("log")  # a diverging run would flatten every other curve
    for axes, what in ((accuracy, "test accuracy (%)"), (loss, "training loss")):
        axes.set_title(f"{arch}: {what} per epoch", fontsize=10)
        axes.set_xlabel("epoch")
        axes.set_ylabel(what)
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
    accuracy.legend(fontsize=7, loc="best")


def _bars(axes: plt.Axes, arch: str, runs: list[RunsAt]) -> None:
    """Each model's test accuracy with its 95 % interval, per revision, its QWK above."""
    width = 0.8 / len(runs)
    for index, (runs_of, hatch) in enumerate(zip(runs, HATCHES)):
        for position, init in enumerate(INITS):
            report = runs_of.reports[run_name(arch, init)]
            low, high = report["ci95"]["acc"]
            x = position + (index - (len(runs) - 1) / 2) * width
            axes.bar(x, report["acc"], width, color=MODEL_COLOURS[run_name(arch, init)],
                     hatch=hatch, edgecolor="black", linewidth=0.6,
                     yerr=[[report["acc"] - low], [high - report["acc"]]], capsize=3)
            qwk = "n/a" if report["qwk"] is None else f"{report['qwk']:.2f}"
            axes.text(x, high + 1, f"QWK\n{qwk}", ha="center", va="bottom", fontsize=7)
    axes.set_xticks(range(len(INITS)), INITS)
    axes.set_ylabel("test accuracy (%) at the epoch chosen on validation")
    axes.set_ylim(0, 112)
    axes.set_title(f"{arch}: test accuracy [95 % interval] and QWK; bars left to right: "
                   + ", ".join(r.revision for r in runs), fontsize=9)
    axes.grid(axis="y", alpha=0.3)
