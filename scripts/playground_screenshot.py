"""The playground's picture for the docs: start the service on a package, run a text in a real browser, save a PNG.

    PYTHONPATH=. .venv/bin/python scripts/playground_screenshot.py                      # models/emotion
    PYTHONPATH=. .venv/bin/python scripts/playground_screenshot.py --package PKG --out docs/images/playground.png

The package needs its attention graph (`encoder-serve export` builds it). The browser is the one the tests
use (tests/browser.py: Playwright on the system Chromium, every outside request refused), so the picture
shows the page exactly as a person on an offline machine gets it. With --hover N the head view shows token
N's row, as it does under the mouse. The script fails if the page asked for anything outside the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from encoder_serve.service.testing import LiveServer
from tests.browser import offline_page

TEXT = "i feel wonderful today everything is going my way"


def screenshot(package: Path, out: Path, text: str, width: int, height: int, hover: int | None,
               layer: int, head: int, full_page: bool) -> None:
    with LiveServer(package, env={"LOG_LEVEL": "warning"}) as server, \
            offline_page({"width": width, "height": height}) as (page, outside):
        page.goto(server.url + "/")
        page.wait_for_function("document.querySelector('#model').textContent.includes('@')", timeout=20_000)
        page.fill("#text", text)
        page.click("#run")
        page.wait_for_selector("#model-grid canvas", timeout=20_000)
        if (layer, head) != (0, 0):
            page.click(f'#model-grid .thumbnail[data-layer="{layer}"][data-head="{head}"]')
        page.wait_for_selector(f'#qk[data-layer="{layer}"][data-head="{head}"] canvas', timeout=20_000)
        if hover is not None:
            page.hover(f'#head-view .tokens.left .token[data-index="{hover}"]')
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=full_page)
        if outside:
            raise SystemExit(f"the page asked for outside resources: {outside}")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=REPO / "models" / "emotion")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "playground.png")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--layer", type=int, default=0, help="0-based layer to open (default 0)")
    parser.add_argument("--head", type=int, default=0, help="0-based head to open (default 0)")
    parser.add_argument("--hover", type=int, default=None, help="a token index to hover in the head view")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not just the window")
    args = parser.parse_args()
    screenshot(args.package, args.out, args.text, args.width, args.height, args.hover, args.layer, args.head,
               args.full_page)


if __name__ == "__main__":
    main()
