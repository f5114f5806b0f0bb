"""The front door stays a front door and its links lead somewhere: README.md under 200 lines, and every
relative link in README.md, egs/README.md and docs/**/*.md names an existing file (and, into a markdown
file, an existing heading by GitHub's anchor rules)."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "egs" / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def unfenced_lines(path: Path):
    fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence:
            yield number, line


def anchors(path: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats get -1, -2."""
    out, seen = set(), {}
    for _, line in unfenced_lines(path):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def test_readme_is_a_front_door():
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    bad = []
    for number, line in unfenced_lines(page):
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            full = (page.parent / path).resolve() if path else page
            if not full.exists():
                bad.append(f"{number}: missing file {target}")
            elif anchor and full.suffix == ".md" and anchor not in anchors(full):
                bad.append(f"{number}: missing heading {target}")
    assert not bad, f"{page.name}: " + "; ".join(bad)
