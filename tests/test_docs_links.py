"""Every docs/design.md heading that is cited exists: ``docs/design.md "Heading"`` (also wrapped over a line
break or a comment's ``#``, and lists ``"A", "B" and "C"``) in the code, configs, benchmarks, launch scripts,
examples and tests, and design.md's own ``see *Heading*`` cross-references."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
CITE = re.compile(r'design\.md\s*(?:#\s*)?((?:"[^"\n]+"(?:\s*(?:,|and|or)\s*(?:#\s*)?)?)+)')
QUOTED = re.compile(r'"([^"\n]+)"')
SEE = re.compile(r"\bsee \*([^*\n]+)\*")


def headings() -> set:
  return {line.lstrip("#").strip() for line in DESIGN.read_text().splitlines() if line.startswith("#")}


def cited_headings(text: str) -> list:
  """The headings ``text`` cites as docs/design.md "Heading" (a list of several counts each)."""
  return [h for group in CITE.findall(text) for h in QUOTED.findall(group)]


def test_citation_pattern_reads_wrapped_and_listed_citations():
  text = 'a (docs/design.md\n  "One") and\n  # docs/design.md\n  # "Two", "Three" and "Four"; "not this"'
  assert cited_headings(text) == ["One", "Two", "Three", "Four"]


def test_cited_design_headings_exist():
  known = headings()
  cited: dict = {}
  for folder in ("dcvae_jax", "configs", "benchmarks", "launch", "examples", "tests"):
    for path in (ROOT / folder).rglob("*.py"):
      if path.name == pathlib.Path(__file__).name:
        continue
      for heading in cited_headings(path.read_text()):
        cited.setdefault(heading, []).append(str(path.relative_to(ROOT)))
  for heading in SEE.findall(DESIGN.read_text()):
    cited.setdefault(heading.rstrip("."), []).append("docs/design.md")
  assert len(cited) >= 5, "few citations found: the pattern is wrong"
  missing = {h: where for h, where in cited.items() if h not in known}
  assert not missing, f"cited docs/design.md headings that do not exist: {missing}"
