"""Dataset loaders. Every loader returns ``x`` float32 (N, C, H, W) in [0, 1] and ``y`` int64 (N,)."""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SAMPLES_FILE = "fashion_mnist_512.npz"
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Format: two zero bytes, a dtype byte, a rank byte, ``rank`` big-endian uint32 dims, the data.
    """
    path = Path(path)
    opener: Callable = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4].hex()})")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    rank = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=rank, offset=4).astype(np.int64)
    offset = 4 + 4 * rank
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(f"{path}: IDX header says {tuple(dims)} ({expected} bytes), file has {len(data) - offset}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(tuple(dims)).astype(dtype.newbyteorder("="))


@functools.lru_cache(maxsize=4)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    arr = read_idx(path)
    arr.flags.writeable = False  # shared between callers
    return arr


def _read_idx_once(path: Path) -> np.ndarray:
    """``read_idx`` memoised per (path, mtime, size): repeated runs in one process (tests, sweeps)
    decompress the 47 MB of Fashion-MNIST pixels once. Callers get fresh float copies anyway."""
    st = path.stat()
    return _read_idx_cached(str(path), st.st_mtime_ns, st.st_size)


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (or ``root``).

    Args:
        split: "train" (60,000 images) or "test" (10,000).
        root: folder with the four ``*-ubyte.gz`` files; default /usr/share/datasets/fashion-mnist.
    Returns:
        x float32 (N, 1, 28, 28) in [0, 1], y int64 (N,).
    """
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    images = root / f"{prefix}-images-idx3-ubyte.gz"
    labels = root / f"{prefix}-labels-idx1-ubyte.gz"
    for p in (images, labels):
        if not p.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {p} not found. Install it with "
                f"`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass root= a folder "
                f"holding {images.name} and {labels.name}.")
    x = _read_idx_once(images)
    y = _read_idx_once(labels)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"unexpected Fashion-MNIST shapes: images {x.shape}, labels {y.shape}")
    xf = x.astype(np.float32)
    np.divide(xf, np.float32(255.0), out=xf)
    return xf[:, None], y.astype(np.int64)


