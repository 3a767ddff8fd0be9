"""The 15 corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), 5 severities each, in numpy,
scipy and PIL only; adaptations to small images and to the missing frost photographs: docs/robustness.md.

Constants are those of the reference `make_cifar_c.py` (github.com/hendrycks/robustness); each
function says where it departs from it. A corruption takes and returns an ``H x W x C`` float image
in [0, 1] (C = 1 or 3) and draws only from the per-image ``numpy.random.Generator`` it is given,
never from numpy's global state, so a corrupted set is the same on every run and machine.
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

SEVERITIES = (1, 2, 3, 4, 5)
FAMILIES: dict[str, tuple[str, ...]] = {  # as in the paper's Figure 1
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS: tuple[str, ...] = tuple(name for names in FAMILIES.values() for name in names)
WORK_SIZE = 32  # the resolution the CIFAR constants were made for

# --- CIFAR-10-C constants (make_cifar_c.py), severity 1..5 ------------------------------------------
GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)  # std, in [0, 1] units
SHOT_NOISE = (500, 250, 100, 75, 50)  # photons per unit intensity
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)  # fraction of values set to 0 or 1
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))  # disk radius, alias blur
GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, max delta, iterations
MOTION_BLUR = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))  # radius, sigma (ImageMagick's)
ZOOM_BLUR = tuple(np.arange(1, top, 0.01) for top in (1.06, 1.11, 1.16, 1.21, 1.26))
SNOW = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # image weight, frost weight
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))  # fog weight, plasma wibble decay
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to HSV value
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # factor on the deviation from the per-channel mean
ELASTIC = tuple((32 * a, 32 * s, 32 * d) for a, s, d in
                ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)))
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # side factor of the BOX down- and up-sampling
JPEG_QUALITY = (80, 65, 58, 50, 40)

RGB_TO_GREY = np.array([0.299, 0.587, 0.114])
# Added before truncating to uint8, so that a value that is exactly k/255 in exact arithmetic is k,
# not k - 1 after a float rounding error (the reference truncates with np.uint8 too).
EPS = 1e-6


# --- per-pixel corruptions (native resolution) --------------------------------------------------------
def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x + rng.normal(size=x.shape, scale=GAUSSIAN_NOISE[severity - 1]), 0, 1)


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = SHOT_NOISE[severity - 1]
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """skimage.util.random_noise(mode='s&p', amount=c): each value, independently, with
    probability c becomes salt (1) or pepper (0), half and half."""
    hit = rng.random(x.shape) < IMPULSE_NOISE[severity - 1]
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt, x)


def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """HSV value + c, clipped. Hue and saturation fixed make RGB proportional to V, so the RGB ->
    HSV -> RGB round trip of the reference is ``rgb * V'/V`` (and ``V'`` for black); on one channel,
    V is the grey value itself."""
    value = x.max(axis=2, keepdims=True)
    new = np.clip(value + BRIGHTNESS[severity - 1], 0, 1)
    return np.clip(np.where(value > 0, x * new / np.where(value > 0, value, 1), new), 0, 1)


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * CONTRAST[severity - 1] + means, 0, 1)


def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """PIL BOX down to int(side * c), BOX back up (on the uint8 image, like the reference)."""
    h, w = x.shape[:2]
    c = PIXELATE[severity - 1]
    return _from_pil(_to_pil(x).resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX))


def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A PIL JPEG round trip at quality c (grey images as greyscale JPEG)."""
    buffer = io.BytesIO()
    _to_pil(x).save(buffer, "JPEG", quality=JPEG_QUALITY[severity - 1])
    with Image.open(buffer) as img:  # decoded as L or RGB, as it was written
        return _from_pil(img)


