"""What ``augflow-dsl eval`` and ``sample`` compute from plain arguments: a checkpoint on a
device, the data split it is scored on, the FID checks, the sample files."""
from __future__ import annotations

from pathlib import Path


class DeviceUnavailable(Exception):
    """A device that is not there (no CUDA, or a name torch does not know): a usage error."""


def load_on_device(run_or_ckpt: str | Path, device: str = "cpu", ema: bool = True):
    """(model on ``device``, spec, checkpoint meta) of a run folder or checkpoint file."""
    import torch

    from ..compiler.model_file import load_model

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"--device {device} but no CUDA device is available")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise DeviceUnavailable(f"--device {device}: {e}") from None
    model, spec, meta = load_model(run_or_ckpt, ema=ema, map_location="cpu")
    return model.to(dev), spec, meta


def open_split(spec, meta: dict, split: str = "test", data_root: str | None = None, download: bool = False):
    """The ``split`` ("train" or "test") of the spec's data set, seeded as the run was."""
    from ..language.datasets import spec_condition
    from .data import open_dataset
    seed = int((meta.get("train") or {}).get("seed", 0))
    source = open_dataset(spec.data, data_root, download, seed, **spec_condition(spec))
    return source.train if split == "train" else source.test


def check_fid_request(spec, weights: str | None) -> None:
    """Refuse an FID before any work: data it cannot score, a missing or unreadable weights file
    (FIDError)."""
    from .fid import FIDError, check_fid_data, check_weights

    check_fid_data(tuple(spec.data.shape), spec.data.bits)
    if weights is not None:
        if not Path(weights).is_file():
            raise FIDError(f"no such Inception weights file: {weights} (--inception-weights)")
        check_weights(weights)


def write_samples(x, out: str, *, spec, meta: dict, nrow: int | None = None, npz: str | None = None,
                  temperature: float = 1.0, data_root: str | None = None, download: bool = False) -> None:
    """Write samples ``x``: a PNG grid of images, or a scatter plot of vectors (beside the test
    data when it can be had without a download); with ``npz``, also the uint8 levels. Raises
    OSError (a path it cannot write) and ValueError (an image format it cannot write)."""
    from .sampling import save_grid, save_npz, save_scatter, top_level

    n = len(x)
    if x.dim() == 4:
        save_grid(x, out, spec.data.bits, nrow,
                  top=top_level(spec.data.bits, spec.data.dataset) if spec.data.bits is not None else None)
    else:
        reference = None
        try:  # the data beside the samples when it can be had without a download
            ref = open_split(spec, meta, "test", data_root, download)
            import torch
            reference = torch.stack([ref[i] for i in range(min(len(ref), max(n, 2000)))])
        except Exception:  # noqa: BLE001 - the plot is still useful without the data panel
            reference = None
        save_scatter(x, out, reference, title=f"{spec.name}: T = {temperature:g}")
    if npz:
        save_npz(x, npz, spec.data.bits)


__all__ = ["DeviceUnavailable", "check_fid_request", "load_on_device", "open_split", "write_samples"]
