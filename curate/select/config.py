"""Selection configs: a YAML/JSON file or CLI shorthands, both turned into one `SelectionConfig`.

The shape follows Lightly's selection config: a list of strategies, each an input plus what to do
with it. Step types:

  diversity   k-center greedy on the embeddings (`min_distance` stop, `strength` exponent)
  typicality  TypiClust: most typical image of the least-covered k-means cluster
  weights     multiply the pick score by input^strength
  threshold   keep only candidates with min <= input <= max (applied first)
  balance     hard quotas over metadata `keys` (`target`: table, file, or uniform by default);
              `mode: marginal` meets each key's quotas at once instead of joint cells
  cluster_margin  the 10x budget highest-weight candidates, k-means, round-robin from the smallest cluster
  badge       k-means++ seeding (D^2 sampling, times weights^2) on the embeddings

Inputs for weights/threshold: density, typicality, uncertainty (needs `predictions`),
similarity (needs `similar_to` or `text`), random, or `field:<payload key>` (a numeric field).
At most one of diversity/typicality/cluster_margin/badge; with none, candidates are ranked by their
weight product.

Example (YAML):

    budget: 500
    seed: 0
    where: ["width >= 256"]
    predictions: preds.parquet
    uncertainty: margin
    strategies:
      - {type: threshold, input: uncertainty, min: 0.2}
      - {type: diversity, min_distance: 0.05}
      - {type: weights, input: density, strength: 1}
      - {type: weights, input: uncertainty, strength: 2}
      - {type: balance, keys: [weather], target: {sunny: 0.4, rain: 0.4, snow: 0.2}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from curate.select.uncertainty import KINDS

# --strategy auto: TypiClust while (labeled + budget) <= AUTO_TYPICALITY_MAX, density-weighted
# k-center beyond. Rechecked on the 2026-11-24 quality tables (BENCHMARKS.md, label efficiency):
# typicality leads density-k-center at 100 labels and trails it at 200 in most cells, so the
# crossover stays between them.
AUTO_TYPICALITY_MAX = 100
# ... and where auto runs typicality, the most typical image of each k-means cluster only when the
# pool has cluster structure (structure.cluster_structure: how much more k-means clusters of a sample
# separate than those of a Gaussian with the same covariance, best of K = 10, 20, 50; independent of
# the budget) >= this; without it, a random image of each cluster (a stratified sample) instead.
# Measured (BENCHMARKS.md, label efficiency): textile/MobileNetV2 0.001-0.004 and Gaussian/uniform
# noise up to 0.020; digits and MNIST (pixels, MobileNetV2) 0.068-0.181, the 200-mode synthetic pool 0.13.
AUTO_STRUCTURE_MIN = 0.04

STEP_TYPES = ("diversity", "typicality", "weights", "threshold", "balance", "cluster_margin", "badge", "auto")
PROCEDURES = ("diversity", "typicality", "cluster_margin", "badge", "auto")  # at most one per selection
INPUTS = ("density", "typicality", "uncertainty", "similarity", "random")
SHORTHANDS = ("auto", "kcenter", "density-kcenter", "typicality", "density", "uncertainty", "similarity", "random",
              "uncertainty-kcenter", "cluster-margin", "badge")


class ConfigError(ValueError):
    pass


@dataclass
class Step:
    type: str
    input: str | None = None
    strength: float = 1.0
    min: float | None = None
    max: float | None = None
    min_distance: float | None = None
    keys: list[str] = field(default_factory=list)
    target: Any = None
    mode: str = "joint"  # balance: joint cells of the keys, or marginal (each key's quotas at once)

    def __post_init__(self) -> None:
        if self.type == "balance" and self.mode == "marginal":
            from curate.select.balance import Marginal

            if not isinstance(self.target, Marginal):  # planning reads the mode from the target
                self.target = Marginal(self.target)

    def validate(self, where: str) -> None:
        if self.type not in STEP_TYPES:
            raise ConfigError(f"{where}: unknown type {self.type!r}; use one of {', '.join(STEP_TYPES[:-1])}")
        if self.type in ("weights", "threshold"):
            if not self.input:
                raise ConfigError(f"{where}: {self.type} needs an input ({', '.join(INPUTS)} or field:<key>)")
            if self.input not in INPUTS and not (self.input.startswith("field:") and len(self.input) > 6):
                raise ConfigError(f"{where}: unknown input {self.input!r}; use {', '.join(INPUTS)} or field:<key>")
        if self.type == "threshold" and self.min is None and self.max is None:
            raise ConfigError(f"{where}: threshold needs min and/or max")
        if self.mode not in ("joint", "marginal") or (self.mode != "joint" and self.type != "balance"):
            raise ConfigError(f"{where}: mode is joint or marginal, for balance only; got {self.mode!r}")
        if self.type == "balance" and not self.keys:
            raise ConfigError(f"{where}: balance needs keys (metadata fields), e.g. keys: [weather]")
        if not (self.strength >= 0) or (self.type == "diversity" and self.strength <= 0):
            raise ConfigError(f"{where}: strength must be > 0 for diversity and >= 0 for weights")
        if self.min_distance is not None and self.type not in ("diversity", "auto"):
            raise ConfigError(f"{where}: min_distance applies to diversity (k-center) only")
        if self.min_distance is not None and not 0 <= self.min_distance <= 2:
            raise ConfigError(f"{where}: min_distance must be between 0 and 2 (Euclidean on unit vectors), "
                              f"got {self.min_distance}")


@dataclass
class SelectionConfig:
    steps: list[Step]
    strategy: str = "custom"  # label written to the manifest
    budget: int | None = None
    fraction: float | None = None
    seed: int = 0
    name: str | None = None
    where: list[str] = field(default_factory=list)
    include_duplicates: bool = False
    predictions: str | list[str] | None = None  # one file, a glob, a folder, or several (ensemble)
    uncertainty: str = "entropy"
    similar_to: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    knn: int = 20
    max_clusters: int = 500

    def validate(self) -> SelectionConfig:
        for i, s in enumerate(self.steps):
            s.validate(f"strategy {i + 1}")
        procs = [s.type for s in self.steps if s.type in PROCEDURES]
        if len(procs) > 1:
            raise ConfigError(f"at most one of {'/'.join(PROCEDURES[:-1])} per selection, got {', '.join(procs)}")
        if "cluster_margin" in procs and not any(s.type == "weights" for s in self.steps):
            raise ConfigError("cluster_margin ranks by uncertainty: add a weights step (input: uncertainty)")
        if sum(s.type == "balance" for s in self.steps) > 1:
            raise ConfigError("one balance step at most; list several keys in it to balance them jointly")
        if not procs and not any(s.type == "weights" for s in self.steps):
            raise ConfigError("nothing to select by: add a diversity, typicality or weights strategy")
        if self.budget is not None and self.fraction is not None:
            raise ConfigError("give a budget or a fraction, not both")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"budget must be >= 1, got {self.budget}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.uncertainty not in KINDS:
            raise ConfigError(f"unknown uncertainty {self.uncertainty!r}; use one of {', '.join(KINDS)}")
        if self.knn < 1 or self.max_clusters < 1:
            raise ConfigError("knn and max_clusters must be >= 1")
        inputs = {s.input for s in self.steps}
        if "uncertainty" in inputs and not self.predictions:
            raise ConfigError("the uncertainty input needs a predictions file (--predictions FILE)")
        if "similarity" in inputs and not (self.similar_to or self.text):
            raise ConfigError("the similarity input needs queries (--similar-to ID/PATH or --text PROMPT)")
        return self

    @property
    def balance(self) -> Step | None:
        return next((s for s in self.steps if s.type == "balance"), None)


def shorthand(
    strategy: str = "auto",
    *,
    predictions: str | list[str] | None = None,
    similar: bool = False,
    balance_by: list[str] | None = None,
    balance_target: Any = None,
    min_distance: float | None = None,
    balance_mode: str | None = None,
) -> tuple[list[Step], str]:
    """CLI shorthands -> steps. Predictions and queries add uncertainty/similarity weights to any
    strategy (or are the whole strategy for `uncertainty`/`similarity`)."""
    if strategy not in SHORTHANDS:
        raise ConfigError(f"unknown --strategy {strategy!r}; use one of {', '.join(SHORTHANDS)}")
    steps = {
        "auto": [Step("auto")],
        "kcenter": [Step("diversity")],
        "density-kcenter": [Step("diversity"), Step("weights", "density")],
        "typicality": [Step("typicality")],
        "density": [Step("weights", "density")],
        "uncertainty": [Step("weights", "uncertainty")],
        "similarity": [Step("weights", "similarity")],
        "random": [Step("weights", "random")],
        "uncertainty-kcenter": [Step("diversity"), Step("weights", "uncertainty")],
        "cluster-margin": [Step("cluster_margin"), Step("weights", "uncertainty")],
        "badge": [Step("badge")],
    }[strategy]
    label = strategy
    if min_distance is not None:
        proc = [s for s in steps if s.type in ("diversity", "auto")]
        if not proc:
            raise ConfigError(f"--min-distance applies to k-center; --strategy {strategy} has none")
        proc[0].min_distance = min_distance
    if predictions and not any(s.input == "uncertainty" for s in steps):
        steps.append(Step("weights", "uncertainty"))
        label += "+uncertainty"
    if similar and strategy != "similarity":
        steps.append(Step("weights", "similarity"))
        label += "+similarity"
    if balance_by:
        if balance_mode not in (None, "joint", "marginal"):
            raise ConfigError(f"--balance-mode is joint or marginal, not {balance_mode!r}")
        steps.append(Step("balance", keys=list(balance_by), target=balance_target, mode=balance_mode or "joint"))
        label += "+balance"
    elif balance_target is not None or balance_mode is not None:
        raise ConfigError("--balance-target and --balance-mode need --balance-by KEY[,KEY]")
    return steps, label


_TOP_KEYS = {f.name for f in fields(SelectionConfig)} - {"steps"} | {"strategies"}
_STEP_KEYS = {f.name for f in fields(Step)}


def from_mapping(data: dict[str, Any], origin: str = "config") -> SelectionConfig:
    """Build a config from a parsed YAML/JSON mapping; unknown keys are errors, not ignored."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{origin}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_TOP_KEYS))}"
        )
    values = dict(data)
    pred = values.get("predictions")
    if isinstance(pred, dict):  # predictions: {file: x, uncertainty: margin}
        values["predictions"] = pred.get("file")
        if "uncertainty" in pred:
            values["uncertainty"] = pred["uncertainty"]
    for key in ("where", "similar_to", "text"):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    _check_types(values, _TOP_TYPES, origin)
    raw_steps = values.pop("strategies", None)
    short = values.pop("strategy", None)
    if raw_steps is not None and short is not None:
        raise ConfigError(f"{origin}: give 'strategies' or the 'strategy' shorthand, not both")
    if raw_steps is None:
        steps, label = shorthand(short or "auto", predictions=values.get("predictions"),
                                 similar=bool(values.get("similar_to") or values.get("text")))
    else:
        if not isinstance(raw_steps, list) or not raw_steps:
            raise ConfigError(f"{origin}: 'strategies' must be a non-empty list")
        steps = []
        for i, raw in enumerate(raw_steps):
            if not isinstance(raw, dict):
                raise ConfigError(f"{origin}: strategy {i + 1} is not a mapping")
            bad = set(raw) - _STEP_KEYS
            if bad:
                raise ConfigError(f"{origin}: strategy {i + 1} has unknown key(s) {', '.join(sorted(bad))}")
            if "type" not in raw:
                raise ConfigError(f"{origin}: strategy {i + 1} needs a type")
            _check_types(raw, _STEP_TYPES, f"{origin}: strategy {i + 1}")
            step = Step(**raw)
            if isinstance(step.keys, str):
                step.keys = [k.strip() for k in step.keys.split(",")]
            steps.append(step)
        label = "custom"
    try:
        cfg = SelectionConfig(steps=steps, strategy=label, **values)
    except TypeError as e:
        raise ConfigError(f"{origin}: {e}") from e
    return cfg


