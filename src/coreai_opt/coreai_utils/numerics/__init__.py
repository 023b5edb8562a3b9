"""Pure numpy algorithms: pruning masks and the sparse form. Never imports coreai."""

from coreai_opt.coreai_utils.numerics.masks import (
    block_mask,
    magnitude_key,
    magnitude_mask,
    nm_mask,
    prune_count,
    select_lowest,
)
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, pack_mask, to_sparse, unpack_mask

__all__ = [
    "SparseWeight",
    "block_mask",
    "magnitude_key",
    "magnitude_mask",
    "nm_mask",
    "pack_mask",
    "prune_count",
    "select_lowest",
    "to_sparse",
    "unpack_mask",
]
