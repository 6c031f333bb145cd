"""Render a medfuse ``report.html`` in headless Chromium and save a screenshot of the whole page.

The page is laid out once at the given width to measure its height (and to find what does not fit: a
table cell of a one-line table that wraps, a box whose content is wider than the box, an element wider
than the page; printed as warnings), then shot at exactly that height, so the PNG ends where the page
ends; saved with 256 colours (``--colors 0``: all). ``--parts N`` cuts it into N PNGs of about equal
height (``report-1.png`` ... for ``report.png``), each cut just above a section heading where there is one.

Needs Debian's ``chromium`` package (``apt-get install chromium``) and Pillow (a matplotlib dependency).
Usage:
    python benchmarks/screenshot_report.py runs/demo/run/report.html docs/img/report.png [--width 1280]
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--virtual-time-budget=10000"]

# Runs after every image has loaded: the page's height, its section boundaries and what does not fit.
MEASURE = """<script>window.addEventListener('load', () => {
  const doc = document.documentElement, page = document.body.getBoundingClientRect();
  const problems = [], text = el => (el.innerText || el.getAttribute('alt') || el.tagName).trim().slice(0, 60);
  const lines = el => { const r = document.createRange(); r.selectNodeContents(el);
    return new Set([...r.getClientRects()].filter(q => q.width > 0).map(q => Math.round(q.bottom))).size; };
  document.querySelectorAll('td, th').forEach(c => {  // one line in a one-line table, else two at most
    const one = c.closest('table.nowrap') || (c.closest('table.numbers') && c.tagName == 'TD' && c.cellIndex > 0);
    if (lines(c) > (one ? 1 : 2)) problems.push(`cell on ${lines(c)} lines: ${text(c)}`); });
  document.querySelectorAll('pre, .scroll, table, img, svg').forEach(el => {
    const b = el.getBoundingClientRect(), boxed = el.parentElement.closest('.scroll');
    if (!boxed && (b.right > page.right + 1 || b.left < page.left - 1)) problems.push(`wider than the page: ${text(el)}`);
    if (el.matches('pre, .scroll') && el.scrollWidth > el.clientWidth + 1)
      problems.push(`${el.matches('pre') ? 'content wider than its box' : 'table scrolls sideways'} `
                    + `(${el.scrollWidth} > ${el.clientWidth} px): ${text(el)}`); });
  const cuts = [...document.querySelectorAll('h2, h3')].map(h => Math.floor(h.getBoundingClientRect().top
    + window.scrollY - 12));
  document.body.setAttribute('data-layout', JSON.stringify({height: Math.ceil(doc.scrollHeight), cuts, problems}));
});</script>"""


def _browser() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    return browser


def measure(report: Path, width: int = 1280) -> dict:
    """``{"height": px, "cuts": [y of each h2/h3, px], "problems": [...]}`` of ``report`` laid out ``width`` px wide."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        source = report.read_text(encoding="utf-8")
        page.write_text(source.replace("</body>", MEASURE + "</body>") if "</body>" in source else source + MEASURE,
                        encoding="utf-8")
        out = subprocess.run([_browser(), *FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={width},900",
                              "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-layout="([^"]*)"', out.stdout)
    if found is None:
        raise SystemExit(f"{report}: Chromium laid out nothing")
    return json.loads(html.unescape(found.group(1)))


def screenshot(report: Path, png: Path, width: int = 1280, height: int | None = None) -> Path:
    """Shoot ``report`` ``width`` px wide and ``height`` px high (default: the page's own height) to ``png``."""
    height = height or measure(report, width)["height"]
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([_browser(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png.resolve()}", report.resolve().as_uri()],
                       check=True, capture_output=True, timeout=180)
    if not png.exists() or png.stat().st_size < 10_000:
        raise SystemExit(f"{png}: no screenshot written")
    return png


def _save(image, path: Path, colors: int) -> None:
    """``image`` as a PNG, reduced to ``colors`` colours (0: all) by octree quantisation, which keeps the
    plots' few flat colours exact and makes a page-long shot a third of the size."""
    from PIL import Image

    if colors:
        image = image.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    image.save(path, optimize=True)


def finish(png: Path, parts: int = 1, cuts: list[int] = (), colors: int = 256) -> list[Path]:
    """Rewrite ``png`` with ``colors`` colours, or cut it into ``parts`` PNGs named ``<stem>-1.png`` ...,
    each cut at the heading (``cuts``, px) nearest to an equal share of the height, ``png`` then removed."""
    from PIL import Image

    with Image.open(png) as im:
        full = im.convert("RGB")
    if parts <= 1:
        _save(full, png, colors)
        return [png]
    height, bounds = full.height, [0]
    for k in range(1, parts):
        target = k * height // parts
        near = [c for c in cuts if bounds[-1] + 200 < c < height - 200]
        bounds.append(min(near, key=lambda c: abs(c - target)) if near else target)
    bounds.append(height)
    out = []
    for k, (top, bottom) in enumerate(pairwise(bounds), 1):
        path = png.with_name(f"{png.stem}-{k}{png.suffix}")
        _save(full.crop((0, top, full.width, bottom)), path, colors)
        out.append(path)
    png.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("png", type=Path, nargs="?", help="default: report.png beside the report")
    ap.add_argument("--width", type=int, default=1280, help="window width in px (default 1280)")
    ap.add_argument("--parts", type=int, default=1, help="cut the page into this many PNGs (default 1)")
    ap.add_argument("--colors", type=int, default=256, help="colours of the PNG (default 256; 0: all)")
    args = ap.parse_args()
    png = args.png or args.report.with_suffix(".png")
    layout = measure(args.report, args.width)
    for problem in layout["problems"]:
        print(f"layout at {args.width} px: {problem}", file=sys.stderr)
    shot = screenshot(args.report, png, args.width, layout["height"])
    for path in finish(shot, args.parts, layout["cuts"], args.colors):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
