"""Fréchet Inception Distance (Heusel et al. 2017) between model samples and data, by torch-fidelity.

Both sets go to ``torch_fidelity.calculate_metrics`` as Datasets of uint8 [3, H, W] images
(levels 0 .. 2^bits - 1 scaled to 0 .. 255, grey images repeated to 3 channels); torch-fidelity
resizes them to 299 x 299 and runs its InceptionV3 port (``feature_extractor_inceptionv3.py``).
Its weights come from ``weights`` (a local file in torch-fidelity's format, e.g. made by its
``utils/util_convert_inception_weights.py``) or, without one, from torch-fidelity's own
download (the one documented network access of this project; cached by torch.hub).
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset

FEATURE_LAYERS = ("64", "192", "768", "2048")  # InceptionV3 pool features; FID's standard layer is 2048

#: progress(done, total): images passed to the feature extractor so far.
FidProgress = Callable[[int, int], None]


class FIDError(Exception):
    """FID cannot be computed as asked (vector data, no weights offline, a bad weights file)."""


class UInt8Images(Dataset):
    """Images as torch-fidelity reads them: uint8 [3, H, W], 0 .. 255.

    ``source`` is a tensor [N, C, H, W] or a Dataset of [C, H, W] tensors holding levels
    0 .. 2^bits - 1 (C = 1 or 3); ``limit`` keeps the first ``limit`` items; ``on_item`` is
    called once per item read (a progress hook)."""

    def __init__(self, source: torch.Tensor | Dataset, bits: int, limit: int | None = None,
                 on_item: Callable[[], None] | None = None):
        self.source, self.bits, self.on_item = source, bits, on_item
        self.n = len(source) if limit is None else min(limit, len(source))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(i)
        x = torch.as_tensor(self.source[i])
        if x.dim() != 3 or x.shape[0] not in (1, 3):
            raise FIDError(f"FID needs images [1 or 3, H, W]; got an item of shape {list(x.shape)}")
        if self.bits == 8 and x.dtype == torch.uint8:
            img = x
        else:
            img = torch.round(x.float().clamp(0, 2 ** self.bits - 1) * (255 / (2 ** self.bits - 1))).to(torch.uint8)
        if self.on_item is not None:
            self.on_item()
        return img.expand(3, -1, -1).contiguous() if img.shape[0] == 1 else img


def check_fid_data(shape: tuple[int, ...], bits: int | None) -> None:
    """Refuse data FID is not defined on (vector data, or channels other than 1 and 3)."""
    if len(shape) != 3 or bits is None:
        raise FIDError(f"FID is defined on images only; this model's data are vectors of shape {list(shape)} "
                       f"(drop --fid; bits/dim and samples still work)")
    if shape[0] not in (1, 3):
        raise FIDError(f"FID needs 1- or 3-channel images; this model's data have {shape[0]} channels")


def fid(samples: torch.Tensor | Dataset, data: torch.Tensor | Dataset, *, bits: int, weights: str | Path | None = None,
        batch: int = 64, device: str | torch.device = "cpu", feature_layer: str = "2048",
        data_limit: int | None = None, progress: FidProgress | None = None) -> float:
    """FID between ``samples`` and ``data`` (images of levels 0 .. 2^bits - 1, tensors [N, C, H, W]
    or Datasets), on ``data_limit`` data items (all when None), through torch-fidelity."""
    if feature_layer not in FEATURE_LAYERS:
        raise FIDError(f"unknown Inception feature layer {feature_layer!r}; choose one of {', '.join(FEATURE_LAYERS)}")
    with contextlib.ExitStack() as stack:
        verified = None
        if weights is not None:
            if not Path(weights).is_file():
                raise FIDError(f"no such Inception weights file: {weights} (--inception-weights)")
            verified = stack.enter_context(private_copy(weights))
        return _fid(samples, data, bits=bits, weights=weights, verified=verified, batch=batch, device=device,
                    feature_layer=feature_layer, data_limit=data_limit, progress=progress)


def _fid(samples, data, *, bits: int, weights, verified: Path | None, batch: int, device, feature_layer: str,
         data_limit: int | None, progress: FidProgress | None) -> float:
    """:func:`fid` once the weights (if any) are verified and copied to ``verified``."""
    import torch_fidelity

    a = UInt8Images(samples, bits)
    b = UInt8Images(data, bits, data_limit)
    if len(a) < 2 or len(b) < 2:
        raise FIDError(f"FID needs at least 2 images on each side; got {len(a)} samples and {len(b)} data images")
    total, done = len(a) + len(b), [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)

    a.on_item = b.on_item = tick
    device = torch.device(device)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            metrics = torch_fidelity.calculate_metrics(
                input1=a, input2=b, fid=True, feature_layer_fid=feature_layer,
                feature_extractor_weights_path=None if verified is None else str(verified),
                cuda=device.type == "cuda", batch_size=batch, cache=False, save_cpu_ram=True, verbose=False)
    except OSError as e:  # urllib's URLError is an OSError: the weights download failed
        if weights is None:
            raise FIDError(f"cannot download torch-fidelity's Inception weights ({e}); pass a local copy with "
                           f"--inception-weights PATH") from None
        raise FIDError(f"cannot read the Inception weights file {weights}: {e}") from None
    except RuntimeError as e:  # nn.Module.load_state_dict: keys or shapes of another network
        if weights is not None and str(e).startswith("Error(s) in loading state_dict"):
            raise FIDError(f"{weights} is not an InceptionV3 weights file in torch-fidelity's format "
                           f"(--inception-weights): {str(e).splitlines()[1].strip()}") from None
        raise
    return float(metrics["frechet_inception_distance"])


@contextlib.contextmanager
def private_copy(weights: str | Path) -> Iterator[Path]:
    """The weights read once with ``weights_only=True`` (:func:`check_weights`) and saved again in
    a folder only this user can open (``tempfile.mkdtemp``: mode 0700), removed afterwards.

    torch-fidelity reloads its weights path with ``torch.load(weights_only=False)``: handing it the
    user's path would let a file swapped in between the two reads run code. It reads this copy of
    the verified tensors instead."""
    state = check_weights(weights)
    with tempfile.TemporaryDirectory(prefix="augflow-fid-") as folder:
        path = Path(folder) / "inception-v3.pt"
        torch.save(state, path)
        yield path


def check_weights(weights: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``weights``, refusing a file that is not a tensor state dict (read with
    ``weights_only=True``); shapes are checked by torch-fidelity's load_state_dict."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable or non-tensor pickle is the user's file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FIDError(f"cannot read the Inception weights file {weights} (--inception-weights): {first}") from None
    if not isinstance(state, dict) or "Conv2d_1a_3x3.conv.weight" not in state or "fc.weight" not in state:
        raise FIDError(f"{weights} is not an InceptionV3 weights file in torch-fidelity's format "
                       f"(--inception-weights): no Conv2d_1a_3x3 / fc weights in it")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise FIDError(f"{weights} is not an InceptionV3 weights file in torch-fidelity's format "
                       f"(--inception-weights): it holds entries that are not named tensors")
    return state
