"""Selection: choose which unlabeled images to label next.

Array level: `kcenter_greedy` / `kcenter_select` (diversity), `knn_density`, `typiclust_select`,
`plan_quotas` (balance), `compose.select` (strategies combined by a `SelectionConfig`).
Store level: `run_selection` (one labeling round) and `mark_labeled`.
"""

from curate.select.balance import plan_quotas
from curate.select.compose import Pool, Selection, resolve_auto, select
from curate.select.config import SelectionConfig, Step, load_config, shorthand
from curate.select.density import knn_density
from curate.select.kcenter import kcenter_greedy, kcenter_select
from curate.select.run import RunResult, SelectError, mark_labeled, run_selection
from curate.select.typicality import typiclust_select

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
