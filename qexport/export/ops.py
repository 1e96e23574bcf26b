"""The op table moved to qexport.lower.ops (lowering calls the torch ops; export only reads the
table), so that dependencies run one way: export -> lower -> spec. Kept as an alias."""
from ..lower.ops import *  # noqa: F401,F403
from ..lower.ops import OPS, SCHEMAS, TRANSLATIONS, OpDef, quantize_op, weight_format  # noqa: F401
