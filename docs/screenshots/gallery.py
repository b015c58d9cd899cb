"""Refresh the README's gallery from the browser tests' screenshots: `make gallery`.

tests/registry/ui/test_browser.py shoots every page at 1280 and 390 px wide
(`<route>-<width>.png` in $DELTAHUB_ARTIFACTS); this copies them here under the page's
name (`adapter-1280.png`), as 256-colour PNGs to keep the repository small, a phone's
shot cut to its first PHONE_HEIGHT pixels (the rest is the same page, narrower).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
PAGES = {"signin": "signin", "models": "models", "models-tiny-base": "lineage",
         "models-tiny-ft": "finetune", "adapters-1": "adapter", "datasets": "datasets",
         "jobs": "jobs", "jobs-1": "job", "webhooks": "webhooks", "webhooks-1": "webhook"}
WIDTHS = (1280, 390)
PHONE_HEIGHT = 1800


def refresh(shots: Path, out: Path = HERE) -> list[Path]:
    written = []
    for shot, page in PAGES.items():
        for width in WIDTHS:
            source = shots / f"{shot}-{width}.png"
            if not source.exists():
                raise SystemExit(f"no {source}: run the browser tests with "
                                 f"DELTAHUB_ARTIFACTS={shots} first")
            picture = Image.open(source).convert("RGB")
            if width < 1000 and picture.height > PHONE_HEIGHT:
                picture = picture.crop((0, 0, picture.width, PHONE_HEIGHT))
            target = out / f"{page}-{width}.png"
            picture.quantize(colors=256).save(target, optimize=True)
            written.append(target)
    return written


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "build/screenshots")
    for path in refresh(folder):
        print(f"{path.relative_to(HERE.parents[1])}: {path.stat().st_size / 1000:.0f} kB")
