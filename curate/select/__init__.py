"""Selection: choose which unlabeled images to label next.

Array level: `kcenter_greedy` / `kcenter_select` (diversity), `knn_density`, `typiclust_select`,
`plan_quotas` (balance), `compose.select` (strategies combined by a `SelectionConfig`).
Store level: `run_selection` (one labeling round) and `mark_labeled`.
"""

# Lazy exports (PEP 562): `curate --help` and the CLI's option parsing import this package, and
# the strategies pull in torch; load a submodule only when one of its names is used.
_EXPORTS = {
    "Pool": "curate.select.compose",
    "RunResult": "curate.select.run",
    "SelectError": "curate.select.run",
    "Selection": "curate.select.compose",
    "SelectionConfig": "curate.select.config",
    "Step": "curate.select.config",
    "kcenter_greedy": "curate.select.kcenter",
    "kcenter_select": "curate.select.kcenter",
    "knn_density": "curate.select.density",
    "load_config": "curate.select.config",
    "mark_labeled": "curate.select.run",
    "plan_quotas": "curate.select.balance",
    "resolve_auto": "curate.select.compose",
    "run_selection": "curate.select.run",
    "select": "curate.select.compose",
    "shorthand": "curate.select.config",
    "typiclust_select": "curate.select.typicality",
}


def __getattr__(name: str):  # noqa: ANN202
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'curate.select' has no attribute {name!r}")


__all__ = [
    "Pool",
    "RunResult",
    "SelectError",
    "Selection",
    "SelectionConfig",
    "Step",
    "kcenter_greedy",
    "kcenter_select",
    "knn_density",
    "load_config",
    "mark_labeled",
    "plan_quotas",
    "resolve_auto",
    "run_selection",
    "select",
    "shorthand",
    "typiclust_select",
]
