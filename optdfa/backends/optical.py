"""The optical feedback pipeline shared by every OPU backend (``sim-opu``, ``lightonml``).

One projection of an error batch ``e`` ``(batch, n_out)``:

1. the profile's encoder writes each sample as binary frames:
   ``e_b ≈ a_b Σ_p w_p x_bp`` (:mod:`optdfa.optics.encoders`);
2. the decoder shows the frames on the device — each distinct nonzero frame with and without
   the reference block — and recovers ``M̃ x_bp`` from the camera output, where ``M̃``
   ``(n_feedback, n_out)`` has unit-variance entries (:mod:`optdfa.optics.decoders`);
3. the backend recombines and rescales to the digital backend's magnitude:

       feedback_bj = s_j · a_b Σ_p w_p (M̃ x_bp)_j,     s_j = 1/√(3·size_l)  (column j in block l)

   i.e. the effective feedback matrix is ``B_eff[k, j] = s_j M̃_jk`` — entries of zero mean and
   standard deviation ``s_j`` exactly as :func:`~optdfa.backends.base.reference_block_std`
   prescribes.

The decoder's reference is measured again every ``recalibrate_every_frames`` frames of the
profile (0: once, at set-up); those frames are counted in ``calibration_frames``.

:class:`OpticalBackend` owns this pipeline, the ``profile`` / ``overrides`` options, the seeded
encoder generator and the checkpoint state of encoder, decoder and calibration. A subclass opens
its device and picks the decoder (:meth:`~OpticalBackend._open`) and reports the device's frames,
counters, state and description through the other ``_``-hooks.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch

from optdfa.backends.base import (
    FeedbackBackend,
    FeedbackLayout,
    reference_block_std,
    reject_unknown_options,
)
from optdfa.errors import OptdfaError
from optdfa.optics.decoders import LinearDecoder, make_decoder
from optdfa.optics.device import OpticalDevice
from optdfa.optics.encoders import parse_encoder
from optdfa.optics.profile import load_profile
from optdfa.outputs import json_safe
from optdfa.seeding import derive_seed

DEFAULT_PROFILE = "lighton-aurora"
RESCALING = "feedback_j = s_j * a_b * sum_p w_p (M~ x_bp)_j, s_j = 1/sqrt(3 size_l)"


class OpticalBackend(FeedbackBackend):
    """DFA feedback through encoder → optical device → decoder (see the module docstring).

    Subclasses set :attr:`name` and :attr:`OPTIONS` (``profile`` and ``overrides`` among them)
    and implement :meth:`_open`, :meth:`_frames_shown`, :attr:`drifts` and
    :meth:`_device_counters`; the other hooks have defaults.
    """

    #: the CLI's ``--profile`` / ``--opu`` flags apply to backends that set this
    uses_opu_profile = True
    approximate_feedback = True
    OPTIONS: ClassVar[tuple[str, ...]] = ("profile", "overrides")
    #: types the ``profile`` option accepts (a name or TOML path; some backends also a profile)
    PROFILE_TYPES: ClassVar[tuple[type, ...]] = (str,)
    #: True where the device takes host arrays: encode and decode on the CPU, whatever the model's
    #: device (the feedback is moved to the error's device)
    host_only: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(self.name, options, self.OPTIONS)
        super().__init__()
        profile = options.get("profile", DEFAULT_PROFILE)
        overrides = options.get("overrides", {}) or {}
        if not isinstance(profile, self.PROFILE_TYPES):
            raise OptdfaError(
                f"backend {self.name!r}: option profile must be a name or path, got {profile!r}"
            )
        if not isinstance(overrides, dict):
            raise OptdfaError(
                f"backend {self.name!r}: option overrides must be a table of profile fields, "
                f"got {overrides!r}"
            )
        self._read_options(options)
        self.profile = load_profile(profile, overrides)
        self.profile_spec = profile
        self.overrides = dict(overrides)
        self.encoder = parse_encoder(self.profile.encoder)
        self.decoder: Any = None
        self.seed: int | None = None
        self.work_device = torch.device("cpu")
        self.encoder_generator: torch.Generator | None = None
        self.block_std: torch.Tensor | None = None
        self.calibration_frames = 0
        self._calibrated_at = 0
        self._matrix: torch.Tensor | None = None

    # -- hooks ---------------------------------------------------------------------------------------
    def _read_options(self, options: dict[str, Any]) -> None:
        """Validate and keep the backend's own options (``profile``/``overrides`` are checked)."""

    @abstractmethod
    def _open(self, layout: FeedbackLayout, *, seed: int, device: torch.device) -> Any:
        """Check that ``layout`` fits, open the device and return its (uncalibrated) decoder.

        The decoder offers ``calibrate()``, ``measure(frames)``, ``measure_indexed(frames,
        every_frame=)``, ``matrix()``, ``describe()`` and ``state_dict()``/``load_state_dict()``.
        """

    @abstractmethod
    def _frames_shown(self) -> int:
        """Frames the device has shown so far (calibration included)."""

    @property
    @abstractmethod
    def drifts(self) -> bool:
        """Whether the device's linear map changes as frames are shown (no cached ``B_eff``)."""

    @abstractmethod
    def _device_counters(self) -> dict[str, float]:
        """``frames``, ``device_seconds``, ``energy_joules`` of the open device (``{}`` if none)."""

    def _linear_map(self) -> torch.Tensor:
        """``M̃`` ``(n_feedback, n_out)`` without noise (default: the decoder's exact map)."""
        return self.decoder.matrix()

    def _describe_device(self) -> dict[str, Any]:
        """Backend-specific :meth:`describe` fields (mode, geometry, device facts)."""
        return {}

    def _device_state(self) -> dict[str, Any]:
        """Checkpoint entries of the device (noise generators, drifted medium, frame counts)."""
        return {}

    def _load_device_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_device_state` saved (``state`` is the whole backend state)."""

    # -- set-up ----------------------------------------------------------------------------------
    def setup(
        self, layout: FeedbackLayout, *, seed: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        work = torch.device("cpu") if self.host_only else device
        decoder = self._open(layout, seed=seed, device=work)
        self.layout, self.seed, self.work_device, self.decoder = layout, seed, work, decoder
        decoder.calibrate()
        self.calibration_frames = self._frames_shown()
        self._calibrated_at = self.calibration_frames
        self.encoder_generator = torch.Generator(device=work)
        self.encoder_generator.manual_seed(derive_seed(seed, "encoder"))
        self.block_std = reference_block_std(layout).to(device=work, dtype=torch.float32)
        self._matrix = None

    def _require_ready(self) -> Any:
        """The decoder of a set-up backend."""
        self._require_setup()
        if self.decoder is None:
            raise RuntimeError(f"backend {self.name!r} has no open device")
        return self.decoder

    def _profile_decoder(
        self, device: OpticalDevice, *, reference_mirrors: int, signal_mirrors: int
    ) -> LinearDecoder:
        """The profile's decoder (kind, normalisation, deduplication, calibration) for ``device``."""
        p = self.profile
        return make_decoder(
            p.decoder,
            device,
            reference_mirrors=reference_mirrors,
            signal_mirrors=signal_mirrors,
            normalisation=p.reference_normalisation,
            deduplicate=p.deduplicate_frames,
            calibration_frames=p.calibration_frames,
        )

    def _check_camera(self, layout: FeedbackLayout) -> None:
        """One camera pixel per feedback unit: refuse layouts with more units than pixels."""
        p = self.profile
        if layout.n_feedback > p.camera_pixels:
            raise OptdfaError(
                f"the model has {layout.n_feedback} feedback units but the {p.name} camera reads "
                f"at most {p.camera_rows}×{p.camera_cols} = {p.camera_pixels} pixels (one per unit)"
            )

    # -- projection ----------------------------------------------------------------------------------
    def _recalibrate_if_due(self) -> None:
        every = self.profile.recalibrate_every_frames
        shown = self._frames_shown()
        if every and shown - self._calibrated_at >= every:
            self.decoder.calibrate()  # the medium drifted: measure the reference again
            self.calibration_frames += self._frames_shown() - shown
            self._calibrated_at = self._frames_shown()

    def project(self, error: torch.Tensor) -> torch.Tensor:
        self._check_error(error)
        decoder = self._require_ready()
        self._recalibrate_if_due()
        generator = self.encoder_generator if self.encoder.stochastic else None
        # photonic DP: a fixed encoding scale and every frame shown (data-independent noise)
        peak = self.error_bound if self.private_encoding else None
        enc = self.encoder.encode(
            error.detach().to(self.work_device, torch.float32),
            generator,
            check_finite=False,  # _check_error did
            peak=peak,
        )
        batch, planes, n = enc.frames.shape
        table, index = decoder.measure_indexed(
            enc.frames.reshape(batch * planes, n), every_frame=peak is not None
        )
        feedback = enc.combine_indexed(table, index)
        feedback.mul_(self.block_std)
        self._count(projections=1, samples=batch)
        return feedback.to(device=error.device, dtype=error.dtype)

    def feedback_matrix(self) -> torch.Tensor | None:
        """``B_eff`` ``(n_out, n_feedback)``: ``s_j M̃_jk`` (see the module docstring)."""
        self._require_ready()
        if self._matrix is None or self.drifts:
            self._matrix = self._linear_map().T.to(torch.float32) * self.block_std[None, :]
        return self._matrix

    # -- reporting and state -------------------------------------------------------------------------
    def counters(self) -> dict[str, float]:
        counters = super().counters()
        counters.update(self._device_counters())
        return counters

    def describe(self) -> dict[str, Any]:
        decoder = self._require_ready()
        layout = self._require_setup()
        return {
            "name": self.name,
            "profile": self.profile.name,
            "profile_source": self.profile.source,
            "overrides": json_safe(self.overrides),
            "profile_fields": json_safe(self.profile.fields()),
            "n_out": layout.n_out,
            "n_feedback": layout.n_feedback,
            "encoder": self.encoder.spec,
            "calibration_frames": self.calibration_frames,
            "decoder": decoder.describe(),
            "rescaling": RESCALING,
            **self._describe_device(),
        }

    def state_dict(self) -> dict[str, Any]:
        decoder = self._require_ready()
        return {
            **super().state_dict(),
            **self._device_state(),
            "decoder": decoder.state_dict(),
            "encoder_rng": self.encoder_generator.get_state(),
            "calibration_frames": self.calibration_frames,
            "calibrated_at": self._calibrated_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        decoder = self._require_ready()
        self._load_device_state(state)
        decoder.load_state_dict(state["decoder"])
        self.encoder_generator.set_state(state["encoder_rng"])
        self.calibration_frames = int(state["calibration_frames"])
        self._calibrated_at = int(state["calibrated_at"])
        self._matrix = None
