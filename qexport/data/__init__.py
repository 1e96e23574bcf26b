"""Dataset loaders: Fashion-MNIST (Debian package), the shipped samples, sklearn digits, .npz files.

Every loader returns ``x`` float32 (N, C, H, W) in [0, 1] and ``y`` int64 (N,).
"""
from .loaders import (DATASETS, SAMPLES_FILE, batches, has_split, load_dataset, load_digits_dataset,
                      load_fashion_mnist, load_folder, load_image_folder, load_npz, load_samples, read_idx,
                      samples_dir)

__all__ = ["DATASETS", "SAMPLES_FILE", "batches", "has_split", "load_dataset", "load_digits_dataset",
           "load_fashion_mnist", "load_folder", "load_image_folder", "load_npz", "load_samples", "read_idx",
           "samples_dir"]
