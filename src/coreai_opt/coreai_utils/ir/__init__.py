"""The only code that touches the Core AI bindings (``coreai._compiler``)."""

from coreai_opt.coreai_utils.ir.constants import ConstantReadError, read_constant
from coreai_opt.coreai_utils.ir.rewrite import emit_sparse_chain, replace_constant
from coreai_opt.coreai_utils.ir.weights import LayerKind, WeightSite, find_weights

__all__ = [
    "ConstantReadError",
    "LayerKind",
    "WeightSite",
    "emit_sparse_chain",
    "find_weights",
    "read_constant",
    "replace_constant",
]
