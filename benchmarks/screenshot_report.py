"""Render a medfuse ``report.html`` in headless Chromium and save a full-page PNG screenshot.

Needs Debian's ``chromium`` package (``apt-get install chromium``). Usage:
    python benchmarks/screenshot_report.py runs/demo/run/report.html docs/img/report.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def screenshot(report: Path, png: Path, width: int = 1200, height: int = 6000) -> Path:
    """Take the screenshot; raises if Chromium is missing or writes nothing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png.resolve()}", report.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    if not png.exists() or png.stat().st_size < 10_000:
        raise SystemExit(f"{png}: no screenshot written")
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("png", type=Path)
    args = ap.parse_args()
    print(screenshot(args.report, args.png))


if __name__ == "__main__":
    sys.exit(main())
