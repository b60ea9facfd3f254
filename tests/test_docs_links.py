"""Every relative link in the README, docs/ and results/README.md resolves: the file exists
and, for a link into a Markdown file, the heading it names does (GitHub's anchor rule:
lower case, punctuation but hyphens dropped, spaces to hyphens)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md')), REPO / 'results' / 'README.md']
LINK = re.compile(r'\]\(([^)\s]+)\)')


def anchors(page: Path) -> set[str]:
    headings = re.findall(r'^#+ (.*)$', page.read_text(), re.M)
    return {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-') for h in headings}


def test_the_anchor_rule():
    page = REPO / 'docs' / 'training.md'
    assert 'time-budget' in anchors(page)  # "## Time budget"


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for link in LINK.findall(page.read_text()):
        if re.match(r'[a-z]+:', link):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = link.partition('#')
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f'{link}: no such file')
        elif anchor and target.suffix == '.md' and anchor not in anchors(target):
            broken.append(f'{link}: no heading #{anchor} in {target.name}')
    assert not broken, f'{page.name}: ' + '; '.join(broken)


def test_readme_stays_short():
    assert len((REPO / 'README.md').read_text().splitlines()) <= 300
