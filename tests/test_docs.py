"""The documentation: README.md is a short front door, docs/ holds the manual, and nothing in it is a copy
kept by hand of something the code knows.

docs/cli.md and docs/configuration.md are generated (`python -m deid.pipeline.reference`) from the argparse
parser and the config dataclasses with pipeline.yaml's comments; every relative link of README.md and
docs/*.md must reach an existing file and, with `#anchor`, a heading of that file. No media, no models.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped (but `-` and `_`), spaces -> `-`."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and `_` (Unicode letters too, as GitHub)
    return text.replace(" ", "-")


def _prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced and not line.startswith("    "):  # an indented block is code too
            lines.append((number, re.sub(r"`[^`]*`", "``", line)))
    return lines


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file, as GitHub makes them (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """'file:line: target (why)' for every relative link in a Markdown file that does not resolve."""
    text = path.read_text(encoding="utf-8") if text is None else text
    problems = []
    for number, line in _prose(text):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, file: ...
                continue
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path.resolve()
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}: {target}"
            if not destination.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                problems.append(f"{where} (no heading with that anchor in {destination.name})")
    return problems


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_generated_references_are_current(monkeypatch):
    monkeypatch.delenv("DEID_PLUGINS", raising=False)  # the references document deid's own plugins
    from deid.pipeline.reference import CLI_DOC, CONFIGURATION_DOC, cli_markdown, configuration_markdown

    for path, text in ((CLI_DOC, cli_markdown()), (CONFIGURATION_DOC, configuration_markdown())):
        committed = (ROOT / path).read_text(encoding="utf-8") if (ROOT / path).exists() else ""
        assert committed == text, f"{path} is out of date: run `python -m deid.pipeline.reference`"


def test_the_generated_references_hold_nothing_of_this_machine():
    for path in ("docs/cli.md", "docs/configuration.md"):
        text = (ROOT / path).read_text(encoding="utf-8")
        for local in {str(ROOT), str(Path.home())} - {"/"}:
            assert local not in text, f"{path}: {local}"
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), f"{path}: a date"


def test_every_relative_link_of_the_readme_and_docs_resolves():
    problems = [problem for path in _markdown_files() for problem in broken_links(path)]
    assert not problems, "\n".join(problems)


def test_the_link_checker_reports_a_broken_link():
    """The check above can fail: a missing file and a missing anchor are both reported."""
    text = ("See [the stages](docs/stages.md), [nowhere](docs/no-such-page.md) and "
            "[a heading](docs/stages.md#no-such-heading); `[code](not-a-link.md)` is code.\n")
    problems = broken_links(ROOT / "README.md", text)
    assert len(problems) == 2, problems
    assert "docs/no-such-page.md (no such file)" in problems[0]
    assert "docs/stages.md#no-such-heading (no heading" in problems[1]


@pytest.mark.parametrize("heading, slug", [
    ("protect — `deid protect VIDEO... -o OUT_DIR`", "protect--deid-protect-video--o-out_dir"),
    ("The stage runner and `runs/<pair>/`", "the-stage-runner-and-runspair"),
    ("What `install.sh` does, and why it is not a bare `pip install .`",
     "what-installsh-does-and-why-it-is-not-a-bare-pip-install-"),
])
def test_github_slugs(heading, slug):
    assert github_slug(heading) == slug


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the manual belongs in docs/"
