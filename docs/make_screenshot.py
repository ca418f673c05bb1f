"""Make docs/report.png, the README's screenshot: run `curate demo` on 1,000 digits into a temporary
folder, open its report in headless Chromium with the browser test's code, hover a point, save.

    PYTHONPATH=. python docs/make_screenshot.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from curate.report.browser import check_report

HERE = Path(__file__).parent


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="curate-shot-"))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-m", "curate", "demo", "--dir", str(work), "--limit", "1000", "--quiet"],
                   check=True, env=env)
    page = check_report(work / "out" / "report.html", screenshot=HERE / "report.png", hover_row=0,
                        viewport=(1280, 1400))
    if page.console_errors or page.page_errors or page.network:
        raise SystemExit(f"the report misbehaved: {page}")
    print(f"wrote {HERE / 'report.png'} (map interactive after {page.ready_ms:.0f} ms)")


if __name__ == "__main__":
    main()
