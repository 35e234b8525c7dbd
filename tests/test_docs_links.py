"""Every docs/design.md heading that the code cites exists (``docs/design.md "Heading"``)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
CITE = re.compile(r'design\.md "([^"]+)"')


def test_cited_design_headings_exist():
  headings = {
    line.lstrip("#").strip() for line in (ROOT / "docs" / "design.md").read_text().splitlines() if line.startswith("#")
  }
  cited = {}
  for folder in ("dcvae_jax", "configs", "benchmarks", "launch"):
    for path in (ROOT / folder).rglob("*.py"):
      for heading in CITE.findall(path.read_text()):
        cited.setdefault(heading, []).append(str(path.relative_to(ROOT)))
  assert cited, "no citation found: the pattern is wrong"
  missing = {h: where for h, where in cited.items() if h not in headings}
  assert not missing, missing
