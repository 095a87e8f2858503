"""runtime.fid through torch-fidelity's own code path (its InceptionV3 port, resize to 299, feature
statistics, Fréchet distance) with an Inception weights file the test writes: random weights with
exactly the keys and shapes torch-fidelity's ``FeatureExtractorInceptionV3`` loads (strictly) from
``feature_extractor_weights_path``. No network: the download is never reached.

The features are taken at the 64-channel pool (``feature_layer_fid="64"``), which stops the network
after its first convolutions: the same extractor, weights file and statistics, at a tenth of the
2048-pool's cost on a CPU.
"""
from __future__ import annotations

import math
import urllib.error

import pytest
import torch

from augflow_dsl.runtime.fid import FIDError, UInt8Images, check_fid_data, fid


def write_random_inception_weights(path, seed: int = 0) -> None:
    """A state dict in torch-fidelity's InceptionV3 format: its own module tree, read off an
    instance whose loading is skipped; convolutions He-initialised so features keep their scale
    through the ReLUs, batch norms at identity statistics (weight 1, bias 0, mean 0, var 1)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # the file below is empty
            return None

    empty = path.with_suffix(".empty.pt")
    torch.save({}, empty)
    shapes = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty)).state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in shapes.items():
        if k.endswith("conv.weight"):
            state[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel())
        elif k == "fc.weight":
            state[k] = torch.randn(v.shape, generator=g) / math.sqrt(v.shape[1])
        else:
            state[k] = v.clone()
    torch.save(state, path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception-random.pt"
    write_random_inception_weights(path)
    return path


def _images(n: int, seed: int) -> torch.Tensor:
    """Smooth random 8-bit RGB images [n, 3, 32, 32] (noise upsampled from 8 x 8)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return (torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False) * 255).round()


def _noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).round().clamp(0, 255)


def test_fid_of_a_set_with_itself_is_zero_and_rises_with_noise(weights):
    x = _images(6, 0)
    same = fid(x, x, bits=8, weights=weights, feature_layer="64")
    low = fid(_noisy(x, 8.0), x, bits=8, weights=weights, feature_layer="64")
    high = fid(_noisy(x, 48.0), x, bits=8, weights=weights, feature_layer="64")
    assert abs(same) < 1e-3 * low
    assert 0 < low < high / 4


def test_grey_low_bit_images_are_scaled_and_replicated(weights):
    g = torch.Generator().manual_seed(2)
    grey = torch.randint(0, 32, (5, 1, 8, 8), generator=g, dtype=torch.uint8)  # 5-bit levels, as data sets hold them
    items = UInt8Images(grey, bits=5)
    item = items[0]
    assert item.dtype == torch.uint8 and item.shape == (3, 8, 8)
    assert torch.equal(item[0], item[2]) and torch.equal(item[0], torch.round(grey[0, 0].float() * 255 / 31).byte())
    seen = []
    assert abs(fid(grey, grey, bits=5, weights=weights, feature_layer="64",
                   progress=lambda d, t: seen.append((d, t)))) < 1e-6
    assert seen[-1] == (10, 10)


def test_fid_refusals(tmp_path, weights, monkeypatch):
    with pytest.raises(FIDError, match="images only"):
        check_fid_data((2,), None)
    with pytest.raises(FIDError, match="channels"):
        check_fid_data((6, 8, 8), 8)
    x = _images(3, 0)
    with pytest.raises(FIDError, match="no such Inception weights file"):
        fid(x, x, bits=8, weights=tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(FIDError, match="cannot read the Inception weights file"):
        fid(x, x, bits=8, weights=junk)
    partial = tmp_path / "partial.pt"
    full = torch.load(weights, weights_only=True)
    torch.save({k: full[k] for k in ("Conv2d_1a_3x3.conv.weight", "fc.weight", "fc.bias")}, partial)
    with pytest.raises(FIDError, match="not an InceptionV3 weights file in torch-fidelity's format"):
        fid(x, x, bits=8, weights=partial)
    with pytest.raises(FIDError, match="at least 2 images"):
        fid(x[:1], x, bits=8, weights=weights)

    import torch_fidelity.feature_extractor_inceptionv3 as inception

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(inception, "load_state_dict_from_url", offline)
    with pytest.raises(FIDError, match="--inception-weights PATH"):
        fid(x, x, bits=8, weights=None)
