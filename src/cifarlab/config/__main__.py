"""``python -m cifarlab.config [PAGE]``: writes the tables of every key between the
``<!-- keys:start -->`` and ``<!-- keys:end -->`` lines of PAGE (docs/configuration.md)."""

import sys
from pathlib import Path

from cifarlab.config.listing import markdown, write_markdown

page = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/configuration.md")
write_markdown(page, markdown(page.resolve().parents[1] / "conf"))
print(f"Wrote the keys of conf/ into {page}")
