"""Inputs of the blind openjpeg run (benchmarks/regalloc_reward_rule.md): writes
j2k-train.ppm and j2k-check.pgm into the current directory."""
import numpy as np


def pnm(path: str, img: np.ndarray) -> None:
    h, w = img.shape[:2]
    magic = b"P6" if img.ndim == 3 else b"P5"
    with open(path, "wb") as f:
        f.write(b"%s\n%d %d\n255\n" % (magic, w, h))
        f.write(np.clip(np.rint(img), 0, 255).astype(np.uint8).tobytes())


# Training: 512x384 RGB, smooth colour gradients under three filled rectangles and a ring.
h, w = 384, 512
y, x = np.mgrid[0:h, 0:w].astype(np.float64)
img = np.stack([255 * x / (w - 1), 128 + 100 * np.sin(y / 40), 255 * y / (h - 1)], axis=-1)
for x0, y0, x1, y1, col in [(40, 30, 160, 140, (200, 30, 30)), (300, 60, 470, 120, (20, 20, 20)),
                            (120, 250, 260, 360, (240, 240, 200))]:
    img[y0:y1, x0:x1] = col
ring = np.abs(np.hypot(x - 380, y - 270) - 70) < 12
img[ring] = (30, 160, 60)
pnm("j2k-train.ppm", img)

# Check: 448x336 greyscale, 16-pixel random levels blurred along rows under Gaussian grain
# (sigma 20, seed 11).
rng = np.random.default_rng(11)
h, w = 336, 448
levels = rng.integers(0, 256, size=(h // 16, w // 16)).astype(np.float64)
img = np.repeat(np.repeat(levels, 16, axis=0), 16, axis=1)
img = (img + np.roll(img, 5, axis=1) + np.roll(img, -5, axis=1)) / 3
img += rng.normal(0, 20, size=img.shape)
pnm("j2k-check.pgm", img)
