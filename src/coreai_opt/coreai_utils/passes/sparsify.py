"""The sparsify pass: validate, plan per weight (read-only), then apply (the only mutation)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.ir.constants import read_constant
from coreai_opt.coreai_utils.ir.rewrite import (
    emit_palettized_chain,
    emit_quantized_chain,
    emit_sparse_chain,
    replace_constant,
)
from coreai_opt.coreai_utils.ir.weights import find_weights
from coreai_opt.coreai_utils.numerics.activations import input_norms
from coreai_opt.coreai_utils.numerics.kmeans import Palette, palettize
from coreai_opt.coreai_utils.numerics.masks import all_finite
from coreai_opt.coreai_utils.numerics.prune import prune_block, prune_magnitude, prune_nm
from coreai_opt.coreai_utils.numerics.quantize import Quantized, quantize
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight, to_sparse
from coreai_opt.coreai_utils.numerics.sparsegpt import sparsegpt_weight
from coreai_opt.coreai_utils.numerics.wanda import wanda_block_mask, wanda_mask, wanda_nm_mask
from coreai_opt.coreai_utils.passes.options import Algorithm, SparsifyOptions, validate_options
from coreai_opt.coreai_utils.passes.plan import Mode, WeightPlan, plan_weight

if TYPE_CHECKING:
    from coreai_opt.coreai_utils.calibration import Calibration

__all__ = [
    "SparsifyResult",
    "WeightOutcome",
    "sparsify_program",
    "sparsify_weights",
    "sparsify_with_report",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightOutcome:
    """What happened to one candidate weight (a report row).

    ``name`` is the weight's id with its source location, ``id`` the stable ``@graph/wK``.

    ``mode`` (the pruning) is None when the weight stayed dense, and ``reason`` then says why;
    ``joint`` names the storage of the kept values (``int8``..., ``palettize4``), None when
    they keep the weight's dtype; a
    compressed weight may still carry a ``reason`` noting a downgrade (block -> unstructured).
    ``sparsity`` is the achieved fraction of zeros, None for weights left dense (not read).
    ``bytes_after`` counts the stored data (values, mask, and any quantization metadata).
    ``algorithm`` is how the pruned elements were chosen (``magnitude``, ``wanda``,
    ``sparsegpt``), None for weights left dense; a fallback from the requested algorithm
    is explained in ``reason``.
    """

    name: str
    id: str
    shape: tuple[int, ...]
    dtype: str
    consumers: tuple[str, ...]
    kind: str
    mode: str | None
    joint: str | None
    reason: str | None
    sparsity: float | None
    bytes_before: int
    bytes_after: int
    algorithm: str | None = None


@dataclass(frozen=True)
class SparsifyResult:
    """The sparsified program and one outcome per candidate weight, in IR order."""

    program: AIProgram
    weights: tuple[WeightOutcome, ...]


def sparsify_weights(
    coreai_program: AIProgram,
    target_sparsity: float | None = 0.5,
    block_size: int | None = None,
    n_m_ratio: tuple[int, int] | None = None,
    quantize_dtype: DType | None = None,
    palettize_nbits: int | None = None,
    weight_num_threshold: int = 1024,
    in_place: bool = False,  # noqa: FBT001, FBT002
    *,
    calibration: Calibration | None = None,
    algorithm: str | None = None,
) -> AIProgram:
    """Sparsify the weights of a Core AI program with Core AI ops.

    Every ``coreai.constant`` of type f32, f16 or bf16 with a static shape, in every graph of
    the module (nested ones included), whose every consumer is a weight-consuming op
    (``batch_matmul``, ``broadcasting_batch_matmul``, ``conv2d``, ``conv3d``,
    ``conv_transpose2d``, ``conv_transpose3d``, ``gather_nd``, ``transpose``) is a candidate.
    A candidate with at least ``weight_num_threshold`` elements is pruned and replaced by
    ``constant(values) + constant(ui1 mask) -> build_sparse_with_bitmask ->
    sparse_with_bitmask_to_dense``; the decompressed weight is exactly the pruned weight
    (kept values bit-identical, pruned ones +0.0). Data is stored in resource blobs.

    Channel axes come from the consumers: for ``y = x @ W`` the output axis of ``W`` is its
    last and the input axis the one before (swapped for ``y = W @ x``), mapped back through
    any ``transpose`` permutations (so a torch ``Linear`` weight ``[out, in]`` has output axis
    0); conv weights ``[C_out, C_in/groups, k...]`` have 0 and 1, transposed-conv weights
    ``[C_in, C_out/groups, k...]`` 1 and 0; embedding tables read by ``gather_nd`` 0 and 1.
    Consumers that disagree leave the axes unknown.

    Modes:
      * unstructured (``target_sparsity``): exactly ``n = floor(size * target_sparsity)``
        lowest-|w| elements become zero, ties broken by flat index (lower first). Existing
        zeros rank lowest, so the result has ``max(n, existing zeros)`` zeros.
      * block (``block_size`` with ``target_sparsity``; linear and conv only): blocks of
        ``block_size`` consecutive output channels at one position of the other axes are
        scored by L2 norm and the ``floor(number_of_blocks * target_sparsity)`` lowest are
        zeroed whole (a trailing partial block counts as a block; ties by block index).
        Other candidates (embeddings, unknown axes) are pruned unstructured, with a
        warning. ``block_size`` above the output channel count: skipped with a warning.
      * n:m (``n_m_ratio`` with ``target_sparsity=None``; linear and conv only): in every
        group of ``m`` consecutive input channels the ``n`` lowest-|w| are zeroed (ties by
        index); a trailing partial group acts as if zero-padded to ``m``. Other candidates,
        and weights with fewer than ``m`` input channels, stay dense with a warning.

    A weight containing NaN or Inf is left dense with a warning (its magnitudes have no
    meaningful order). Weights that cannot be compressed are skipped with a ``logging``
    warning naming them; only bad arguments raise.

    Calibration-aware pruning (keyword-only ``calibration`` from
    :func:`~coreai_opt.coreai_utils.collect_calibration`, and ``algorithm``):
      * ``"magnitude"`` (the default without calibration): as above.
      * ``"wanda"`` (the default with calibration): elements are scored
        ``|W_ij| * ||X_j||_2`` (``X_j``: the weight's input channel j over all calibration
        rows; for convolutions, each unfolded patch column). Unstructured: in each output
        channel (the slice at one index of the output axis) the
        ``floor(slice_size * target_sparsity)`` lowest scores become zero, ties by index
        within the slice, so the weight loses ``channels * floor(slice_size * s)`` elements
        (this replaces the whole-tensor count of magnitude pruning); n:m: the n lowest
        scores in each group of m input channels; block: blocks scored by the L2 norm of
        their scores. Kept values stay bit-identical.
      * ``"sparsegpt"``: the kept values are updated to minimise ``||W X - W' X||^2`` on the
        calibration inputs (Hessian ``X^T X`` with 1 % mean-diagonal dampening, columns in
        blocks of 128, the mask chosen per block: ``floor(rows * 128 * s)`` elements per
        block; n:m masks chosen inside the sweep). Kept values therefore change; pruned
        positions are exact zeros. Dead input channels (always zero in calibration) are
        zeroed first. fp16/bf16 weights are computed in float32 (the Hessian in float64)
        and rounded once. Block mode falls back to wanda with a warning.
      * Weights without statistics (embedding tables read by ``gather_nd``, consumers the
        capture cannot see, weights with more than ``max_gram_channels`` input columns for
        sparsegpt) fall back sparsegpt -> wanda -> magnitude; the reason is in the weight's
        report row. Joint quantization and palettization apply after pruning as usual.

    Args:
        coreai_program: the program to sparsify.
        target_sparsity: fraction in [0, 1] of elements to zero; mutually exclusive with
            ``n_m_ratio`` (pass ``None`` to use ``n_m_ratio``).
        block_size: block sparsity along the output channel axis; must be > 1.
        n_m_ratio: ``(n, m)``, zero ``n`` of every ``m`` along the input channel axis.
        quantize_dtype: storage type of the non-zero values (``DType.INT8``,
            ``DType.UINT8``, ``DType.FP8_E4M3FN``, ``DType.FP8_E5M2``); the string values
            (``"int8"``...) are accepted too.
        palettize_nbits: palettize the non-zero values with ``2**nbits`` clusters,
            nbits in {1, 2, 3, 4, 6, 8}.
        weight_num_threshold: minimum element count of a weight to compress it.
        in_place: mutate and return ``coreai_program`` itself; otherwise it is left
            untouched and a new program is returned.

    Returns:
        The sparsified program.

    Raises:
        TypeError: ``coreai_program`` is not an ``AIProgram``; an argument has the wrong
            type (these errors are also ``ValueError``s).
        ValueError: both or neither of ``target_sparsity`` and ``n_m_ratio`` are set; both
            ``quantize_dtype`` and ``palettize_nbits`` are set; ``block_size`` is combined
            with ``n_m_ratio``; ``quantize_dtype`` is not an allowed type;
            ``palettize_nbits`` is not in {1, 2, 3, 4, 6, 8}; ``block_size`` is not greater
            than 1; ``n_m_ratio`` is not a length-2 pair of ints with ``m > 0`` and
            ``0 <= n <= m``; ``target_sparsity`` is outside [0, 1] or NaN;
            ``weight_num_threshold`` is negative; ``algorithm`` is not one of
            ``"magnitude"``, ``"wanda"``, ``"sparsegpt"``, or needs a calibration that is
            not given.
    """
    return sparsify_with_report(
        coreai_program,
        target_sparsity=target_sparsity,
        block_size=block_size,
        n_m_ratio=n_m_ratio,
        quantize_dtype=quantize_dtype,
        palettize_nbits=palettize_nbits,
        weight_num_threshold=weight_num_threshold,
        in_place=in_place,
        calibration=calibration,
        algorithm=algorithm,
    ).program


def sparsify_with_report(
    coreai_program: AIProgram,
    target_sparsity: float | None = 0.5,
    block_size: int | None = None,
    n_m_ratio: tuple[int, int] | None = None,
    quantize_dtype: DType | None = None,
    palettize_nbits: int | None = None,
    weight_num_threshold: int = 1024,
    in_place: bool = False,  # noqa: FBT001, FBT002
    *,
    calibration: Calibration | None = None,
    algorithm: str | None = None,
    on_weight: Callable[[int, int, WeightOutcome], None] | None = None,
) -> SparsifyResult:
    """:func:`sparsify_weights`, also returning what happened to each candidate weight.

    ``on_weight(done, total, outcome)`` is called after each candidate weight (for progress
    display); ``total`` is the number of candidates.
    """
    if not isinstance(coreai_program, AIProgram):
        kind = type(coreai_program).__name__
        msg = f"coreai_program must be a coreai.authoring.AIProgram, got {kind}"
        raise TypeError(msg)
    from coreai_opt.coreai_utils.calibration import Calibration  # noqa: PLC0415

    if calibration is not None and not isinstance(calibration, Calibration):
        msg = f"calibration must be a Calibration or None, got {type(calibration).__name__}"
        raise TypeError(msg)
    options = validate_options(
        target_sparsity=target_sparsity,
        block_size=block_size,
        n_m_ratio=n_m_ratio,
        quantize_dtype=quantize_dtype,
        palettize_nbits=palettize_nbits,
        weight_num_threshold=weight_num_threshold,
        algorithm=algorithm,
        calibrated=calibration is not None,
    )
    if not isinstance(in_place, bool):
        msg = f"in_place must be a bool, got {in_place!r}"
        raise TypeError(msg)
    program = coreai_program if in_place else copy.deepcopy(coreai_program)
    outcomes = sparsify_program(program, options, on_weight, calibration)
    return SparsifyResult(program, tuple(outcomes))


def sparsify_program(
    program: AIProgram,
    options: SparsifyOptions,
    on_weight: Callable[[int, int, WeightOutcome], None] | None = None,
    calibration: Calibration | None = None,
) -> list[WeightOutcome]:
    """Apply ``options`` to ``program`` in place; one outcome per candidate weight."""
    module = program._module._mlir_module  # noqa: SLF001
    plans = [plan_weight(site, options, calibration) for site in find_weights(module)]
    outcomes: list[WeightOutcome] = []
    with module.context:
        for plan in plans:
            if plan.warn:
                _warn(plan, plan.reason)
            outcome = _outcome(plan, None) if plan.mode is None else _apply(plan, options)
            outcomes.append(outcome)
            if on_weight is not None:
                on_weight(len(outcomes), len(plans), outcome)
        module.operation.verify()
    return outcomes


@dataclass(frozen=True)
class _Compressed:
    """The numeric result for one weight, ready to be written into the IR."""

    sparse: SparseWeight
    joint: Quantized | Palette | None
    note: str | None


def _apply(plan: WeightPlan, options: SparsifyOptions) -> WeightOutcome:
    site = plan.site
    try:
        weight = read_constant(site.op, site.dtype)
    except ValueError as error:
        return _skip(plan, f"could not read the constant: {error}")
    if not all_finite(weight):
        return _skip(plan, "contains NaN or Inf")
    try:
        sparse = prune(weight, plan, options)
        del weight  # the copy read from the IR: free it before the joint step
        compressed = _joint(sparse, plan, options)
    except (ArithmeticError, MemoryError, ValueError) as error:
        return _skip(plan, f"could not compress: {type(error).__name__}: {error}")
    if compressed.note:
        _warn(plan, compressed.note)
    sparse, joint = compressed.sparse, compressed.joint
    stored = -(-site.size // 8)  # the bit mask
    if isinstance(joint, Quantized):
        replacement = emit_quantized_chain(site.op, joint)
        stored += joint.nbytes
        joint_name: str | None = str(joint.dtype)
    elif isinstance(joint, Palette):
        replacement = emit_palettized_chain(site.op, joint, sparse)
        stored += -(-joint.indices.size * joint.nbits // 8) + joint.lut.nbytes
        joint_name = f"palettize{joint.nbits}"
    else:
        replacement = emit_sparse_chain(site.op, sparse)
        stored += sparse.values.nbytes
        joint_name = None
    replace_constant(site.op, replacement)
    return _outcome(plan, sparse, compressed.note, joint=joint_name, bytes_after=stored)


def _joint(sparse: SparseWeight, plan: WeightPlan, options: SparsifyOptions) -> _Compressed:
    """Quantize or palettize the kept values of ``sparse`` as configured (pure numpy)."""
    wanted = options.quantize_dtype or (
        f"palettize{options.palettize_nbits}" if options.palettize_nbits else None
    )
    if wanted is None:
        return _Compressed(sparse, None, None)
    if sparse.values.size == 0:
        note = f"no non-zero values left; {wanted} skipped, stored as plain sparse"
        return _Compressed(sparse, None, note)
    if options.quantize_dtype is not None:
        return _Compressed(
            sparse, quantize(sparse, options.quantize_dtype, plan.site.out_axis), None
        )
    return _Compressed(sparse, palettize(sparse.values, options.palettize_nbits or 8), None)


def _warn(plan: WeightPlan, message: str | None) -> None:
    site = plan.site
    _log.warning(
        "weight %s (%s -> %s): %s",
        site.name,
        "x".join(map(str, site.shape)),
        ", ".join(site.consumers),
        message,
    )


def _skip(plan: WeightPlan, reason: str) -> WeightOutcome:
    _warn(plan, f"{reason}; left dense")
    return _outcome(plan, None, reason)


def _outcome(
    plan: WeightPlan,
    sparse: SparseWeight | None,
    reason: str | None = None,
    *,
    joint: str | None = None,
    bytes_after: int | None = None,
) -> WeightOutcome:
    site = plan.site
    before = site.size * site.dtype.itemsize
    return WeightOutcome(
        name=site.name,
        id=site.id,
        shape=site.shape,
        dtype=str(site.dtype),
        consumers=site.consumers,
        kind=site.kind.value,
        mode=plan.mode.value if sparse is not None and plan.mode is not None else None,
        joint=joint,
        reason=reason or plan.reason,
        sparsity=sparse.sparsity if sparse is not None else None,
        bytes_before=before,
        bytes_after=before if bytes_after is None else bytes_after,
        algorithm=plan.algorithm.value if sparse is not None else None,
    )


def prune(weight: np.ndarray, plan: WeightPlan, options: SparsifyOptions) -> SparseWeight:
    """The sparse form of ``weight`` under ``plan`` (pure numpy, on the fast path)."""
    site = plan.site
    if plan.algorithm is not Algorithm.MAGNITUDE and plan.stats is not None:
        return _prune_calibrated(weight, plan, options)
    if plan.mode is Mode.N_M and options.n_m_ratio is not None and site.in_axis is not None:
        return prune_nm(weight, *options.n_m_ratio, axis=site.in_axis)
    sparsity = options.target_sparsity if options.target_sparsity is not None else 0.0
    if plan.mode is Mode.BLOCK and options.block_size is not None and site.out_axis is not None:
        return prune_block(weight, sparsity, options.block_size, axis=site.out_axis)
    return prune_magnitude(weight, sparsity)


def _prune_calibrated(
    weight: np.ndarray, plan: WeightPlan, options: SparsifyOptions
) -> SparseWeight:
    """Wanda or SparseGPT for a weight whose statistics fit it (checked by the plan)."""
    site, stats = plan.site, plan.stats
    if stats is None or site.out_axis is None or site.in_axis is None:
        msg = "calibrated pruning needs statistics and channel axes"
        raise ValueError(msg)
    sparsity = options.target_sparsity if options.target_sparsity is not None else 0.0
    n_m = options.n_m_ratio if plan.mode is Mode.N_M else None
    if plan.algorithm is Algorithm.SPARSEGPT:
        if n_m is not None:
            return sparsegpt_weight(weight, stats, site.out_axis, site.in_axis, n_m=n_m)
        return sparsegpt_weight(weight, stats, site.out_axis, site.in_axis, sparsity=sparsity)
    norms = input_norms(stats, site.shape, site.out_axis, site.in_axis)
    if n_m is not None:
        keep = wanda_nm_mask(weight, norms, *n_m, axis=site.in_axis)
    elif plan.mode is Mode.BLOCK and options.block_size is not None:
        keep = wanda_block_mask(weight, norms, sparsity, options.block_size, site.out_axis)
    else:
        keep = wanda_mask(weight, norms, sparsity, site.out_axis)
    return to_sparse(weight, keep)
