"""External validation through the real dvc CLI: the tiny pipeline trained on synthetic
photos, then scored on an APTOS-layout folder as an experiment, which reruns the
external stages and compare and never a train stage."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests import public_sets
from tests.dvc_project import CODES, RUNS, back_to_the_commit, ran_stages, run, widths

pytestmark = pytest.mark.slow

EXTERNAL_STAGES = {"downscale-external@aptos", *(f"evaluate-external@{r}-aptos" for r in RUNS)}


def test_no_external_source_adds_no_stage(repo):
    stages = run(repo, "dvc", "stage", "list")
    assert "external" not in stages and "compare" in stages


COPIES = 3  # training photos saved again under APTOS ids, among the external photos


def add_training_copies(repo, folder) -> list[str]:
    """Three photos of the synthetic training data, saved again as PNG under new APTOS
    ids and listed in train.csv: what a renamed copy of a set looks like."""
    train = (repo / "data" / "synthetic" / "train_img.csv").read_text().split()[:COPIES]
    ids = [public_sets.aptos_id(1000 + index) for index in range(COPIES)]
    for name, new in zip(train, ids):
        with Image.open(repo / "data" / "synthetic" / "data" / f"{name}.jpeg") as photo:
            photo.save(folder / "train_images" / f"{new}.png")
    with (folder / "train.csv").open("a") as labels:
        labels.writelines(f"{new},0\n" for new in ids)
    return ids


@pytest.fixture(scope="module")
def external_run(repo):
    """``dvc exp run -S 'external.source=[aptos]'`` on an APTOS-layout folder of 40
    photos and 3 renamed copies of training photos: its output, and the workspace it
    leaves (then back to the commit)."""
    public_sets.write_aptos(repo / "data" / "aptos", count=40)
    add_training_copies(repo, repo / "data" / "aptos")
    back_to_the_commit(repo)
    bare = run(repo, "dvc", "exp", "run", "-S", "external.source=aptos", ok=False)
    run(repo, "git", "checkout", "HEAD", "--", "params.yaml")
    output = run(repo, "dvc", "exp", "run", "-S", "external.source=[aptos]")
    yield bare, output
    back_to_the_commit(repo)


def test_a_bare_source_name_stops_dvc_before_any_stage_and_says_it_wants_a_list(external_run):
    bare, _ = external_run
    assert "failed to resolve 'stages.downscale-external.foreach'" in bare
    assert "expected list/dictionary, got str" in bare and "Running stage" not in bare


def test_an_external_experiment_reruns_only_the_external_stages_and_compare(external_run):
    _, output = external_run
    assert ran_stages(output) == {"check-params", "compare", *EXTERNAL_STAGES}
    assert "external set aptos (data/aptos): 43 images (every gradable image) at 32 px" in output
    assert "3 of the 43 photos of aptos are photos of the training data (0 by name, 3 by " \
        "content" in " ".join(output.split())


def test_each_model_is_scored_on_every_image_at_its_own_operating_points(repo, external_run):
    for name in RUNS:
        inside = json.loads((repo / "metrics" / f"{name}.json").read_text())
        outside = json.loads((repo / "metrics" / "external" / "aptos" / f"{name}.json")
                             .read_text())
        assert outside["source"] == "aptos" and outside["split"] == "all"
        # the 3 copies of training photos are left out of every figure, and counted
        assert outside["test_images"] == 40 and outside["resampled"] == "images"
        assert sum(map(sum, outside["confusion_counts"])) == 40
        shared = outside["shared_with_training"]
        assert (shared["images"], shared["of"], shared["by_content"]) == (COPIES, 43, COPIES)
        assert set(outside["ci95"]) == set(inside["ci95"])
        # fitted on the model's validation split, never on the external set
        assert outside["cuts"] == inside["cuts"]
        assert {k: p["threshold"] for k, p in outside["operating_points"].items()} == \
            {k: p["threshold"] for k, p in inside["operating_points"].items()}
        assert "test_patient_leakage_percent" not in outside


def test_dvc_shows_the_external_qwk_beside_the_in_domain_one_in_200_columns(repo,
                                                                            external_run):
    compared = json.loads((repo / "metrics" / "compare.json").read_text())
    assert list(compared) == list(CODES)
    assert all(list(figures) == ["qwk", "qwk_x", "qwk_x_ci"] for figures in compared.values())
    shown = run(repo, "dvc", "metrics", "show")
    assert max(widths(shown)) <= 200 and "r18p.qwk_x_ci" in shown and "r50s.qwk_x" in shown
    table = run(repo, "dvc", "exp", "show", "--no-pager", "--drop", ".*", "--keep",
                "Experiment|r18p.qwk.*", columns=300)
    header = next(line for line in table.splitlines() if "Experiment" in line)
    # then the commit's own r18p.qwk_ci, which this experiment moved out
    assert header.split()[1:4] == ["r18p.qwk", "r18p.qwk_x", "r18p.qwk_x_ci"]


def test_summary_and_cards_set_each_model_on_the_external_set_beside_its_own(repo,
                                                                           external_run):
    summary = run(repo, "python", "-m", "retino", "summary")
    assert "external set aptos, every gradable image: 40 images" in summary
    rows = [line for line in summary.splitlines() if line.startswith("│ resnet18-pretrained")]
    assert "in-domain QWK" in summary and len(rows) == 2
    card = (repo / "metrics" / "resnet18-pretrained.md").read_text()
    assert "## External validation" in card and "Tested on `aptos`" in card
    assert "; nothing left out." in card
    assert "3 of the 43 photos of aptos are photos of the training data" in card
    assert "3 of the 43 photos of aptos are photos of the training data" in \
        " ".join(summary.split())


def test_back_at_the_commit_only_the_left_over_reports_rerun_compare(repo, external_run):
    """The experiment's reports stay in metrics/external/aptos/ (untracked at the commit):
    while they are there, compare's folder dependency differs and compare alone reruns,
    to the same outputs; once they are removed, nothing reruns."""
    back_to_the_commit(repo)
    assert ran_stages(run(repo, "dvc", "repro")) == {"compare"}
    assert run(repo, "git", "status", "--porcelain", "metrics/compare.json") == ""
    compared = json.loads((repo / "metrics" / "compare.json").read_text())
    assert list(compared["r18p"]) == ["qwk", "qwk_ci", "acc"]
    run(repo, "git", "clean", "-fdq", "metrics/external")
    back_to_the_commit(repo)
    assert ran_stages(run(repo, "dvc", "repro")) == set()
