"""Before/after montage of synthetic long-axis cines (first frame of 2CH, 3CH, 4CH, aorta/LVOT).

Run from the repository root; each side imports CMRFoundationLib from its own source tree
(e.g. ``git archive <old commit> CMRFoundationLib | tar -x -C /tmp/before``)::

    python Training/results/cpu_hybrid/longaxis/make_montage.py OUT.png --before /tmp/before --after . --seeds 0 1 2

Each side runs in its own process with its tree first on PYTHONPATH (the two packages
share a name). Synthetic images only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

VIEWS = ("2ch", "3ch", "4ch", "aorta")
TILE = 150

RENDER = r"""
import sys, json, time
from pathlib import Path
import numpy as np
from CMRFoundationLib.dicom import read_study
from CMRFoundationLib.synthetic.phantom import PATHOLOGIES
from CMRFoundationLib.synthetic.study import make_sample_study
out, seed = Path(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
truth = make_sample_study(out / "study", seed=seed, pathology=PATHOLOGIES[seed % 5], frames=1)
seconds = time.perf_counter() - start
for view in sys.argv[4].split(","):
    series = next(s for s in truth["series"] if s["view"] == view and s["image_type"] == "cine")
    (stack,), _ = read_study(out / "study" / series["folder"])
    np.save(out / f"{view}.npy", stack.pixels[0, 0].astype(np.float32))
print(json.dumps({"seconds": seconds}))
"""


def tile(image: np.ndarray) -> Image.Image:
    """The image scaled into a TILE x TILE square (aspect kept, 99.5th percentile to white)."""
    scaled = np.clip(image / np.percentile(image, 99.5), 0, 1)
    im = Image.fromarray((scaled * 255).astype(np.uint8))
    factor = TILE / max(im.size)
    im = im.resize((max(1, round(im.width * factor)), max(1, round(im.height * factor))), Image.BILINEAR)
    square = Image.new("L", (TILE, TILE))
    square.paste(im, ((TILE - im.width) // 2, (TILE - im.height) // 2))
    return square


def render(source: str, seed: int) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(Path(source).resolve())}
        subprocess.run(
            [sys.executable, "-c", RENDER, source, tmp, str(seed), ",".join(VIEWS)],
            check=True,
            stdout=subprocess.PIPE,
            cwd=source,
            env=env,
        )
        return {view: np.load(Path(tmp) / f"{view}.npy") for view in VIEWS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--before", required=True, help="source tree holding the old CMRFoundationLib")
    parser.add_argument("--after", default=".", help="source tree holding the new CMRFoundationLib")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    head = 18
    sheet = Image.new("L", (TILE * 2 * len(VIEWS) + 8, head + TILE * len(args.seeds)), 40)
    draw = ImageDraw.Draw(sheet)
    for side, source in enumerate((args.before, args.after)):
        x0 = side * (TILE * len(VIEWS) + 8)
        for c, view in enumerate(VIEWS):
            draw.text((x0 + c * TILE + 4, 3), f"{'before' if side == 0 else 'after'} {view}", fill=255)
        for r, seed in enumerate(args.seeds):
            images = render(source, seed)
            for c, view in enumerate(VIEWS):
                sheet.paste(tile(images[view]), (x0 + c * TILE, head + r * TILE))
    sheet.save(args.out, optimize=True)
    print(json.dumps({"out": args.out, "bytes": Path(args.out).stat().st_size}))


if __name__ == "__main__":
    main()
