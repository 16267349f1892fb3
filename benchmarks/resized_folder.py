"""A folder of pictures that are not 32x32: CIFAR-10 JPEGs enlarged and cropped to other sizes,
aspect ratios and modes, to check that ``data.source=folder data.image_size=N`` trains and
predicts end to end on pictures as people have them.

    python benchmarks/resized_folder.py --root DATA/cifar10-jpg --out DATA/cifar10-resized \\
        --per-class 500
    uv run train.py model=lenet data.source=folder data.root=DATA/cifar10-resized \\
        data.image_size=48 trainer.max_epochs=2
    uv run predict.py ckpt_path=<its best ckpt> input=DATA/cifar10-resized/test

Each picture gets a size drawn from 40..160 pixels a side (aspect 3:4 to 4:3) and one of the
modes RGB (JPEG), grayscale (PNG), palette (GIF) or RGBA with a transparent margin (PNG), all
drawn from a fixed seed, so the folder is the same every time.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image


def convert(source: Path, target_stem: Path, rng: random.Random) -> Path:
    """One picture enlarged to a drawn size and saved in a drawn mode; returns its path."""
    side = rng.randint(40, 160)
    aspect = rng.uniform(0.75, 4 / 3)
    size = (max(16, round(side * aspect)), side)
    with Image.open(source) as image:
        picture = image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    mode = rng.choice(("rgb", "gray", "palette", "rgba"))
    if mode == "rgb":
        path = target_stem.with_suffix(".jpg")
        picture.save(path, quality=90)
    elif mode == "gray":
        path = target_stem.with_suffix(".png")
        picture.convert("L").save(path)
    elif mode == "palette":
        path = target_stem.with_suffix(".gif")
        picture.convert("P").save(path)
    else:  # a transparent margin a tenth of the width on each side
        path = target_stem.with_suffix(".png")
        canvas = Image.new("RGBA", (size[0] + 2 * (size[0] // 10), size[1]), (0, 0, 0, 0))
        canvas.paste(picture, (size[0] // 10, 0))
        canvas.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="cifar10-jpg: train/ and test/")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    parser.add_argument("--per-class", type=int, default=500, help="pictures per class and split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    written = 0
    for split in ("train", "test"):
        for class_dir in sorted(p for p in (args.root / split).iterdir() if p.is_dir()):
            target = args.out / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for source in sorted(class_dir.glob("*.jpg"))[: args.per_class]:
                convert(source, target / source.stem, rng)
                written += 1
    print(f"Wrote {written} pictures into {args.out}")


if __name__ == "__main__":
    main()
