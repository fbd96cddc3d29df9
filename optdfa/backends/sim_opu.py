"""The ``sim-opu`` backend: the DFA feedback projection on a simulated OPU.

One projection of an error batch ``e`` ``(batch, n_out)``:

1. the profile's encoder writes each sample as binary frames:
   ``e_b ≈ a_b Σ_p w_p x_bp`` (:mod:`optdfa.optics.encoders`);
2. the decoder shows the frames on the simulated device — each distinct nonzero frame with and
   without the reference block — and recovers ``M̃ x_bp`` from the camera output, where
   ``M̃`` ``(n_feedback, n_out)`` has unit-variance entries (:mod:`optdfa.optics.decoders`);
3. the backend recombines and rescales to the digital backend's magnitude:

       feedback_bj = s_j · a_b Σ_p w_p (M̃ x_bp)_j,     s_j = 1/√(3·size_l)  (column j in block l)

   i.e. the effective feedback matrix is ``B_eff[k, j] = s_j M̃_jk`` — entries of zero mean and
   standard deviation ``s_j`` exactly as :func:`~optdfa.backends.base.reference_block_std`
   prescribes (for pixel normalisation, the 99 % of pixels brighter than 1 % of the mean
   reference are exactly N(0, s_j²/ĝ), ĝ ≈ 1 the sample mean of the reference speckle).

The DMD is shared between the error and the reference: the reference block takes
``reference_fraction`` of the mirrors, each of the ``n_out`` error entries an equal macro-pixel
of the rest. Camera pixel ``j`` feeds feedback unit ``j`` (``n_feedback`` pixels are read).

Options: ``profile`` (a name from :func:`~optdfa.optics.profile.available_profiles` or a TOML
path; default ``lighton-aurora``), ``overrides`` (profile fields to change),
``dense_budget_mb`` (largest dense copy of ``H``) and ``noise_streams``.
"""

from __future__ import annotations

from typing import Any

import torch

from optdfa.backends.base import (
    FeedbackBackend,
    FeedbackLayout,
    reference_block_std,
    reject_unknown_options,
)
from optdfa.errors import OptdfaError
from optdfa.optics.decoders import LinearDecoder, make_decoder
from optdfa.optics.device import SimulatedOPU
from optdfa.optics.encoders import parse_encoder
from optdfa.optics.medium import DEFAULT_DENSE_BUDGET
from optdfa.optics.profile import load_profile
from optdfa.outputs import json_safe
from optdfa.seeding import derive_seed

DEFAULT_PROFILE = "lighton-aurora"


