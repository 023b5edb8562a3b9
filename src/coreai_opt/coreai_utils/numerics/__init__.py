"""Pure numpy algorithms: pruning masks and the sparse form. Never imports coreai."""

from coreai_opt.coreai_utils.numerics.kmeans import Palette, palettize
from coreai_opt.coreai_utils.numerics.masks import (
    all_finite,
    block_mask,
    magnitude_key,
    magnitude_mask,
    nm_mask,
    prune_count,
    select_lowest,
)
from coreai_opt.coreai_utils.numerics.quantize import Quantized, quantize
from coreai_opt.coreai_utils.numerics.sparse import (
    SparseWeight,
    pack_bits,
    pack_mask,
    to_sparse,
    unpack_bits,
    unpack_mask,
)

__all__ = [
    "Palette",
    "Quantized",
    "SparseWeight",
    "all_finite",
    "block_mask",
    "magnitude_key",
    "magnitude_mask",
    "nm_mask",
    "pack_bits",
    "pack_mask",
    "palettize",
    "prune_count",
    "quantize",
    "select_lowest",
    "to_sparse",
    "unpack_bits",
    "unpack_mask",
]
