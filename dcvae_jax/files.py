"""Files written whole or not at all."""

from __future__ import annotations

import json
import os


def write_json(path: str, obj) -> None:
  """Write ``obj`` as JSON to ``path`` atomically: a temporary file in the same folder, then a rename, so a
  reader (or a crash) never sees half a file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)
