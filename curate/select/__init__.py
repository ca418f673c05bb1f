"""Selection: choose which unlabeled images to label next (see compose.py for how strategies
combine and run.py for the store-facing runner)."""

from curate.select.kcenter import kcenter_greedy, kcenter_select

__all__ = ["kcenter_greedy", "kcenter_select"]
