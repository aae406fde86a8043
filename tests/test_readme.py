"""The README as a newcomer uses it: a landing page of reasonable length whose links all
lead somewhere, whose commands and lab snippet run as written in a built project, and
docs that describe the software and its measurements, not the project's history."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.dvc_project import repo_env, run
from tests.readme import README, commands, fenced_blocks

DOCS = [README, ROOT / "CONTRIBUTING.md", ROOT / "ARCHITECTURE.md",
        *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# words about how the project changed, which mean nothing to a reader of the software
HISTORY = ("since reverted", "no longer", "this round", "the lent machine's own",
           "on this machine", "this machine's", "it used to", "before these params existed",
           "(was ")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub makes of a Markdown file's headings."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
        slugs.add(slug.replace(" ", "-"))
    return slugs


def test_the_readme_is_a_landing_page_that_opens_with_the_two_commands():
    text = README.read_text()
    assert len(text) <= 15_500, len(text)
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    install, tests = commands(first)
    assert install.endswith("&& dvc repro") and "torch==2.14.1 torchvision==0.29.1" in install
    assert tests.endswith("python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-m pytest -q" in ci.splitlines()[-1]  # CI runs the README's test command


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_every_link_of_the_docs_leads_to_a_file_and_heading_that_exist(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: {target}"


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_the_docs_describe_the_software_not_its_history(page):
    text = page.read_text().lower()
    found = [phrase for phrase in HISTORY if phrase in text]
    assert not found, f"{page.name}: {found}"


# --- the commands, as written, in a built project (the daily ones: test_experiments) ----

def test_the_lab_snippet_runs_as_written(repo):
    snippet = fenced_blocks("## The lab's code", "python")[0]
    result = subprocess.run(["python", "-c", snippet], cwd=repo, capture_output=True,
                            text=True, env=repo_env(repo), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^\(5, 5\) test accuracy \d+\.\d %$", result.stdout, flags=re.M)


def test_predict_runs_as_written(repo):
    line = commands(fenced_blocks("## Grade new photos", "bash")[0])[0]
    photos = repo / "photos"
    photos.mkdir(exist_ok=True)
    for source in sorted((repo / "data" / "synthetic" / "data").glob("*.jpeg"))[:3]:
        (photos / source.name).write_bytes(source.read_bytes())
    output = run(repo, *line.split())
    assert "graded 3 photo(s), 0 could not be read" in output
    assert len((repo / "out" / "predictions.csv").read_text().splitlines()) == 4
    assert len(list((repo / "out" / "explain").glob("*.png"))) == 3
