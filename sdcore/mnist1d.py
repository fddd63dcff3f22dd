"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated offline from its published recipe.

Ten hand-drawn 12-point templates, one per digit, each turned into a 40-point signal by the recipe of
github.com/greydanus/mnist1d (``mnist1d/data.py`` and ``transform.py``), in its order:

1. pad the template (+1e-8, so it never equals 0) with 36..60 zeros and stretch it to 72 points (linear);
2. scale by 1 + 0.4 (u - 0.5);
3. translate circularly by 0..47 points;
4. fill the exact zeros (the padding) with correlated noise: 0.25 N(0, 1) smoothed by a Gaussian of std 2;
5. add iid noise 0.02 N(0, 1);
6. shear: subtract 0.75 (u - 0.5) * linspace(-0.5, 0.5);
7. subsample to 40 points (linear).

``size // 10`` examples per class are made class by class, shuffled, standardized to mean 0 and std 1
over all of them, and split 80% train / 20% test in that order. Random numbers come from a
``np.random.RandomState(seed)`` drawn in the reference's order, so for the same size and seed the arrays
equal ``mnist1d.data.make_dataset`` (tests/test_mnist1d.py checks it against the package); the published
dataset is ``size=5000, seed=42``. Only the draws run in a per-example loop; the rest is batched, 10,000
examples at a time.

Harder than the 8x8 digits: the paper reports 94% test accuracy for its CNN, 68% for an MLP and 32% for
logistic regression on the published dataset (sdlab's nets on it: BENCHMARKS.md, 'MNIST-1D').
"""
from __future__ import annotations

import functools

import numpy as np

SEED = 42  # the published dataset's seed: every sdlab run generates the same examples
TRAIN_SPLIT = 0.8
TEMPLATE_LEN = 12
PADDING = (36, 60)  # zeros appended to a template, drawn uniformly in [low, high]
SCALE_COEFF = 0.4
MAX_TRANSLATION = 48  # circular shifts 0..47
CORR_NOISE_SCALE = 0.25
CORR_NOISE_SIGMA = 2.0  # std, in points, of the Gaussian that correlates the background noise
IID_NOISE_SCALE = 2e-2
SHEAR_SCALE = 0.75
LENGTH = 40  # points per final signal
_EPS = 1e-8  # added to the template so that mask = (x != 0) tells signal from padding
_WIDE = TEMPLATE_LEN + PADDING[1]  # 72: the length every padded template is stretched to

CLASSES = tuple(str(k) for k in range(10))


def templates() -> np.ndarray:
    """float64 [10, 12]: the ten digit templates, each centred, unit-std, then shifted to start at 0, / 6."""
    x = np.asarray([
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ])
    x -= x.mean(1, keepdims=True)
    x /= x.std(1, keepdims=True)
    x -= x[:, :1]  # every signal starts (and ends) at 0
    return x / 6.0


def _stretch(y: np.ndarray, n: int) -> np.ndarray:
    """y [..., L] resampled linearly to n points over the same span: np.interp's arithmetic (the reference's
    scipy interp1d delegates to it), batched over the leading axes, so results are bit-identical."""
    xp, xv = np.linspace(0, 1, y.shape[-1]), np.linspace(0, 1, n)
    j = np.clip(np.searchsorted(xp, xv, side="right") - 1, 0, len(xp) - 2)
    out = (y[..., j + 1] - y[..., j]) / (xp[j + 1] - xp[j]) * (xv - xp[j]) + y[..., j]
    on_point = xv == xp[j]  # np.interp returns the sample itself there, not slope * 0 + sample
    out[..., on_point] = y[..., j[on_point]]
    out[..., xv == xp[-1]] = y[..., -1:]
    return out


def _padded_templates() -> np.ndarray:
    """float64 [10, 25, 72]: template k padded with PADDING[0] + i zeros, stretched to 72 points (step 1)."""
    t = templates() + _EPS
    return np.stack([np.stack([_stretch(np.concatenate([row, np.zeros(PADDING[0] + i)]), _WIDE)
                               for i in range(PADDING[1] - PADDING[0] + 1)]) for row in t])


_CHUNK = 10_000  # examples transformed at once: bounds the [chunk, 72] float64 work arrays at 10^6 examples


@functools.lru_cache(maxsize=2)  # one size is the usual case; 10^6 examples hold 320 MB
def generate(size: int = 5000, *, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train float64 [n_train, 40], y_train int64 [n_train], x_test [n_test, 40], y_test [n_test]) with
    n = 10 * (size // 10) examples, n_train = int(0.8 n). Cached: the arrays are read-only, copy to change."""
    if size < 10:
        raise ValueError(f"size must be at least 10 (one example per class), got {size}")
    per_class = size // 10
    n = 10 * per_class
    rs = np.random.RandomState(seed)
    y = np.repeat(np.arange(10), per_class)  # class by class, as the reference's loop makes them
    padded = _padded_templates()
    x = np.concatenate([_transform(padded, y[i:i + _CHUNK], rs) for i in range(0, n, _CHUNK)])  # [n, 40]
    order = rs.permutation(n)
    x, y = x[order], y[order]
    x = (x - x.mean()) / x.std()  # the recipe standardizes over all examples, test included
    cut = int(n * TRAIN_SPLIT)
    out = x[:cut], y[:cut], x[cut:], y[cut:]
    for a in out:
        a.flags.writeable = False
    return out


def _transform(padded: np.ndarray, y: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
    """Steps 1-7 for the examples of labels y [m], drawing from rs as the reference does: float64 [m, 40]."""
    from scipy.ndimage import gaussian_filter1d  # noqa: PLC0415 - a third of a second to import; only generating needs it

    m = len(y)
    # The reference draws, per example: pad, scale, translation, corr. noise, iid noise, shear. The legacy
    # generator's normals use rejection sampling, so the stream cannot be drawn in bulk and stay the same.
    pad, shift = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
    scale, shear = np.empty(m), np.empty(m)
    corr, iid = np.empty((m, _WIDE)), np.empty((m, _WIDE))
    for i in range(m):
        pad[i] = PADDING[0] + int(rs.rand() * (PADDING[1] - PADDING[0] + 1))
        scale[i] = 1 + SCALE_COEFF * (rs.rand() - 0.5)
        shift[i] = rs.choice(MAX_TRANSLATION)
        corr[i] = CORR_NOISE_SCALE * rs.randn(_WIDE)
        iid[i] = IID_NOISE_SCALE * rs.randn(_WIDE)
        shear[i] = SHEAR_SCALE * (rs.rand() - 0.5)
    x = padded[y, pad - PADDING[0]] * scale[:, None]  # [m, 72]
    x = np.take_along_axis(x, (np.arange(_WIDE) - shift[:, None]) % _WIDE, axis=1)  # x[(i - k) mod 72]
    mask = x != 0
    x = mask * x + (1 - mask) * gaussian_filter1d(corr, CORR_NOISE_SIGMA, axis=1)
    x = x + iid
    x = x - shear[:, None] * np.linspace(-0.5, 0.5, _WIDE)
    return _stretch(x, LENGTH)


def train_size(size: int) -> int:
    """Training examples ``generate(size)`` makes, without generating them."""
    return int(10 * (size // 10) * TRAIN_SPLIT)