class SimOpuBackend(FeedbackBackend):
    """DFA feedback computed by :class:`~optdfa.optics.device.SimulatedOPU` (module docstring)."""

    name = "sim-opu"
    #: the CLI's ``--profile`` / ``--opu`` flags apply to backends that set this
    uses_opu_profile = True
    #: an error bound fixes the encoding scale and shows every frame (photonic DP)
    private_encoding = True
    OPTIONS = ("profile", "overrides", "dense_budget_mb", "noise_streams")

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(self.name, options, self.OPTIONS)
        super().__init__()
        profile = options.get("profile", DEFAULT_PROFILE)
        overrides = options.get("overrides", {}) or {}
        if not isinstance(profile, str):
            raise OptdfaError(
                f"backend 'sim-opu': option profile must be a name or path, got {profile!r}"
            )
        if not isinstance(overrides, dict):
            raise OptdfaError(
                f"backend 'sim-opu': option overrides must be a table of profile fields, got {overrides!r}"
            )
        budget = options.get("dense_budget_mb", DEFAULT_DENSE_BUDGET / 2**20)
        streams = options.get("noise_streams", 2)
        if not (isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget >= 0):
            raise OptdfaError(
                f"backend 'sim-opu': dense_budget_mb must be a non-negative number, got {budget!r}"
            )
        if not (isinstance(streams, int) and not isinstance(streams, bool) and streams >= 1):
            raise OptdfaError(
                f"backend 'sim-opu': noise_streams must be a positive integer, got {streams!r}"
            )
        self.profile = load_profile(profile, overrides)
        self.profile_spec = profile
        self.overrides = dict(overrides)
        self.dense_budget_bytes = int(budget * 2**20)
        self.noise_streams = streams
        self.encoder = parse_encoder(self.profile.encoder)
        self.opu: SimulatedOPU | None = None
        self.decoder: LinearDecoder | None = None
        self.encoder_generator: torch.Generator | None = None
        self.block_std: torch.Tensor | None = None
        self.reference_mirrors = 0
        self.signal_mirrors = 0
        self.calibration_frames = 0
        self._calibrated_at = 0
        self._matrix: torch.Tensor | None = None

    # -- set-up ----------------------------------------------------------------------------------
    def setup(
        self, layout: FeedbackLayout, *, seed: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        p = self.profile
        n_err, n_pix = layout.n_out, layout.n_feedback
        if n_pix > p.camera_pixels:
            raise OptdfaError(
                f"the model has {n_pix} feedback units but the {p.name} camera reads at most "
                f"{p.camera_rows}×{p.camera_cols} = {p.camera_pixels} pixels (one per unit)"
            )
        mirrors = p.dmd_mirrors
        self.reference_mirrors = max(1, int(p.reference_fraction * mirrors))
        self.signal_mirrors = (mirrors - self.reference_mirrors) // n_err
        if self.signal_mirrors < 1:
            raise OptdfaError(
                f"{n_err} error entries plus the reference block do not fit on the "
                f"{p.dmd_rows}×{p.dmd_cols} DMD"
            )
        self.layout = layout
        self.opu = SimulatedOPU(
            p,
            n_err + 1,
            n_pix,
            seed=seed,
            mirrors=[self.signal_mirrors] * n_err + [self.reference_mirrors],
            device=device,
            dense_budget_bytes=self.dense_budget_bytes,
            noise_streams=self.noise_streams,
        )
        self.decoder = make_decoder(
            p.decoder,
            self.opu,
            reference_mirrors=self.reference_mirrors,
            signal_mirrors=self.signal_mirrors,
            normalisation=p.reference_normalisation,
            deduplicate=p.deduplicate_frames,
            calibration_frames=p.calibration_frames,
        )
        self.decoder.calibrate()
        self.calibration_frames = self.opu.frames
        self._calibrated_at = self.opu.frames
        self.encoder_generator = torch.Generator(device=device)
        self.encoder_generator.manual_seed(derive_seed(seed, "encoder"))
        self.block_std = reference_block_std(layout).to(device=device, dtype=torch.float32)
        self._matrix = None

    def _require_ready(self) -> tuple[SimulatedOPU, LinearDecoder]:
        self._require_setup()
        assert self.opu is not None and self.decoder is not None
        return self.opu, self.decoder

    # -- projection ----------------------------------------------------------------------------------
    def project(self, error: torch.Tensor) -> torch.Tensor:
        self._check_error(error)
        opu, decoder = self._require_ready()
        every = self.profile.recalibrate_every_frames
        if every and opu.frames - self._calibrated_at >= every:
            before = opu.frames
            decoder.calibrate()
            self.calibration_frames += opu.frames - before
            self._calibrated_at = opu.frames
        generator = self.encoder_generator if self.encoder.stochastic else None
        private = self.error_bound is not None  # photonic DP: data-independent noise
        enc = self.encoder.encode(
            error.to(torch.float32), generator, check_finite=False, peak=self.error_bound
        )
        batch, planes, n = enc.frames.shape
        table, index = decoder.measure_indexed(
            enc.frames.reshape(batch * planes, n), every_frame=private
        )
        feedback = enc.combine_indexed(table, index)
        feedback.mul_(self.block_std)
        self._count(projections=1, samples=batch)
        return feedback.to(error.dtype)

    def feedback_matrix(self) -> torch.Tensor | None:
        """``B_eff`` ``(n_out, n_feedback)``: ``s_j M̃_jk`` of the noiseless device (see module doc)."""
        opu, decoder = self._require_ready()
        if self._matrix is None or opu.drifts:
            self._matrix = decoder.matrix().T * self.block_std[None, :]
        return self._matrix

    # -- reporting and state -------------------------------------------------------------------------
    def counters(self) -> dict[str, float]:
        counters = super().counters()
        if self.opu is not None:
            counters.update(self.opu.counters())
        return counters

    def describe(self) -> dict[str, Any]:
        opu, decoder = self._require_ready()
        layout = self._require_setup()
        frames_per_frame = 2 if decoder.name == "reference" else 1
        return {
            "name": self.name,
            "profile": self.profile.name,
            "profile_source": self.profile.source,
            "overrides": json_safe(self.overrides),
            "profile_fields": json_safe(self.profile.fields()),
            "n_out": layout.n_out,
            "n_feedback": layout.n_feedback,
            "encoder": self.encoder.spec,
            "max_frames_per_sample": self.encoder.planes * frames_per_frame,
            "calibration_frames": self.calibration_frames,
            "decoder": decoder.describe(),
            "device": opu.describe(),
            "rescaling": "feedback_j = s_j * a_b * sum_p w_p (M~ x_bp)_j, s_j = 1/sqrt(3 size_l)",
        }

    def state_dict(self) -> dict[str, Any]:
        opu, decoder = self._require_ready()
        return {
            **super().state_dict(),
            "opu": opu.state_dict(),
            "decoder": decoder.state_dict(),
            "encoder_rng": self.encoder_generator.get_state(),
            "calibration_frames": self.calibration_frames,
            "calibrated_at": self._calibrated_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        opu, decoder = self._require_ready()
        opu.load_state_dict(state["opu"])
        decoder.load_state_dict(state["decoder"])
        self.encoder_generator.set_state(state["encoder_rng"])
        self.calibration_frames = int(state["calibration_frames"])
        self._calibrated_at = int(state["calibrated_at"])
        self._matrix = None

    def close(self) -> None:
        if self.opu is not None:
            self.opu.medium.release()
