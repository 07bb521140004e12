"""The reference files made from the code (config/*.yaml, ...) are what the code makes now."""

from dares_ros.tools.reference import COMMAND, ROOT, reference_files


def test_reference_files_are_the_ones_the_code_makes():
    stale = [str(path) for path, text in reference_files().items()
             if not (ROOT / path).is_file() or (ROOT / path).read_text() != text]
    assert not stale, f"{', '.join(stale)} differ from what the code makes: run `{COMMAND}` and commit them"


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    import re

    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.splitlines() if line.startswith("#")}


def test_every_link_of_the_docs_leads_somewhere():
    """Relative links of README.md and docs/*.md name files that exist, and headings that exist in them."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", page.read_text()):
            if target.startswith("http"):
                continue
            path = (page.parent / target).resolve() if target else page
            if not path.exists() or (anchor and path.suffix == ".md" and anchor not in _anchors(path.read_text())):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert not broken, broken
