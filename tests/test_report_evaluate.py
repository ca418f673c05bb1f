"""The report's evaluation section: `curate evaluate`'s learning curves and recommendation."""

from __future__ import annotations

import polars as pl

from curate.evaluate import recommend
from curate.report.collect import evaluation
from curate.report.render import evaluation_html


def _runs(collection: str, best: str) -> pl.DataFrame:
    rows = []
    for seed in range(3):
        for s, base in (("random", 0.5), ("kcenter", 0.6), ("typicality", 0.7)):
            for b in (10, 20):
                acc = base + 0.01 * seed + (0.2 if s == best else 0.0) + b / 1000
                rows.append({"strategy": s, "seed": seed, "budget": b, "n_labeled": b, "accuracy": acc,
                             "resolved": s, "collection": collection})
    return pl.DataFrame(rows)


def test_section_shows_this_collections_table_and_recommendation(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    mine = _runs("pool", "typicality")
    mine.write_csv(tmp_path / "a" / "evaluate.csv")
    _runs("other", "random").write_csv(tmp_path / "b" / "evaluate.csv")  # another collection's: ignored
    ev = evaluation(tmp_path, "pool")
    assert ev is not None and ev.budgets == [10, 20] and ev.seeds == 3
    assert ev.recommended == "typicality" and ev.verdict == recommend(mine)[1]
    cells = {name: c for name, c, _ in ev.rows}
    assert cells["kcenter"] == ["0.620 ± 0.010", "0.630 ± 0.010"]  # mean ± std over seeds per budget
    html = evaluation_html(ev)
    assert "<b>typicality</b> (recommended)" in html and "0.920 ± 0.010" in html and 'id="evaluate"' in html
    assert evaluation(tmp_path, "nothing") is None


def test_section_escapes_strategy_names(tmp_path) -> None:
    df = _runs("pool", "kcenter").with_columns(pl.col("strategy").str.replace("random", "<b>x</b>"))
    df.write_csv(tmp_path / "evaluate.csv")
    html = evaluation_html(evaluation(tmp_path, "pool"))
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
