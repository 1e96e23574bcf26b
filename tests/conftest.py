"""Shared test configuration.

The test folders mirror the package (tests/spec, tests/quant, ..., tests/deploy) and have no
__init__.py: pytest imports each test module by its basename (so basenames must be unique), and
the helper modules in this folder (kernel_graphs.py) are importable because this folder is on
sys.path. Keep the top-level imports here torch-free: the kernel tests also run under
AddressSanitizer (.ci/sanitize.sh).

Markers (registered in pyproject.toml): slow (over ~20 s), arm (aarch64 cross-build and qemu),
ddp (torchrun). `python -m pytest -q` runs everything; `-m "not slow and not arm and not ddp"` is
the quick subset.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# convert's post-training fit (200 steps by default) is the subject of tests/nn/test_fit.py; every
# other conversion in the suite fits briefly, or a CLI test would cost a minute on shared cores.
os.environ.setdefault("QEXPORT_FIT_STEPS", "10")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # pytest's default import mode adds it too; --import-mode=importlib does not
    sys.path.insert(0, str(TESTS))
