"""The README is the user's manual and docs/ its details: the two commands, the links between and within the pages
(files and sections) and the repository files they name hold.

(Why the links: a section cut out of a page shows only through the links that point at it.)
"""

import re
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).parents[2]
README = (REPO / "README.md").read_text()
TOKENS = MarkdownIt("commonmark").enable("table").parse(README)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def github_anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation but `-` and `_` dropped, spaces as `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    return [tokens[i + 1].content for i, token in enumerate(tokens) if token.type == "heading_open"]


def anchors(page: Path) -> set[str]:
    return {github_anchor(heading) for heading in headings(page.read_text())}


def named_files(text: str) -> set[str]:
    """Repository paths a page names in backticks (`selfalign/io/inputs.py`), relative to the repository's root."""
    tops = ("benchmarks", "docs", "notebooks", "recipes", "selfalign", "space", "tests")
    return set(re.findall(rf"`((?:{'|'.join(tops)})/[\w./-]+\.\w+)`", text))


def broken_links(page: Path) -> list[str]:
    """Relative links of a page ([text](file), [text](file#section), [text](#section)) whose file or section is
    missing."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not in this repository
            continue
        path, _, section = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (section and (linked.suffix != ".md" or section not in anchors(linked))):
            broken.append(f"{page.relative_to(REPO)}: {target}")
    return broken


def test_the_first_lines_are_the_two_fresh_machine_commands() -> None:
    first = TOKENS[0]
    assert first.type == "fence" and first.info == "bash"
    commands = [line.split("#")[0].strip() for line in first.content.splitlines()]
    assert commands == ["make demo", "make test"]


def test_no_two_headings_of_a_page_share_an_anchor() -> None:
    for page in PAGES:
        names = headings(page.read_text())
        assert len({github_anchor(name) for name in names}) == len(names), page.name


def test_every_link_to_a_section_finds_it() -> None:
    links = set(re.findall(r"\]\(#([^)\s]+)\)", README))
    assert links and sorted(links - anchors(REPO / "README.md")) == []


def test_every_link_of_the_readme_and_the_docs_finds_its_file_and_section() -> None:
    assert len(PAGES) > 5  # the README and the docs pages it links to
    between_pages = [t for page in PAGES for t in re.findall(r"\]\(([^)#\s]*\.md#[^)\s]+)\)", page.read_text())]
    assert len(between_pages) > 20  # the pattern still finds the links between pages and sections
    assert [link for page in PAGES for link in broken_links(page)] == []


def test_every_repository_file_it_names_exists() -> None:
    named = named_files(README)
    assert len(named) > 10  # the pattern still finds the paths the README names
    assert sorted(path for path in named if not (REPO / path).exists()) == []


def test_every_repository_file_the_docs_name_exists() -> None:
    named = {path for page in PAGES[1:] for path in named_files(page.read_text())}
    assert len(named) > 30  # the pattern still finds the paths the docs name
    assert sorted(path for path in named if not (REPO / path).exists()) == []
