"""coreai_opt: post-training weight compression for Core AI programs."""

__all__: list[str] = []
