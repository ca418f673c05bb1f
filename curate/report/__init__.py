"""`curate report`: one self-contained HTML file (plus a sibling folder of small thumbnails)."""

from curate.report.build import ReportInfo, build_report

__all__ = ["ReportInfo", "build_report"]
