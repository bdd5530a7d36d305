"""Numbers quoted in the docs match the committed outputs they come from (STYLE.md 10).

Each check names the quoting file and the output it quotes: the notebooks' committed
outputs (their full run), read as text. When a notebook is re-run and its numbers move,
this test says which sentence to update.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _outputs(name: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    text = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text.append("".join(out.get("text", "")))
            text.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def _row(name: str) -> str:
    (row,) = [line for line in (ROOT / "notebooks" / "README.md").read_text().splitlines()
              if line.startswith(f"| [{name}]")]
    return row


def _nb04_table() -> dict[str, list[str]]:
    """nb04's result table: row label -> its numbers as printed (greedy, sampled, any format, ...)."""
    out = _outputs("04_tiny_llm_with_stale_data")
    rows = {}
    for label in ("after SFT", "m2po", "grpo"):
        m = re.search(rf"^\s*{label}\s+([\d.\s]+)$", out, re.M)
        assert m, f"nb04's output has no '{label}' row"
        rows[label] = m.group(1).split()
    return rows


def test_notebook_04_row_and_docs_llm_quote_the_notebooks_run():
    t = _nb04_table()
    start, m2po, grpo = t["after SFT"][0], t["m2po"][0], t["grpo"][0]
    row = _row("04_tiny_llm_with_stale_data")
    assert f"{start} after SFT, then M2PO {m2po}, GRPO {grpo}" in row, (row, start, m2po, grpo)
    llm = (ROOT / "docs" / "llm.md").read_text()
    assert f"| after SFT (start of both) | {start} |" in llm
    assert f"| M2PO s=16, 240 updates | **{m2po}**" in llm and f"| GRPO s=16, 240 updates | **{grpo}**" in llm


def test_notebook_06_row_quotes_the_notebooks_speed_ups():
    out = _outputs("06_what_staleness_buys")
    row = _row("06_what_staleness_buys")
    for method in ("no_tr", "m2po"):
        m = re.search(rf"async {method} reaches 95% of on-policy final reward ([\d.]+x) sooner.*reached by (\d)/(\d) seeds",
                      out)
        assert m, f"nb06's output has no speed-up line for {method}"
        assert m.group(1) in row, (method, m.group(1), row)
        if m.group(2) != m.group(3):  # not every seed reached the target: the row must say so
            assert f"{m.group(2)} of {m.group(3)} seeds" in row, row
    assert "async GRPO never" in row and "async grpo reaches" not in out
