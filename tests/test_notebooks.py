"""The quickstart notebook's code cells run as written (so the docs cannot rot)."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CURATE_NOTEBOOK_DIR", str(tmp_path))
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    code = "\n".join("".join(c["source"]) for c in cells).replace("LIMIT = 1000", "LIMIT = 200")
    scope: dict = {}
    exec(compile(code, str(NOTEBOOK), "exec"), scope)  # noqa: S102 - our own notebook
    out = capsys.readouterr().out
    assert "200 embedded, 0 skipped" in out
    assert len(scope["result"].ids) == 50 and len(set(scope["result"].ids)) == 50
    assert len(scope["centers"]) == 10 and len(set(scope["centers"].tolist())) == 10
    assert (tmp_path / "out").exists()
