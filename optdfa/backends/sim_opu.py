"""The ``sim-opu`` backend: the DFA feedback projection on a simulated OPU.

The optical pipeline of :mod:`optdfa.backends.optical` (encode the error as binary frames,
recover ``M̃x`` with the profile's decoder, rescale to ``s_j = 1/√(3·size_l)``) on
:class:`~optdfa.optics.device.SimulatedOPU`. For ``pixel`` normalisation, the 99 % of pixels
brighter than 1 % of the mean reference give ``B_eff`` entries exactly N(0, s_j²/ĝ), ĝ ≈ 1 the
sample mean of the reference speckle.

The DMD is shared between the error and the reference: the reference block takes
``reference_fraction`` of the mirrors, each of the ``n_out`` error entries an equal macro-pixel
of the rest. Camera pixel ``j`` feeds feedback unit ``j`` (``n_feedback`` pixels are read).

Photonic DP (``private_encoding``): once a learning rule sets an error bound, the encoder uses
that fixed scale and the decoder shows every frame, repeated or all-zero, each with its own
device noise (``docs/privacy.md``).

Options: ``profile`` (a name from :func:`~optdfa.optics.profile.available_profiles` or a TOML
path; default ``lighton-aurora``), ``overrides`` (profile fields to change),
``dense_budget_mb`` (largest dense copy of ``H``), ``noise_generator`` (``quantile``, the
default, or ``torch``: the generator of optdfa before 2026-11-27, see
:mod:`optdfa.optics.noise`) and ``noise_streams`` (parallel streams of the ``torch`` generator,
default 2).
"""

from __future__ import annotations

from typing import Any

import torch

from optdfa.backends.base import FeedbackLayout
from optdfa.backends.optical import OpticalBackend
from optdfa.errors import OptdfaError
from optdfa.optics.decoders import LinearDecoder
from optdfa.optics.device import SimulatedOPU
from optdfa.optics.medium import DEFAULT_DENSE_BUDGET
from optdfa.optics.noise import check_noise_options


class SimOpuBackend(OpticalBackend):
    """DFA feedback computed by :class:`~optdfa.optics.device.SimulatedOPU` (module docstring)."""

    name = "sim-opu"
    #: an error bound fixes the encoding scale and shows every frame (photonic DP)
    private_encoding = True
    OPTIONS = ("profile", "overrides", "dense_budget_mb", "noise_generator", "noise_streams")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.opu: SimulatedOPU | None = None
        self.reference_mirrors = 0
        self.signal_mirrors = 0

    def _read_options(self, options: dict[str, Any]) -> None:
        budget = options.get("dense_budget_mb", DEFAULT_DENSE_BUDGET / 2**20)
        method = options.get("noise_generator", "quantile")
        streams = options.get("noise_streams")
        if not (isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget >= 0):
            raise OptdfaError(
                f"backend 'sim-opu': dense_budget_mb must be a non-negative number, got {budget!r}"
            )
        try:
            check_noise_options(method, streams)
        except OptdfaError as err:
            raise OptdfaError(f"backend 'sim-opu': {err}") from None
        self.dense_budget_bytes = int(budget * 2**20)
        self.noise_generator = method
        self.noise_streams = streams

    # -- hooks of the optical pipeline -----------------------------------------------------------
    def _open(self, layout: FeedbackLayout, *, seed: int, device: torch.device) -> LinearDecoder:
        p = self.profile
        n_err, n_pix = layout.n_out, layout.n_feedback
        self._check_camera(layout)
        mirrors = p.dmd_mirrors
        self.reference_mirrors = max(1, int(p.reference_fraction * mirrors))
        self.signal_mirrors = (mirrors - self.reference_mirrors) // n_err
        if self.signal_mirrors < 1:
            raise OptdfaError(
                f"{n_err} error entries plus the reference block do not fit on the "
                f"{p.dmd_rows}×{p.dmd_cols} DMD"
            )
        self.opu = SimulatedOPU(
            p,
            n_err + 1,
            n_pix,
            seed=seed,
            mirrors=[self.signal_mirrors] * n_err + [self.reference_mirrors],
            device=device,
            dense_budget_bytes=self.dense_budget_bytes,
            noise_generator=self.noise_generator,
            noise_streams=self.noise_streams,
        )
        return self._profile_decoder(
            self.opu, reference_mirrors=self.reference_mirrors, signal_mirrors=self.signal_mirrors
        )

    def _frames_shown(self) -> int:
        assert self.opu is not None
        return self.opu.frames

    @property
    def drifts(self) -> bool:
        return self.opu is not None and self.opu.drifts

    def _device_counters(self) -> dict[str, float]:
        return {} if self.opu is None else self.opu.counters()

    def _describe_device(self) -> dict[str, Any]:
        frames_per_frame = 2 if self.decoder.name == "reference" else 1
        return {
            "max_frames_per_sample": self.encoder.planes * frames_per_frame,
            "device": self.opu.describe(),
        }

    def _device_state(self) -> dict[str, Any]:
        return {"opu": self.opu.state_dict()}

    def _load_device_state(self, state: dict[str, Any]) -> None:
        self.opu.load_state_dict(state["opu"])

    def close(self) -> None:
        if self.opu is not None:
            self.opu.medium.release()
