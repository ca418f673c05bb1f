"""Duplicates: exact (same bytes) and near (cosine >= threshold) found together; near copies are
candidates from the encoder's nearest neighbours confirmed on the images (curate.dedup.verify), or
pairs above a cosine cut, grouped around a kept image without chaining (star linkage, see
curate.dedup.linkage). Files are
never deleted or moved; results are a Parquet table, keep/remove manifests and payload tags
(`dup_group`, `is_duplicate`)."""

from curate.dedup.candidates import CANDIDATE_FLOOR, CANDIDATES, knn_pairs
from curate.dedup.cut import MAX_SHARE, CutChoice, derive_cut
from curate.dedup.groups import KEEP_POLICIES, Components, choose_keeper, groups_of, priority_order
from curate.dedup.linkage import LINKAGES, brute_force_groups, complete_groups, star_groups
from curate.dedup.near import NeighbourSample, default_threshold, nearest_neighbour_sample
from curate.dedup.run import (
    DEFAULT_THRESHOLD,
    MODES,
    DedupResult,
    Pool,
    TooManyDuplicates,
    find_groups,
    load_pool,
    run_dedup,
    sample_verification,
    suggest_threshold,
)
from curate.dedup.semdedup import clustered_near_edges, spherical_kmeans
from curate.dedup.verified import VERIFY_MODES, PairVerifier, VerifyStats, verify_pairs
from curate.dedup.verify import Signature, Verdict, signature, verify_pair

__all__ = [
    "CANDIDATES",
    "CANDIDATE_FLOOR",
    "PairVerifier",
    "Signature",
    "VERIFY_MODES",
    "Verdict",
    "VerifyStats",
    "knn_pairs",
    "sample_verification",
    "signature",
    "verify_pair",
    "verify_pairs",
    "DEFAULT_THRESHOLD",
    "KEEP_POLICIES",
    "LINKAGES",
    "MODES",
    "Components",
    "CutChoice",
    "MAX_SHARE",
    "DedupResult",
    "NeighbourSample",
    "Pool",
    "TooManyDuplicates",
    "brute_force_groups",
    "choose_keeper",
    "complete_groups",
    "clustered_near_edges",
    "default_threshold",
    "derive_cut",
    "find_groups",
    "groups_of",
    "load_pool",
    "nearest_neighbour_sample",
    "run_dedup",
    "priority_order",
    "spherical_kmeans",
    "star_groups",
    "suggest_threshold",
]
