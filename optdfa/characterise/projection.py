"""The recovered projection at the nominal exposure: errors and the achieved frame rate."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from optdfa.characterise.targets import Target
from optdfa.optics.decoders import make_decoder


# -- the recovered projection ---------------------------------------------------------------------
def measure_projection(target: Target, *, frames: int = 64, seed: int = 0) -> dict[str, Any]:
    """Reference-decoder recovery at the nominal exposure: error vs the exact map (if known),
    superposition and repeatability errors, achieved frame rate."""
    p = target.base_profile
    target.set_exposure(target.nominal_exposure_s)
    decoder = make_decoder(
        "reference",
        target.device,
        reference_mirrors=target.reference_mirrors,
        signal_mirrors=target.signal_mirrors,
        normalisation=p.reference_normalisation,
        deduplicate=True,
        calibration_frames=max(p.calibration_frames, 16),
    )
    decoder.calibrate()
    n = decoder.n_signal
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(frames, n, generator=gen) < 0.5
    x[x.sum(dim=1) == 0, 0] = True
    split = torch.rand(frames, n, generator=gen) < 0.5
    a, b = x & split, x & ~split
    shown0, start = target.frames_shown(), time.perf_counter()
    first = decoder.measure(x).double()
    wall = time.perf_counter() - start
    shown = target.frames_shown() - shown0
    second = decoder.measure(x).double()
    parts = decoder.measure(a).double() + decoder.measure(b).double()

    def rel(u: torch.Tensor, w: torch.Tensor) -> float:
        return float((u - w).norm() / w.norm())

    out: dict[str, Any] = {
        "frames_tested": frames,
        "superposition_error": rel(parts, first),
        "repeatability_error": rel(first, second) / math.sqrt(2),
        "frames_shown": shown,
        "wall_seconds": wall,
        "frame_rate_hz": shown / wall if wall > 0 else math.inf,
    }
    if hasattr(target.device, "field"):
        exact = (decoder.matrix().double() @ x.double().T).T
        out["error_vs_exact"] = rel(first, exact)
        out["correlation_vs_exact"] = float(
            torch.corrcoef(torch.stack([first.flatten(), exact.flatten()]))[0, 1]
        )
        out["_scatter"] = (exact.flatten()[:4000].numpy(), first.flatten()[:4000].numpy())
    else:
        out["_scatter"] = (first.flatten()[:4000].numpy(), parts.flatten()[:4000].numpy())
    return out
