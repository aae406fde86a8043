"""The README's code blocks, as the tests that run them as written read them."""

from __future__ import annotations

import re

from tests.conftest import ROOT

README = ROOT / "README.md"


def fenced_blocks(after_heading: str, language: str) -> list[str]:
    """The ``language`` code blocks of the README section that starts at ``after_heading``."""
    section = README.read_text().split(after_heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def commands(block: str) -> list[str]:
    """The command lines of a bash block, comments stripped."""
    return [line.split("  #")[0].strip() for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
