"""The photonic Gaussian mechanism of DFA on an OPU: its noise multiplier from the device.

Derivation (``docs/privacy.md`` has it in full). With private training on, the rule clips each
per-sample error to ``‖e_b‖ ≤ C`` and the backend encodes with the **fixed** scale that bound
allows (``stochastic``: amplitude ``a = C``; ``bitplane:K``: ``a = C/(2^K − 1)``) and shows every
frame, empty or repeated, so each plane of each sample carries its own device noise. The
feedback of sample ``b`` at feedback unit (camera pixel) ``j`` is then

    φ_bj = s_j · a · Σ_p w_p [(M̃ x_bp)_j + σ_j ξ_bpj],      ξ ~ N(0, 1) i.i.d.,

``M̃`` the decoder's noiseless unit-variance map, ``σ_j`` the noise std of one recovered entry in
``M̃`` units, ``s_j`` the backend's rescaling. Per pixel the noise std is ``s_j·a·√(Σ w_p²)·σ_j``
whatever the data; whitening by it (a bijection, so privacy is unchanged) turns the signal into
``W v / (a √(Σ w_p²))`` with ``W = diag(1/σ) M̃`` and ``v = a Σ_p w_p x_bp`` the encoded error, so
``s`` and ``C`` cancel: the noise multiplier is ``z = 1/Δ`` with the whitened sensitivity

- ``stochastic``: ``Δ = max_{t ∈ {−1,0,1}^n} ‖W t‖ / √2``, computed exactly over the ``2^n``
  sign vectors (a convex function peaks at a vertex of the cube) for ``n ≤ 20``, else bounded by
  ``‖W‖₂ √n / √2``;
- ``bitplane:K`` (``L = 2^K − 1``, ``Σ w_p² = 2(4^K − 1)/3``; dithered rounding, each entry
  off by less than a step ``a``): ``‖v‖ ≤ C + a√n``, so ``Δ ≤ ‖W‖₂ (L + √n) / √(Σ w_p²)``
  (``bitplane-nearest:K``: half a step, ``L + √n/2``);
- ``ternary`` has a data-dependent least-squares amplitude: not a Gaussian mechanism, rejected.

``σ_j`` from the **profile** (the default): a recovered entry is ``[I(x + r) − I(x) − R_j]·n_j``
(``n_j`` the decoder's normaliser, ``R_j`` the calibrated reference output); the two frames'
noise in electrons has variance ``2σ_read² + 2·dark + μ(x + r) + μ(x)``, and since
``|u + c|² + |u|² ≥ |c|²/2`` for any field ``u``, the shot-noise part is at least half the
reference charge ``R_j·g/2`` (``g`` electrons per output unit). We use that data-independent
floor: ``σ_j = √(2σ_read² + 2·dark + R_j g/2) · n_j / g``. From a **characterisation**: the
sample standard deviation of repeated measurements of fixed frames (the all-zero frame and a
few random ones), smallest over the frames, per pixel — what one would do on a real OPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from optdfa.errors import OptdfaError
from optdfa.optics.encoders import BitPlaneEncoder, StochasticTernaryEncoder

NOISE_SOURCES = ("profile", "characterised")
#: largest error dimension for the exact sensitivity (2^n sign vectors)
EXACT_MAX_N = 20

ASSUMPTIONS = (
    "A1 Gaussian device noise: shot noise is treated as Gaussian (its variance floor is used) and "
    "read noise is Gaussian; ADC rounding and saturation act after the noise (post-processing).",
    "A2 the DFA update is post-processing of the noisy feedback: the per-sample factors f'(a_l) "
    "and the layer inputs h_(l-1) that multiply it are not charged (the photonic-DFA model of "
    "Ohana et al., 2021); the output layer's update, which uses the true error, is not covered.",
    "A3 each step is the sampled Gaussian mechanism with add/remove adjacency and Poisson sampling "
    "at rate batch/N (training draws shuffled fixed-size batches), with one sample's worth of "
    "device noise (the other samples' independent noise is not counted).",
)


@dataclass
class PhotonicMechanism:
    """The Gaussian mechanism a private DFA step runs on the device (see the module docstring)."""

    noise_multiplier: float
    sensitivity: float  # whitened sensitivity Δ (noise std 1)
    sensitivity_method: str
    encoder: str
    noise_source: str
    n_out: int
    n_feedback: int
    sigma_min: float  # σ_j over pixels, M̃ units
    sigma_median: float
    sigma_max: float
    entry_snr_median: float  # median over pixels of rms_k(M̃_jk) / σ_j
    assumptions: tuple[str, ...] = field(default=ASSUMPTIONS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _camera_gain(backend: Any) -> float:
    """Electrons per camera output unit (1 without an ADC)."""
    adc = backend.opu.camera.stage("adc")
    return float(adc.gain_e_per_dn) if adc is not None and adc.enabled else 1.0


def profile_noise_floor(backend: Any) -> torch.Tensor:
    """σ_j (M̃ units) of one recovered entry from the profile, floor over data, ``(n_feedback,)``."""
    decoder = backend.decoder
    if decoder.name != "reference":
        return torch.zeros(decoder.n_out, dtype=torch.float64)
    p = backend.profile
    g = _camera_gain(backend)
    reference_e = decoder.reference.to(torch.float64).clamp_min(0) * g
    var = torch.full_like(reference_e, 2.0 * p.read_noise_e**2)
    if p.shot_noise:
        var += 2.0 * p.dark_current_e_per_s * p.exposure_s + reference_e / 2.0
    return var.sqrt() * decoder.norm.to(torch.float64) / g


def characterised_noise(backend: Any, *, repeats: int = 64, frames: int = 4) -> torch.Tensor:
    """σ_j (M̃ units) measured on the device: per pixel, the smallest std over fixed frames.

    Shows the all-zero frame and ``frames`` random frames ``repeats`` times each (every frame
    shown, no deduplication); spends ``2·(frames + 1)·repeats`` device frames.
    """
    decoder = backend.decoder
    n = decoder.n_signal
    gen = torch.Generator().manual_seed(0)
    patterns = torch.cat(
        (torch.zeros(1, n, dtype=torch.bool), torch.rand(frames, n, generator=gen) < 0.5)
    )
    stds = []
    for x in patterns:
        measured = decoder.measure(x.expand(repeats, n).contiguous(), every_frame=True)
        stds.append(measured.to(torch.float64).std(dim=0))
    return torch.stack(stds).amin(dim=0)


def _sensitivity(W: torch.Tensor, encoder: Any) -> tuple[float, str]:
    """Whitened sensitivity Δ for the encoder (W: (n_feedback, n_out) float64)."""
    n = W.shape[1]
    if isinstance(encoder, StochasticTernaryEncoder):
        if n <= EXACT_MAX_N:
            gram = W.T @ W
            codes = torch.arange(2**n, dtype=torch.int64)
            signs = ((codes[:, None] >> torch.arange(n)) & 1).to(torch.float64) * 2 - 1
            best = float(((signs @ gram) * signs).sum(1).max())
            return math.sqrt(best / 2.0), "exact maximum over sign vectors"
        return float(torch.linalg.matrix_norm(W, ord=2)) * math.sqrt(n / 2.0), "operator-norm bound"
    if isinstance(encoder, BitPlaneEncoder):
        levels = 2**encoder.bits - 1
        sum_w2 = 2.0 * (4**encoder.bits - 1) / 3.0
        norm = float(torch.linalg.matrix_norm(W, ord=2))
        rounding = 1.0 if encoder.dither else 0.5  # at most a step (dithered), half (nearest)
        return norm * (levels + rounding * math.sqrt(n)) / math.sqrt(sum_w2), "operator-norm bound"
    raise OptdfaError(
        f"photonic DP needs an encoder whose scale the error bound fixes (stochastic or "
        f"bitplane:K); {encoder.spec} scales each sample by a data-dependent amplitude"
    )


def photonic_mechanism(
    backend: Any, *, noise: str = "profile", repeats: int = 64
) -> PhotonicMechanism:
    """The noise multiplier of ``backend``'s private projection (backend set up; see module doc)."""
    if noise not in NOISE_SOURCES:
        raise OptdfaError(f"unknown noise source {noise!r}; valid: {', '.join(NOISE_SOURCES)}")
    needed = ("decoder", "encoder", "profile", "opu")
    if not getattr(backend, "private_encoding", False) or not all(
        getattr(backend, a, None) is not None for a in needed
    ):
        raise OptdfaError(
            f"backend {getattr(backend, 'name', backend)!r} cannot run the photonic-DP "
            f"mechanism (a fixed encoding scale and a device noise model): use sim-opu; the "
            f"digital projection is exact and adds no noise"
        )
    encoder = backend.encoder
    if not isinstance(encoder, (StochasticTernaryEncoder, BitPlaneEncoder)):
        _sensitivity(torch.ones(1, 1, dtype=torch.float64), encoder)  # raises the clear error
    M = backend.decoder.matrix().to(torch.float64)  # (n_feedback, n_out)
    sigma = (
        profile_noise_floor(backend)
        if noise == "profile"
        else characterised_noise(backend, repeats=repeats)
    )
    if not bool((sigma > 0).all()):
        delta, method = math.inf, "no noise on some feedback units"
        z = 0.0
    else:
        W = M / sigma[:, None]
        delta, method = _sensitivity(W, encoder)
        z = 1.0 / delta
    rms = M.square().mean(dim=1).sqrt()
    snr = rms / sigma.clamp_min(1e-300)
    return PhotonicMechanism(
        noise_multiplier=z,
        sensitivity=delta,
        sensitivity_method=method,
        encoder=encoder.spec,
        noise_source=noise,
        n_out=M.shape[1],
        n_feedback=M.shape[0],
        sigma_min=float(sigma.min()),
        sigma_median=float(sigma.median()),
        sigma_max=float(sigma.max()),
        entry_snr_median=float(snr.median()),
    )
