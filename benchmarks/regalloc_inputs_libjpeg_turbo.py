"""Inputs of the libjpeg-turbo rerun (benchmarks/regalloc_reward_rule.md), remade from the
description in benchmarks/regalloc_tune_rule.md ("Blind run 2"): writes jpeg-train.ppm and
jpeg-check.ppm into the current directory."""
import numpy as np


def ppm(path: str, img: np.ndarray) -> None:
    h, w, _ = img.shape
    with open(path, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h))
        f.write(np.clip(img, 0, 255).astype(np.uint8).tobytes())


# Training: 1024x768, smooth colour gradients with four filled circles.
h, w = 768, 1024
y, x = np.mgrid[0:h, 0:w].astype(np.float64)
img = np.stack([255 * x / (w - 1), 255 * y / (h - 1), 255 * (1 - (x + y) / (w + h - 2))], axis=-1)
for cx, cy, r, col in [(250, 200, 120, (230, 40, 40)), (700, 260, 160, (30, 200, 60)),
                       (420, 560, 140, (40, 60, 220)), (860, 620, 90, (250, 240, 30))]:
    img[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = col
ppm("jpeg-train.ppm", img)

# Check: 800x600, coarse random 40-pixel blocks under Gaussian grain (sigma 28, seed 7).
rng = np.random.default_rng(7)
h, w = 600, 800
blocks = rng.integers(0, 256, size=(h // 40, w // 40, 3)).astype(np.float64)
img = np.repeat(np.repeat(blocks, 40, axis=0), 40, axis=1)
img += rng.normal(0, 28, size=img.shape)
ppm("jpeg-check.ppm", img)
