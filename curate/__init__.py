"""curate: data-centric curation of image pools (embed, select, dedup, slice)."""

__version__ = "0.1.0"
