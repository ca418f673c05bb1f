"""`curate report`: one self-contained HTML file (plus a sibling folder of small thumbnails)."""
