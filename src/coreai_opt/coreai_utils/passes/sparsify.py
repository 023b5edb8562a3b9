"""The sparsify pass: validate, plan per weight (read-only), then apply (the only mutation)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import numpy as np
from coreai._compiler.ir import Module
from coreai.authoring import AIProgram

from coreai_opt.coreai_utils.calibration.record import Calibration
from coreai_opt.coreai_utils.dtypes import DType
from coreai_opt.coreai_utils.ir.rewrite import (
    emit_palettized_chain,
    emit_quantized_chain,
    emit_sparse_chain,
    replace_constant,
)
from coreai_opt.coreai_utils.ir.weights import find_weights
from coreai_opt.coreai_utils.memory import return_free_memory
from coreai_opt.coreai_utils.numerics.kmeans import Palette
from coreai_opt.coreai_utils.numerics.quantize import Quantized
from coreai_opt.coreai_utils.numerics.sparse import SparseWeight
from coreai_opt.coreai_utils.passes.compress import Compressed, compress_values, prune
from coreai_opt.coreai_utils.passes.control import (
    OVERRIDABLE,
    SPARSIFY_CLEARS,
    dense_reason,
    resolve_all,
)
from coreai_opt.coreai_utils.passes.options import SparsifyOptions, validate_options
from coreai_opt.coreai_utils.passes.outcomes import (
    COMPRESS_ERRORS,
    SparsifyResult,
    WeightOutcome,
    read_weight,
    warn_weight,
    working_copy,
)
from coreai_opt.coreai_utils.passes.plan import WeightPlan, plan_weight
from coreai_opt.coreai_utils.passes.runner import Encoded, PassSpec, Settings, apply_each

__all__ = [
    "Settings",
    "SparsifyResult",
    "WeightOutcome",
    "encode_pruned",
    "plan_sparsify",
    "sparsify_program",
    "sparsify_weights",
    "sparsify_with_report",
]


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
    exclude: Iterable[str] = (),
    overrides: Mapping[str, Mapping[str, object] | None] | None = None,
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

    Per-weight control (keyword-only):
      * ``exclude``: glob patterns (``fnmatch``, case-sensitive; a single string is one
        pattern) matched against each weight's id (``@main/w3``) and readable path (the
        module call stack recorded by coreai-torch, e.g. ``BertModel$1/.../Linear$2``); a
        matching weight stays dense with reason "excluded by <pattern>".
      * ``overrides``: pattern -> option values that replace the call's for the matching
        weights (``target_sparsity``, ``n_m_ratio``, ``block_size``, ``quantize_dtype``,
        ``palettize_nbits``, ``weight_num_threshold``, ``algorithm``), or None to leave them
        dense. Patterns are globs as above or the selectors ``kind:linear``, ``kind:conv``,
        ``kind:embedding``, ``kind:other``. ``exclude`` wins; then the first matching
        pattern in the mapping's order. An override's value for one of a mutually exclusive
        pair clears the other unless it sets both: ``n_m_ratio`` clears ``target_sparsity``
        and ``block_size``, ``target_sparsity`` or ``block_size`` clear ``n_m_ratio``,
        ``quantize_dtype`` and ``palettize_nbits`` clear each other. Each override's merged
        options are validated like the top-level arguments (same errors, prefixed with
        ``overrides['<pattern>']``); unknown keys are a ``ValueError``; a pattern that
        matches no weight logs a warning.

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
            not given; an ``exclude`` or ``overrides`` pattern is not a non-empty string,
            an unknown ``kind:`` selector, or an override has unknown keys or invalid
            merged options.
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
        exclude=exclude,
        overrides=overrides,
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
    exclude: Iterable[str] = (),
    overrides: Mapping[str, Mapping[str, object] | None] | None = None,
    on_weight: Callable[[int, int, WeightOutcome], None] | None = None,
) -> SparsifyResult:
    """:func:`sparsify_weights`, also returning what happened to each candidate weight.

    ``on_weight(done, total, outcome)`` is called after each candidate weight (for progress
    display); ``total`` is the number of candidates.
    """
    settings = _PASS.settings(coreai_program, calibration, exclude, overrides, locals())
    program = working_copy(coreai_program, in_place)
    outcomes = sparsify_program(program, settings, on_weight)
    return_free_memory()
    return SparsifyResult(program, tuple(outcomes))


def plan_sparsify(
    coreai_program: AIProgram,
    target_sparsity: float | None = 0.5,
    block_size: int | None = None,
    n_m_ratio: tuple[int, int] | None = None,
    quantize_dtype: DType | None = None,
    palettize_nbits: int | None = None,
    weight_num_threshold: int = 1024,
    *,
    calibration: Calibration | None = None,
    algorithm: str | None = None,
    exclude: Iterable[str] = (),
    overrides: Mapping[str, Mapping[str, object] | None] | None = None,
) -> tuple[WeightPlan, ...]:
    """The plan :func:`sparsify_weights` would follow, one record per candidate weight.

    A dry run: the same validation, no weight data is read and nothing is changed. Each
    plan has the weight's options (after ``exclude``/``overrides``), its mode or the reason
    it stays dense, and its algorithm.
    """
    settings = _PASS.settings(coreai_program, calibration, exclude, overrides, locals())
    return tuple(_plans(coreai_program._module._mlir_module, settings))  # noqa: SLF001


_PASS = PassSpec(OVERRIDABLE, validate_options, SPARSIFY_CLEARS)


def _plans(module: Module, settings: Settings[SparsifyOptions]) -> list[WeightPlan]:
    """One plan per candidate weight (read-only); warns about patterns matching nothing."""
    plans = []
    for site, options, pattern in resolve_all(
        find_weights(module), settings.control, settings.options
    ):
        if options is None:
            reason = dense_reason(settings.control, pattern or "")
            plans.append(WeightPlan(site, None, reason, rule=pattern))
        else:
            plan = plan_weight(site, options, settings.calibration)
            plans.append(replace(plan, rule=pattern))
    return plans


def sparsify_program(
    program: AIProgram,
    settings: Settings[SparsifyOptions],
    on_weight: Callable[[int, int, WeightOutcome], None] | None = None,
) -> list[WeightOutcome]:
    """Apply ``settings`` to ``program`` in place; one outcome per candidate weight."""
    plans = _plans(program._module._mlir_module, settings)  # noqa: SLF001
    return apply_each(
        program, plans, _apply, lambda plan: _outcome(plan, None), on_weight=on_weight
    )


def _apply(plan: WeightPlan) -> WeightOutcome:
    site, options = plan.site, plan.options
    if options is None:
        msg = "a plan to compress carries its options"
        raise ValueError(msg)
    weight = read_weight(site)
    if isinstance(weight, str):
        return _skip(plan, weight)
    try:
        pruned = prune(weight, plan, options)
        del weight  # the copy read from the IR: free it before the joint step
        encoded, compressed = encode_pruned(pruned, plan)
    except COMPRESS_ERRORS as error:
        return _skip(plan, f"could not compress: {type(error).__name__}: {error}")
    if compressed.note:
        _warn(plan, compressed.note)
    replace_constant(site.op, encoded.emit(site.op))
    return _outcome(
        plan,
        compressed.sparse,
        compressed.note,
        joint=encoded.joint or None,
        bytes_after=encoded.bytes_after,
    )


def encode_pruned(pruned: SparseWeight, plan: WeightPlan) -> tuple[Encoded, Compressed]:
    """The kept values of ``pruned`` quantized or palettized as ``plan`` says, and how to
    store them (``Encoded.joint`` is ``""`` for plain sparse values)."""
    options = plan.options
    if options is None:
        msg = "a plan to compress carries its options"
        raise ValueError(msg)
    dtype, size = pruned.values.dtype, plan.site.size
    compressed = compress_values(pruned, plan, options)
    sparse, joint = compressed.sparse, compressed.joint
    stored = -(-size // 8)  # the bit mask
    if isinstance(joint, Quantized):
        quantized = joint
        encoded = Encoded(
            emit=lambda op: emit_quantized_chain(op, quantized),
            joint=str(quantized.dtype),
            bytes_after=stored + quantized.nbytes,
            decoded=lambda: quantized.dequantize().astype(dtype),
        )
    elif isinstance(joint, Palette):
        palette = joint

        def decoded() -> np.ndarray:
            dense = np.zeros(sparse.shape, dtype=dtype)
            dense[sparse.mask] = palette.decode()
            return dense

        encoded = Encoded(
            emit=lambda op: emit_palettized_chain(op, palette, sparse),
            joint=f"palettize{palette.nbits}",
            bytes_after=stored + -(-palette.indices.size * palette.nbits // 8) + palette.lut.nbytes,
            decoded=decoded,
        )
    else:
        encoded = Encoded(
            emit=lambda op: emit_sparse_chain(op, sparse),
            joint="",
            bytes_after=stored + sparse.values.nbytes,
            decoded=sparse.dense,
        )
    return encoded, compressed


def _warn(plan: WeightPlan, message: str | None) -> None:
    warn_weight(plan.site, message)


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
    before = site.nbytes
    return WeightOutcome.of(
        site,
        mode=plan.mode.value if sparse is not None and plan.mode is not None else None,
        joint=joint,
        reason=reason or plan.reason,
        sparsity=sparse.sparsity if sparse is not None else None,
        bytes_before=before,
        bytes_after=before if bytes_after is None else bytes_after,
        algorithm=plan.algorithm.value if sparse is not None else None,
    )