def load_npz(path: str | os.PathLike, split: str | None = None):
    """Load ``x`` (and ``y`` if present) from an .npz file and validate them.

    With ``split`` ("train" or "test") and arrays ``x_<split>``/``y_<split>`` in the file (for
    "test" also ``x_val``/``y_val``), those are used; otherwise ``x``/``y``, whatever the split.

    ``x`` must have a batch dimension and at least one more ((N, C, H, W) images, (N, C, L)
    sequences, (N, features) vectors: whatever the model takes) and be finite. dtype: float32 is used as is, float64/float16 are
    cast to float32 (values kept), uint8 is divided by 255 (so 0..255 pixels map to [0, 1]).
    ``y``, when present, must be 1-D integers with one label per sample; it is returned as int64.

    A model with several inputs: a file without ``x`` holds one array per input, named as the
    model's inputs (``y`` for labels, optional); ``x`` is then a ``qexport.inputs.Inputs`` of
    them, in the file's order (convert matches them to the model's inputs by name).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001  (zip/format errors have many types)
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive with an array 'x', got a single array (.npy)")
    with npz:
        xkey, ykey = "x", "y"
        names = {"train": ("train",), "test": ("test", "val")}.get(split or "", ())
        for name in names:
            if f"x_{name}" in npz.files:
                xkey, ykey = f"x_{name}", f"y_{name}"
                break
        y = npz[ykey] if ykey in npz.files else None
        if xkey in npz.files:
            x = _input_array(path, xkey, npz[xkey])
        else:
            keys = [k for k in npz.files if k != "y" and not k.startswith(("x_", "y_"))]
            if not keys:
                raise ValueError(f"{path}: no array 'x'{' or ' + repr('x_' + split) if split else ''} "
                                 f"(found: {', '.join(npz.files) or 'none'}); a model with several inputs "
                                 f"takes one array per input name")
            if len(keys) == 1:
                raise ValueError(f"{path}: no array 'x' (found {keys[0]!r}{' and y' if y is not None else ''}): "
                                 f"name the input array x, or give one array per input of a model with several")
            from ..inputs import Inputs

            x = Inputs([_input_array(path, k, npz[k]) for k in keys], keys)
    if y is not None:
        if y.ndim != 1 or y.shape[0] != len(x):
            raise ValueError(f"{path}: 'y' must be 1-D with {len(x)} labels, got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: 'y' must hold integers, got {y.dtype}")
        y = y.astype(np.int64)
    return x, y


def _input_array(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """One input array of an .npz, checked and as float32 (see ``load_npz``)."""
    if x.ndim < 2:
        raise ValueError(f"{path}: {key!r} must be (N, ...) with one sample per row, e.g. (N, C, H, W) images or "
                         f"(N, features) vectors; got shape {x.shape}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype in (np.float64, np.float16):
        x = x.astype(np.float32)
    elif x.dtype != np.float32:
        raise ValueError(f"{path}: {key!r} must be float32 (or float64/float16/uint8), got {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: {key!r} contains NaN or infinite values")
    return np.ascontiguousarray(x)


def samples_dir() -> Path:
    """Folder of the shipped samples: $QEXPORT_SAMPLES_DIR, else ``samples/`` next to the package."""
    env = os.environ.get("QEXPORT_SAMPLES_DIR")
    if env:
        return Path(env)
    pkg = Path(__file__).resolve().parent.parent  # .../qexport
    for cand in (pkg / "samples", pkg.parent / "samples"):  # installed data, then the repo checkout
        if (cand / SAMPLES_FILE).is_file():
            return cand
    return pkg.parent / "samples"


def load_samples() -> tuple[np.ndarray, np.ndarray]:
    """The 512 shipped Fashion-MNIST test images (51-52 per class): x float32 (512,1,28,28), y int64."""
    path = samples_dir() / SAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: set QEXPORT_SAMPLES_DIR to the folder holding {SAMPLES_FILE}, "
            f"or create it with `python samples/make_samples.py`")
    x, y = load_npz(path)
    if y is None:
        raise ValueError(f"{path}: no labels 'y'")
    return x, y


def load_digits_dataset(split: str = "test", test_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images) as x float32 (N, 1, 8, 8) in [0, 1], y int64.

    The split is a fixed seeded permutation: the last ``test_fraction`` is "test".
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the 'digits' dataset needs scikit-learn: `pip install scikit-learn`") from None
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    idx = perm[len(y) - n_test:] if split == "test" else perm[: len(y) - n_test]
    return x[idx], y[idx]


DATASETS: dict[str, Callable[[str], tuple[np.ndarray, np.ndarray]]] = {
    "fashion-mnist": lambda split: load_fashion_mnist(split),
    "samples": lambda split: load_samples(),
    "digits": lambda split: load_digits_dataset(split),
}


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def _read_image(path: Path) -> np.ndarray:
    """One sample of an ImageFolder tree as (C, H, W): .npy arrays as they are, images via Pillow."""
    if path.suffix.lower() == ".npy":
        a = np.load(path, allow_pickle=False)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise ValueError(f"{path}: a .npy sample must be (H, W) or (C, H, W), got shape {a.shape}")
        return a
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"reading {path.suffix} images needs Pillow: `pip install pillow` "
                          f"(or store the samples as .npy arrays)") from None
    with Image.open(path) as im:
        mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
        a = np.asarray(im.convert(mode))
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def is_image_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder of class subfolders holding images or .npy samples."""
    p = Path(path)
    return p.is_dir() and any(
        d.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES + (".npy",) for f in d.iterdir()) for d in p.iterdir())


