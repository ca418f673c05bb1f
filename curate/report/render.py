"""Turn collected report data into one HTML string.

Safety: every string from data goes through `esc()` (HTML) or into the JSON block, where '<', '>'
and '&' are written as \\u escapes so nothing in it can close the <script> element; the page's
script sets text with textContent only. A Content-Security-Policy with a per-report nonce also
forbids inline event handlers and any network fetch, so even a missed escape could not run code
or phone home. ('unsafe-eval' stays allowed: regl builds its draw calls with Function().)
"""

from __future__ import annotations

import html
import json
import secrets
from importlib import resources
from typing import Any
from urllib.parse import quote

from curate.report.collect import Distribution, Evaluation, Gallery, Groups, Tile


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def asset(name: str) -> str:
    return resources.files("curate.report").joinpath("assets", name).read_text(encoding="utf-8")


def json_for_script(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def tile_html(t: Tile, thumbs_dir: str, have: set[str]) -> str:
    if t.sha and t.sha in have:
        src = esc(f"{quote(thumbs_dir)}/{t.sha}.webp")
        img = f'<img loading="lazy" src="{src}" alt="">'
    else:
        img = '<span class="nothumb">no thumbnail</span>'
    badge = f'<span class="badge {esc(t.mark.lower())}">{esc(t.mark)}</span>' if t.mark else ""
    lines = "".join(f'<div class="meta">{esc(line)}</div>' for line in t.lines)
    row = f' data-row="{t.row}"' if t.row >= 0 else ""
    return (f'<figure class="tile"{row} title="{esc(t.path)}"><div class="thumb">{img}{badge}</div>'
            f'<figcaption><div class="path">{esc(t.path.rsplit("/", 1)[-1])}</div>{lines}</figcaption></figure>')


def gallery_html(g: Gallery, thumbs_dir: str, have: set[str], anchor: str) -> str:
    tiles = "".join(tile_html(t, thumbs_dir, have) for t in g.tiles)
    return (f'<section class="card" id="{esc(anchor)}"><h2>{esc(g.title)} <span class="count">{g.total:,}</span></h2>'
            f'<p class="note">{esc(g.note)}</p><div class="gallery">{tiles}</div></section>')


def groups_html(g: Groups, thumbs_dir: str, have: set[str], anchor: str) -> str:
    rows = "".join(
        f'<div class="group"><div class="group-label">{k + 1}</div>'
        f'{"".join(tile_html(t, thumbs_dir, have) for t in grp)}</div>'
        for k, grp in enumerate(g.groups)
    )
    return (f'<section class="card" id="{esc(anchor)}"><h2>{esc(g.title)} <span class="count">{g.total_groups:,}</span>'
            f'</h2><p class="note">{esc(g.note)}</p><div class="groups">{rows}</div></section>')


def distribution_html(d: Distribution) -> str:
    top = max([c for _, c in d.bars] + [1])
    bars = "".join(
        f'<div class="bar-row"><span class="bar-label" title="{esc(label)}">{esc(label)}</span>'
        f'<span class="bar"><span style="width:{100 * c / top:.1f}%"></span></span>'
        f'<span class="bar-count">{c:,}</span></div>'
        for label, c in d.bars
    )
    extra = []
    if d.other:
        extra.append(f"{d.other:,} in other values")
    if d.missing:
        extra.append(f"{d.missing:,} missing")
    foot = f'<div class="bar-foot">{esc("; ".join(extra))}</div>' if extra else ""
    return f'<div class="dist"><h3>{esc(d.key)}</h3>{bars}{foot}</div>'


def evaluation_html(e: Evaluation) -> str:
    """`curate evaluate`'s learning curves: test accuracy per strategy and budget, the recommended
    strategy marked, and the verdict line."""
    head = "".join(f"<th>{esc(b)}</th>" for b in e.budgets)
    rows = "".join(
        f"<tr><td>{'<b>' + esc(name) + '</b> (recommended)' if name == e.recommended else esc(name)}</td>"
        + "".join(f"<td>{esc(c)}</td>" for c in cells) + f"<td>{mean:.3f}</td></tr>"
        for name, cells, mean in e.rows)
    return ('<section class="card" id="evaluate"><h2>Strategy evaluation</h2>'
            f'<p class="note">From <code>curate evaluate</code>: test accuracy of a linear probe trained on each '
            f'strategy\'s picks, mean ± std over {e.seeds} seed(s), per labeling budget.</p>'
            f'<table class="tbl"><tr><th>strategy</th>{head}<th>mean</th></tr>{rows}</table>'
            f'<p class="note">Recommended: {esc(e.verdict)}</p></section>')


def stat(label: str, value: int | str, cls: str = "") -> str:
    v = f"{value:,}" if isinstance(value, int) else esc(value)
    return f'<div class="stat {cls}"><div class="stat-value">{v}</div><div class="stat-label">{esc(label)}</div></div>'


def summary_html(s: dict[str, Any]) -> str:
    enc_rows = "".join(
        f"<tr><td>{esc(name)}</td><td class='num'>{n:,}</td>"
        f"<td>{'shown on the map' if name == s['map_encoder'] else ''}</td></tr>" for name, n in s["encoders"].items()
    )
    dists = "".join(distribution_html(d) for d in s["distributions"]) or '<p class="note">No metadata columns.</p>'
    if s["failed"]:
        fail_rows = "".join(f"<tr><td class='mono'>{esc(p)}</td><td>{esc(e)}</td></tr>" for p, e in s["failed_rows"])
        more = f'<p class="note">first {len(s["failed_rows"])} of {s["failed"]:,}; all in curate errors</p>' \
            if s["failed"] > len(s["failed_rows"]) else ""
        failed = (f'<h3>Images that could not be embedded</h3><table class="tbl"><tr><th>path</th><th>reason</th></tr>'
                  f"{fail_rows}</table>{more}")
    else:
        failed = '<p class="note ok">Every image was embedded.</p>'
    return (
        '<section class="card" id="pool"><h2>Pool</h2>'
        f'<table class="tbl narrow"><tr><th>encoder</th><th>vectors</th><th></th></tr>{enc_rows}</table>'
        f'<h3 class="sub">Metadata</h3><div class="dists">{dists}</div>{failed}</section>'
    )


def render(summary: dict[str, Any], sections: dict[str, Any], map_data: dict[str, Any], thumbs_dir: str,
           have: set[str]) -> str:
    nonce = secrets.token_urlsafe(16)
    nav = [("pool", "Pool"), ("map", "Map")]
    body = [summary_html(summary)]
    body.append(
        '<section class="card" id="map"><h2>Map <span class="count">'
        f'{map_data["n"]:,}</span></h2><p class="note">UMAP of {esc(summary["map_encoder"])}. Drag to pan, scroll to '
        "zoom, hover for a preview, click a point for its nearest neighbours, shift-drag to lasso; "
        "double-click clears.</p>"
        '<div class="map-tools"><label>Colour by <select id="colour-by"></select></label>'
        '<button id="reset-view" type="button">Reset view</button><span id="map-status" class="note"></span></div>'
        '<div class="map-wrap"><div class="map-canvas-wrap"><canvas id="map-canvas"></canvas>'
        '<div id="hover-card" class="hover-card" hidden></div></div><div id="legend" class="legend"></div></div>'
        '<div id="picked" class="picked" hidden><h3 id="picked-title"></h3><div id="picked-tiles" class="gallery">'
        "</div></div></section>"
    )
    if "selection" in sections:
        nav.append(("selection", "Selection"))
        body.append(gallery_html(sections["selection"], thumbs_dir, have, "selection"))
    if "duplicates" in sections:
        nav.append(("duplicates", "Duplicates"))
        body.append(groups_html(sections["duplicates"], thumbs_dir, have, "duplicates"))
    if "outliers" in sections:
        nav.append(("outliers", "Outliers"))
        body.append(gallery_html(sections["outliers"], thumbs_dir, have, "outliers"))
    if "evaluate" in sections:
        nav.append(("evaluate", "Evaluation"))
        body.append(evaluation_html(sections["evaluate"]))
    for k, g in enumerate(sections.get("slices", [])):
        nav.append((f"slice-{k}", g.title))
        body.append(gallery_html(g, thumbs_dir, have, f"slice-{k}"))
    for k, g in enumerate(sections.get("leaks", [])):
        nav.append((f"leaks-{k}", g.title))
        body.append(groups_html(g, thumbs_dir, have, f"leaks-{k}"))
    nav_html = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    stats = "".join([
        stat("images", summary["points"]), stat("on the map", summary["mapped"]),
        stat("failed", summary["failed"], "warn" if summary["failed"] else ""),
        stat("selected", summary["selected"]), stat("duplicates", summary["duplicates"]),
        stat("slices", summary["slices"]),
    ])
    csp = (f"default-src 'none'; script-src 'nonce-{nonce}' 'unsafe-eval' blob:; worker-src blob:; "
           "style-src 'unsafe-inline'; img-src 'self' file: data: blob:; connect-src 'none'; "
           "base-uri 'none'; form-action 'none'")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>curate report: {esc(summary["collection"])}</title>
<style>{asset("report.css")}</style></head>
<body>
<header><div class="head-inner"><div><div class="brand">curate report</div>
<h1>{esc(summary["collection"])}</h1>
<div class="sub-head">store {esc(summary["store"])} &middot; {esc(summary["created"])}</div></div>
<div class="stats">{stats}</div></div>
<nav>{nav_html}</nav></header>
<main>{"".join(body)}</main>
<footer>Made by curate. The map is drawn with regl-scatterplot (MIT), bundled in this file.
<details><summary>Third-party licenses</summary><pre>{esc(asset("THIRD_PARTY_LICENSES.txt"))}</pre></details></footer>
<script type="application/json" id="curate-data">{json_for_script(map_data)}</script>
<script nonce="{nonce}">{asset("regl-scatterplot.min.js")}</script>
<script nonce="{nonce}">{asset("report.js")}</script>
</body></html>
"""