# --- spatial corruptions (run at WORK_SIZE for small images) -----------------------------------------
def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """The reference's anti-aliased disk kernel (radius <= 8, as all of DEFOCUS_BLUR's: a 17 x 17 grid
    and a 3 x 3 Gaussian), correlated with each channel."""
    radius, alias_blur = DEFOCUS_BLUR[severity - 1]
    xx, yy = np.meshgrid(np.arange(-8, 9), np.arange(-8, 9))
    kernel = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    kernel /= kernel.sum()
    # cv2.GaussianBlur(3, sigmaX): a separable kernel exp(-i^2 / 2 sigma^2), normalised,
    # borders reflected without repeating the edge (BORDER_REFLECT_101 == scipy's "mirror")
    g = np.exp(-(np.arange(-1, 2) ** 2) / (2 * alias_blur ** 2))
    g /= g.sum()
    kernel = ndimage.correlate1d(ndimage.correlate1d(kernel, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")
    return np.clip(_per_channel(x, lambda ch: ndimage.correlate(ch, kernel, mode="mirror")), 0, 1)


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma, delta, iterations = GLASS_BLUR[severity - 1]
    h, w = x.shape[:2]
    blurred = np.floor(_gaussian(x, sigma) * 255 + EPS).astype(np.uint8)  # the reference's uint8 round trip
    rows, cols = range(h - delta, delta, -1), range(w - delta, delta, -1)
    # The reference draws randint(-delta, delta) per pixel, in this loop order: the same draws here.
    shifts = rng.integers(-delta, delta, size=(iterations, len(rows), len(cols), 2)).tolist()
    pixels = blurred.reshape(h * w, -1).tolist()  # swapping list entries: ~50x faster than numpy items
    for it in range(iterations):
        for i, r in enumerate(rows):
            for j, col in enumerate(cols):
                dx, dy = shifts[it][i][j]
                a, b = r * w + col, (r + dy) * w + col + dx
                pixels[a], pixels[b] = pixels[b], pixels[a]
    out = np.asarray(pixels, dtype=np.float64).reshape(x.shape)
    return np.clip(_gaussian(out / 255.0, sigma), 0, 1)


def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ImageMagick's motion blur as re-implemented in numpy by the `imagecorruptions` package:
    a one-sided Gaussian-weighted trail of 2·radius + 1 pixel shifts along a random angle."""
    radius, sigma = MOTION_BLUR[severity - 1]
    return np.clip(_motion_blur(x, radius, sigma, rng.uniform(-45, 45)), 0, 1)


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    factors = ZOOM_BLUR[severity - 1]
    out = sum(_clipped_zoom(x, factor) for factor in factors)
    return np.clip((x + out) / (len(factors) + 1), 0, 1)


def snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, keep = SNOW[severity - 1]
    h, w = x.shape[:2]
    layer = _clipped_zoom(rng.normal(size=(h, w, 1), loc=loc, scale=scale), zoom)[..., 0]
    layer[layer < threshold] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255 + EPS) / 255  # the reference's uint8 PNG round trip
    layer = _motion_blur(layer[..., None], radius, sigma, rng.uniform(-135, -45))
    layer = np.round(np.clip(layer, 0, 1) * 255) / 255
    x = keep * x + (1 - keep) * np.maximum(x, _grey(x) * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1)


def frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """ADAPTED (docs/robustness.md): frost_texture in place of the reference's frost photographs (not shipped
    here), blended with the reference's weights."""
    weight_x, weight_frost = FROST[severity - 1]
    texture = frost_texture(x.shape[0], x.shape[1], rng)
    texture = _grey(texture) if x.shape[2] == 1 else texture
    return np.clip(weight_x * x + weight_frost * texture, 0, 1)


def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    amount, decay = FOG[severity - 1]
    h, w = x.shape[:2]
    max_val = x.max()
    x = x + amount * plasma_fractal(h, w, decay, rng)[..., None]
    return np.clip(x * max_val / (max_val + amount), 0, 1)


def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    alpha, sigma, affine = ELASTIC[severity - 1]
    h, w, channels = x.shape
    center = np.array([h, w], dtype=np.float32) // 2
    square = min(h, w) // 3
    # points as (x, y), as OpenCV takes them
    src = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    dst = src + rng.uniform(-affine, affine, size=src.shape).astype(np.float32)
    # cv2.getAffineTransform: M [x, y, 1]^T = dst for the three points. warpAffine(M) samples
    # dst(p) = src(M^-1 p).
    forward = np.linalg.solve(np.hstack([src.astype(np.float64), np.ones((3, 1))]), dst.astype(np.float64)).T
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    src_cols, src_rows = (inverse[i, 0] * cols + inverse[i, 1] * rows + inverse[i, 2] for i in range(2))
    x = _per_channel(x, lambda ch: ndimage.map_coordinates(ch, [src_rows, src_cols], order=1, mode="mirror"))
    # skimage.filters.gaussian(mode='reflect', truncate=3) of uniform noise, dx drawn first (sigma 0: the noise)
    dx, dy = ((ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3.0)
               * alpha).astype(np.float32) for _ in range(2))
    out = _per_channel(x, lambda ch: ndimage.map_coordinates(ch, [rows + dy, cols + dx], order=1, mode="reflect"))
    return np.clip(out, 0, 1)


