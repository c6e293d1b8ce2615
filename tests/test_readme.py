"""The README is the user's manual: its two commands, its links between sections and the files it names hold.

(A careless edit once cut six sections out of it, and only the links that pointed at them showed it.)
"""

import re
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).parents[1]
README = (REPO / "README.md").read_text()
TOKENS = MarkdownIt("commonmark").enable("table").parse(README)


def github_anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation but `-` and `_` dropped, spaces as `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_first_lines_are_the_two_fresh_machine_commands() -> None:
    first = TOKENS[0]
    assert first.type == "fence" and first.info == "bash"
    commands = [line.split("#")[0].strip() for line in first.content.splitlines()]
    assert commands == ["make demo", "make test"]


def test_every_link_to_a_section_finds_it() -> None:
    headings = [TOKENS[i + 1].content for i, token in enumerate(TOKENS) if token.type == "heading_open"]
    anchors = {github_anchor(heading) for heading in headings}
    assert len(anchors) == len(headings), "two headings share an anchor"
    links = set(re.findall(r"\]\(#([^)\s]+)\)", README))
    assert links and sorted(links - anchors) == []


def test_every_repository_file_it_names_exists() -> None:
    tops = ("benchmarks", "docs", "notebooks", "recipes", "selfalign", "space", "tests")
    named = set(re.findall(rf"`((?:{'|'.join(tops)})/[\w./-]+\.\w+)`", README))
    assert len(named) > 30  # the pattern still finds the paths the README names
    assert sorted(path for path in named if not (REPO / path).exists()) == []
