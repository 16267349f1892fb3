"""The README is a front page whose links reach the docs/ pages, and every link resolves.

Text moves between the README and docs/ pages; a link or #anchor left pointing at text that moved
is found here rather than by a reader.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
FRONT_PAGE_MAX_LINES = 200


def prose(text: str) -> str:
    """The text outside fenced code blocks, where links are links."""
    kept, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return "\n".join(kept)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than - and _ dropped, spaces to
    -, a repeated anchor numbered -1, -2, ..."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in re.finditer(r"^#{1,6} (.+)$", prose(page.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def link_targets(page: Path) -> list[str]:
    """The relative links of a page (https:, mailto: and the like left out)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text()))
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in link_targets(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    return broken


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = {
        str(page.relative_to(ROOT)): links
        for page in [README, *PAGES]
        if (links := broken_links(page))
    }
    assert not broken, broken


def test_the_readme_is_a_front_page_from_which_every_docs_page_is_reached() -> None:
    assert len(README.read_text().splitlines()) <= FRONT_PAGE_MAX_LINES
    reached, todo = {README}, [README]
    while todo:
        page = todo.pop()
        for target in link_targets(page):
            dest = (page.parent / target.partition("#")[0]).resolve()
            if dest.suffix == ".md" and dest.exists() and dest not in reached:
                reached.add(dest)
                todo.append(dest)
    unreached = sorted(page.name for page in PAGES if page.resolve() not in reached)
    assert not unreached, f"docs pages no link leads to from the README: {unreached}"


def test_the_readme_gives_the_test_command_ci_runs() -> None:
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command.startswith("uv run")
    assert ci_command in README.read_text()