# Expected YAML/JSON types: a wrong type is an error, never coerced (`budget: 2.7` is not 2,
# `budget: true` is not 1). "number" is an int or a finite float; bool is never a number.
_TOP_TYPES = {"budget": "int", "fraction": "number", "seed": "int", "name": "str", "where": "strs",
              "include_duplicates": "bool", "predictions": "strs", "uncertainty": "str", "similar_to": "strs",
              "text": "strs", "knn": "int", "max_clusters": "int", "strategy": "str"}
_STEP_TYPES = {"type": "str", "input": "str", "strength": "number", "min": "number", "max": "number",
               "min_distance": "number", "keys": "strs", "mode": "str"}
_TYPE_WORDS = {"int": "a whole number", "number": "a number", "str": "a string", "bool": "true or false",
               "strs": "a string or a list of strings"}


def _type_ok(kind: str, v: Any) -> bool:
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "number":
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if kind == "str":
        return isinstance(v, str)
    if kind == "bool":
        return isinstance(v, bool)
    return isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))


def _check_types(values: dict[str, Any], types: dict[str, str], origin: str) -> None:
    for key, kind in types.items():
        v = values.get(key)
        if v is not None and not _type_ok(kind, v):
            raise ConfigError(f"{origin}: {key} must be {_TYPE_WORDS[kind]}, got {v!r}")


def load_config(path: str | Path) -> SelectionConfig:
    """Read a YAML (.yaml/.yml) or JSON selection config."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"selection config {p} not found")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml and json raise different types; both mean "fix the file"
        raise ConfigError(f"{p}: cannot parse ({e})") from e
    return from_mapping(data, str(p))


def with_overrides(cfg: SelectionConfig, **overrides: Any) -> SelectionConfig:
    """CLI flags win over the file; None means "not given"."""
    given = {k: v for k, v in overrides.items() if v is not None and v != [] and v is not False}
    if "budget" in given:
        given.setdefault("fraction", None)
    if "fraction" in given and overrides.get("budget") is None:
        given["budget"] = None
    return replace(cfg, **given)