CORRUPTION_FUNCTIONS: dict[str, Callable] = {name: globals()[name] for name in CORRUPTIONS}
SPATIAL = frozenset({"defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "snow", "frost", "fog",
                     "elastic_transform"})


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One ``H x W x C`` uint8 image under corruption ``name`` at ``severity`` (1-5), as uint8."""
    if name not in CORRUPTION_FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity}")
    x = image.astype(np.float64) / 255.0
    fn = CORRUPTION_FUNCTIONS[name]
    h, w = x.shape[:2]
    if name in SPATIAL and max(h, w) < WORK_SIZE:
        # Spatial constants are per pixel of 32 x 32: corrupt the upsampled image and add back only the
        # change, box-averaged, so resampling alone alters nothing (docs/robustness.md).
        up = _resize(x, WORK_SIZE, WORK_SIZE, Image.BILINEAR)
        delta = _resize(fn(up, severity, rng), w, h, Image.BOX) - _resize(up, w, h, Image.BOX)
        y = np.clip(x + delta, 0, 1)
    else:
        y = fn(x, severity, rng)
    return np.floor(np.clip(y, 0, 1) * 255 + EPS).astype(np.uint8)


def corrupt_set(images: np.ndarray, indices: np.ndarray, seed: int, workers: int = 1,
                on_done: Callable[[str], None] | None = None) -> np.ndarray:
    """Every image of ``images`` (uint8 N x C x H x W) under every corruption and severity: uint8 [corruption,
    severity, N, C, H, W], image n seeded by (seed, corruption, severity, indices[n]) alone (docs/robustness.md),
    whichever of the ``workers`` processes corrupts it (NumPy in small pieces, which threads would serialise).
    ``on_done(name)`` is called as each corruption is finished (progress)."""
    out = np.empty((len(CORRUPTIONS), len(SEVERITIES), *images.shape), dtype=np.uint8)
    with contextlib.ExitStack() as stack:
        parts = (_corrupt_one(images, indices, seed, k) for k in range(len(CORRUPTIONS)))
        if workers > 1:
            # spawn, not fork: the stage process may hold torch's thread pools, which a fork would copy
            # in an unusable state; a spawned worker imports only this module's NumPy/SciPy/PIL.
            pool = stack.enter_context(ProcessPoolExecutor(
                min(workers, len(CORRUPTIONS)), mp_context=multiprocessing.get_context("spawn"),
                initializer=_hold, initargs=(images, indices, seed)))
            parts = pool.map(_corrupt_held, range(len(CORRUPTIONS)))
        for k, part in enumerate(parts):
            out[k] = part
            if on_done is not None:
                on_done(CORRUPTIONS[k])
    return out


def _corrupt_one(images: np.ndarray, indices: np.ndarray, seed: int, k: int) -> np.ndarray:
    """Corruption ``k`` of every image at every severity: uint8 [severity, N, C, H, W]."""
    name = CORRUPTIONS[k]
    hwc = images.transpose(0, 2, 3, 1)
    out = np.empty((len(SEVERITIES), *images.shape), dtype=np.uint8)
    for s, severity in enumerate(SEVERITIES):
        for i in range(images.shape[0]):
            rng = np.random.default_rng([seed, k, severity, int(indices[i])])
            out[s, i] = corrupt(hwc[i], name, severity, rng).transpose(2, 0, 1)
    return out


_HELD: tuple[np.ndarray, np.ndarray, int] | None = None  # a worker process's images, sent once


def _hold(images: np.ndarray, indices: np.ndarray, seed: int) -> None:
    global _HELD
    _HELD = (images, indices, seed)


def _corrupt_held(k: int) -> np.ndarray:
    return _corrupt_one(*_HELD, k)


# --- helpers -------------------------------------------------------------------------------------------
def frost_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural frost layer (H x W x 3 in [0, 1]): a rough plasma fractal (patchy haze) plus
    thin bright ice-crystal streaks, blue-white, with a mean near that of the reference's 0.2-scaled
    frost photographs (~0.55). Not the published textures: frost numbers are not CIFAR-10-C's."""
    haze = plasma_fractal(h, w, 1.6, rng)
    streaks = np.zeros((h, w))
    for _ in range(max(4, (h * w) // 64)):
        r0, c0 = rng.uniform(0, h), rng.uniform(0, w)
        angle, length = rng.uniform(0, math.pi), rng.uniform(0.15, 0.5) * max(h, w)
        for t in np.linspace(0, length, int(length * 2) + 2):
            r, c = int(r0 + t * math.sin(angle)), int(c0 + t * math.cos(angle))
            if 0 <= r < h and 0 <= c < w:
                streaks[r, c] = 1.0
    streaks = ndimage.gaussian_filter(streaks, 0.5, mode="nearest")
    grey = np.clip(0.3 + 0.5 * haze + 0.7 * streaks, 0, 1)
    return grey[..., None] * np.array([0.85, 0.93, 1.0])


def plasma_fractal(h: int, w: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """The reference's diamond-square height map on the smallest power-of-two square covering h x w, scaled to
    [0, 1], then cropped to h x w."""
    mapsize = 1 << max(max(h, w) - 1, 1).bit_length()
    heights = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled_mean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while step >= 2:
        half = step // 2
        corners = heights[0:mapsize:step, 0:mapsize:step]
        square = corners + np.roll(corners, shift=-1, axis=0)
        square += np.roll(square, shift=-1, axis=1)
        heights[half:mapsize:step, half:mapsize:step] = wibbled_mean(square)
        centres = heights[half:mapsize:step, half:mapsize:step]  # corners, a view, are unchanged
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        heights[0:mapsize:step, half:mapsize:step] = wibbled_mean(left)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        heights[half:mapsize:step, 0:mapsize:step] = wibbled_mean(top)
        step //= 2
        wibble /= wibbledecay
    heights -= heights.min()
    return (heights / heights.max())[:h, :w]


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian on an H x W x C image: per channel, mode 'nearest', truncate 4."""
    return ndimage.gaussian_filter(x.astype(np.float64), sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


def _motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    width = 2 * radius + 1
    kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    point = (width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle)))
    hypot = math.hypot(*point)
    h, w = x.shape[:2]
    blurred = np.zeros_like(x, dtype=np.float64)
    for i in range(width):
        dy = -math.ceil((i * point[0]) / hypot - 0.5)
        dx = -math.ceil((i * point[1]) / hypot - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break  # the trail left the image
        # x translated by (dx, dy), the edge row / column repeated into the uncovered border
        blurred += kernel[i] * x[np.clip(np.arange(h) - dy, 0, h - 1)][:, np.clip(np.arange(w) - dx, 0, w - 1)]
    return blurred


def _clipped_zoom(img: np.ndarray, factor: float) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    img = ndimage.zoom(img[top:top + ch, left:left + cw], (factor, factor, 1), order=1)
    trim_top, trim_left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[trim_top:trim_top + h, trim_left:trim_left + w]


def _per_channel(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.stack([fn(x[:, :, c]) for c in range(x.shape[2])], axis=2)


def _grey(x: np.ndarray) -> np.ndarray:
    return x if x.shape[2] == 1 else (x @ RGB_TO_GREY)[..., None]


def _resize(x: np.ndarray, w: int, h: int, resample: int) -> np.ndarray:
    """Float per-channel resize with PIL (mode 'F': no rounding)."""
    return _per_channel(x, lambda ch: np.asarray(Image.fromarray(ch.astype(np.float32), mode="F")
                                                 .resize((w, h), resample), dtype=np.float64))


def _to_pil(x: np.ndarray) -> Image.Image:
    u8 = np.floor(np.clip(x, 0, 1) * 255 + EPS).astype(np.uint8)
    return Image.fromarray(u8[:, :, 0], mode="L") if x.shape[2] == 1 else Image.fromarray(u8, mode="RGB")


def _from_pil(img: Image.Image) -> np.ndarray:
    return np.atleast_3d(np.asarray(img, dtype=np.float64) / 255.0)  # an L image gains its channel axis
