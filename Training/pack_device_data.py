"""Pack ../shared/data small enough to travel to a lent GPU machine with the working tree.

The device tool sends the checkout and at most 64 MiB in all, and ../shared/data does not
travel. This writes the same folder layout (acdc/, emidec/, their JSON lists) with each
volume cropped about its centre and the images stored as uint8, which is what the training
pipeline sees anyway: it centre-crops 220-224 mm (about 150 px at ACDC's assumed 1.5 mm),
and rescales every image to its own 98th percentile. The folder must stay out of git:

    echo /.device_data/ >> .git/info/exclude
    python Training/pack_device_data.py ../shared/data .device_data
    # then name .device_data in the device call's carry, and DATA=.device_data for gpu_session.sh
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

# Widths kept about the image centre (px): the training crop of 220-224 mm is 147-149 px
# at the assumed 1.5 mm (ACDC; a few edge pixels are padding instead); EMIDEC's labels lie
# within 61 px of the centre in every case.
CROP_PX = {"acdc": 144, "emidec": 128}


def centre_crop(volume: np.ndarray, size: int) -> np.ndarray:
    rows, cols = volume.shape[-2:]
    top, left = max(0, (rows - size) // 2), max(0, (cols - size) // 2)
    return volume[..., top:top + size, left:left + size]


def as_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.dtype == np.uint8 or image.max() > 1.0:  # EMIDEC is 0..255 already
        return np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def pack(source: Path, target: Path) -> int:
    written = 0
    for name, size in CROP_PX.items():
        (target / name).mkdir(parents=True, exist_ok=True)
        for listing in (source / name).glob("*.json"):
            shutil.copy2(listing, target / name / listing.name)
        for path in sorted((source / name).glob("*.npz")):
            with np.load(path) as data:
                image, label = centre_crop(data["image"], size), centre_crop(data["label"], size)
            np.savez_compressed(target / name / path.name, image=as_uint8(image), label=label.astype(np.uint8))
            written += (target / name / path.name).stat().st_size
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="../shared/data")
    parser.add_argument("target", type=Path, help="e.g. .device_data (kept out of git)")
    args = parser.parse_args()
    size = pack(args.source, args.target)
    print(f"{args.target}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