def load_image_folder(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """An ImageFolder tree (``path/<class>/<sample>``) as x float32 (N, C, H, W), y int64.

    Classes are the subfolder names in sorted order (label 0 = the first). Samples are images
    (Pillow; grayscale stays one channel, anything else becomes RGB) or .npy arrays ((H, W) or
    (C, H, W)); uint8 values are divided by 255, floats are kept. All samples must have one shape.
    """
    root = Path(path)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    xs, ys = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (root / name).iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES + (".npy",))
        for f in files:
            xs.append(_read_image(f))
            ys.append(label)
    if not xs:
        raise ValueError(f"{root}: no samples found (expected {root}/<class>/<image or .npy>)")
    shapes = sorted({a.shape for a in xs})
    if len(shapes) > 1:
        raise ValueError(f"{root}: samples of different shapes {shapes[:4]}; resize them to one shape first")
    x = np.stack(xs)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{root}: samples contain NaN or infinite values")
    return np.ascontiguousarray(x), np.asarray(ys, dtype=np.int64)


def load_folder(path: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, np.ndarray | None]:
    """A dataset folder: ``<split>/`` (an ImageFolder tree) or ``<split>.npz`` inside it (for
    "test" also ``val``), else the folder itself as one ImageFolder tree (every split)."""
    root = Path(path)
    for name in {"train": ("train",), "test": ("test", "val")}.get(split, (split,)):
        if (root / f"{name}.npz").is_file():
            return load_npz(root / f"{name}.npz", split)
        if is_image_folder(root / name):
            return load_image_folder(root / name)
    if is_image_folder(root):
        return load_image_folder(root)
    raise ValueError(f"{root}: no {split!r} split found: expected {split}/<class>/<samples>, {split}.npz, "
                     f"or <class>/<samples> directly in the folder")


def has_split(spec: str, split: str) -> bool:
    """True if the dataset ``spec`` has a split of its own named ``split`` (not one shared set)."""
    key = spec.lower().replace("_", "-")
    if key in ("fashion-mnist", "fashionmnist", "fmnist", "digits"):
        return True
    p = Path(spec)
    names = {"train": ("train",), "test": ("test", "val")}.get(split, (split,))
    if p.is_dir():
        return any((p / f"{n}.npz").is_file() or is_image_folder(p / n) for n in names)
    if p.is_file() and p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as npz:
            return any(f"x_{n}" in npz.files for n in names)
    return False


def load_dataset(spec: str, split: str = "test") -> tuple[np.ndarray, np.ndarray | None]:
    """Load a dataset by name ("fashion-mnist", "samples", "digits"), from an .npz path or a folder.

    "samples" has a single split (the same 512 images whatever ``split`` says). An .npz uses
    ``x_<split>``/``y_<split>`` when it has them, else ``x``/``y`` (``y`` may be None). A folder
    holds ``train/`` and ``test/`` ImageFolder trees or ``train.npz``/``test.npz``, or is one
    ImageFolder tree (``<class>/<image>``), see :func:`load_folder`.
    """
    key = spec.lower().replace("_", "-")
    if key in ("fashion-mnist", "fashionmnist", "fmnist"):
        key = "fashion-mnist"
    if key in DATASETS:
        return DATASETS[key](split)
    if Path(spec).is_dir():
        return load_folder(spec, split)
    if spec.endswith(".npz") or Path(spec).is_file():
        return load_npz(spec, split)
    raise ValueError(f"unknown dataset {spec!r}: use one of {', '.join(DATASETS)}, a path to an .npz file or a "
                     f"dataset folder")


def batches(x: np.ndarray, y: np.ndarray | None, batch_size: int, shuffle: bool = False,
            seed: int | None = None, drop_last: bool = False) -> Iterator[tuple]:
    """Yield ``(xb, yb)`` torch tensors (``yb`` None if ``y`` is None); a seeded permutation if shuffling."""
    import torch

    n = len(x)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        xb = torch.from_numpy(np.ascontiguousarray(x[idx]))
        yb = None if y is None else torch.from_numpy(np.ascontiguousarray(y[idx]))
        yield xb, yb
