"""How faithful a backend's feedback projection is: fidelity and signal-to-noise ratio.

Measured once after training (so the run itself is untouched), on the output errors
``e = ∂L/∂ŷ`` ``(n, n_out)`` of the trained model on the first test samples, by projecting them
``repeats`` times through the backend and comparing with the exact projection ``e·B_eff``,
``B_eff = backend.feedback_matrix()`` (the noiseless effective feedback matrix):

- ``projection_fidelity`` — mean over samples and repeats of ``cos(project(e)_b, (e·B_eff)_b)``
  (1 for an exact backend); it is the cosine of the feedback the network receives with the one
  an ideal device with the same matrix would give, so encoding and device errors both count;
- ``projection_snr_db`` — ``10·log10(Σ (e·B_eff)² / Σ (project(e) − e·B_eff)²)``: the same, as
  the ratio of signal to total error power (``None`` when the error is exactly zero);
- ``device_snr_db`` — the device alone: the reference is the exact projection of the *encoded*
  error ``decode(encode(e))·B_eff``, so the encoding's own error is left out (the stochastic
  encoder's frames are redrawn from the generator state each projection started from; ``None``
  for backends without an encoder).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from optdfa.rules import DirectFeedbackAlignment, LearningRule


def _snr_db(signal: torch.Tensor, estimate: torch.Tensor) -> float | None:
    noise = float((estimate - signal).square().sum())
    power = float(signal.square().sum())
    if noise == 0 or power == 0:
        return None
    return 10.0 * math.log10(power / noise)


@torch.no_grad()
def _errors(model: torch.nn.Module, loss_fn: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        out = model(x).detach().requires_grad_(True)
        (error,) = torch.autograd.grad(loss_fn(out, y), out)
    return error


def projection_quality(
    rule: LearningRule,
    model: torch.nn.Module,
    loss_fn: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    repeats: int = 4,
) -> dict[str, float | None]:
    """Fidelity and SNRs of ``rule``'s feedback projection (see the module docstring).

    Returns an empty dict for rules without a feedback backend (bp, fa) or backends that cannot
    report their matrix. Spends device frames (read the run's counters before calling it).
    """
    if not isinstance(rule, DirectFeedbackAlignment):
        return {}
    backend = rule.backend
    matrix = backend.feedback_matrix()
    if matrix is None:
        return {}
    model.eval()
    error = _errors(model, loss_fn, x, y)
    B = matrix.detach().to(torch.float64)
    exact = error.to(torch.float64) @ B
    encoder = getattr(backend, "encoder", None)
    generator = getattr(backend, "encoder_generator", None)
    noisy_parts, encoded_parts = [], []
    for _ in range(repeats):
        # the stochastic encoder's frames are redrawn from the generator state it starts from
        state = generator.get_state() if generator is not None else None
        noisy_parts.append(backend.project(error).to(torch.float64))
        if encoder is not None:
            redraw = None
            if encoder.stochastic and state is not None:
                redraw = torch.Generator(device=generator.device)
                redraw.set_state(state)
            work = error.to(
                device=getattr(backend, "work_device", error.device), dtype=torch.float32
            )
            encoded_parts.append(encoder.encode(work, redraw).decode().cpu().to(torch.float64))
    noisy = torch.cat(noisy_parts)
    target = exact.repeat(repeats, 1)
    norms = noisy.norm(dim=1) * target.norm(dim=1)
    keep = norms > 0
    cos = (noisy * target).sum(1)[keep] / norms[keep]
    out: dict[str, float | None] = {
        "projection_fidelity": float(cos.mean()) if keep.any() else None,
        "projection_snr_db": _snr_db(target, noisy),
        "device_snr_db": None,
    }
    if encoded_parts and (not encoder.stochastic or generator is not None):
        encoded = torch.cat(encoded_parts).to(B.device) @ B
        out["device_snr_db"] = _snr_db(encoded, noisy)
    return out
