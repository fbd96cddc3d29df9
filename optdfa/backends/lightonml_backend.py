"""The ``lightonml`` backend: the DFA feedback projection on a LightOn OPU, through lightonml.

The optical pipeline of :mod:`optdfa.backends.optical`, as in ``sim-opu``: the profile's
encoder writes the error as binary frames, the device returns raw intensities from
``lightonml.OPU.transform``, and the profile's :class:`~optdfa.optics.decoders.ReferenceDecoder`
recovers the linear map ``M̃x`` (unit-variance entries), rescaled to the digital backend's
magnitude::

    feedback_bj = s_j · a_b Σ_p w_p (M̃ x_bp)_j,     s_j = 1/√(3·size_l)

**Frame geometry.** lightonml lays features out on the DMD itself (1-D features, "full" input
ROI: each feature a macro-pixel of ``dmd_mirrors // n_features`` mirrors on hardware, a column
of ``R`` in simulation). The device has ``n_features = n_out + n_ref`` features: one per error
entry, plus ``n_ref = round(f/(1−f)·n_out)`` features (``f`` the profile's
``reference_fraction``) that are always switched together and form the reference block, the
decoder's last input. Feedback unit ``j`` is camera pixel ``j`` of the ``n_feedback``
components lightonml reads. The OPU is fitted once with ``fit1d(n_features=…)`` (never with
data), so lightonml does not re-tune the exposure between calls and the decoder's calibration
stays valid.

**Modes** (options): the real OPU (default; needs LightOn's driver ``lightonopu`` and an OPU
configuration, or ``config_file``); ``simulated=true`` (CLI ``--lightonml-simulated``):
lightonml's own simulated device, noiseless ``|xR|²`` with ``R`` seeded from the run seed;
``simulated=true, noise=true``: optdfa's drop-in
:class:`~optdfa.integrations.lightonml.SimulatedOpuDevice`, the profile's camera, jitter and
drift; ``linear=true``: ``OPU.linear_transform`` returns ``Re(xR)`` directly (no reference
block), normalised to unit variance by a self-calibration on random frames.

**Counters.** ``frames`` counts the frames the device really shows: every row lightonml hands
to the device (its batches, the padding a real OPU's minimum batch adds, the extra frames of
LightOn's linear reconstruction, its internal retries), or, for the drop-in noisy device, its
camera exposures. ``device_seconds`` is the measured wall time of the device calls on hardware
and ``frames × frame_time_s`` of the profile in simulation (modelled); ``energy_joules`` is
``device_seconds × power_w`` of the profile.

Options: ``simulated``, ``noise``, ``linear``, ``profile``, ``overrides``, ``config_file``,
``retries`` (bounded retries of a busy or failing device, default 3), ``retry_delay_s``
(first back-off, doubled at each retry; default 1) and, with ``noise``, ``noise_generator``
(``quantile`` or ``torch``, see :mod:`optdfa.optics.noise`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from optdfa.backends.base import FeedbackLayout
from optdfa.backends.optical import OpticalBackend
from optdfa.errors import OptdfaError
from optdfa.integrations.lightonml_compat import (
    call_with_retries,
    import_lightonml,
    installed_version,
)
from optdfa.optics.decoders import unique_frames
from optdfa.optics.noise import check_noise_options
from optdfa.optics.profile import OpuProfile
from optdfa.seeding import derive_seed

#: the device methods through which lightonml shows frames (counted, see the module docstring)
_DEVICE_CALLS = ("transform2", "transform1", "transform_single", "transform_online")


def reference_features(n_signal: int, reference_fraction: float) -> int:
    """Features in the reference block so that it holds ``reference_fraction`` of the light."""
    return max(1, round(reference_fraction / (1.0 - reference_fraction) * n_signal))


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptdfaError(
            f"backend 'lightonml': option {name} must be true or false, got {value!r}"
        )
    return value


def make_device(
    lightonml: Any,
    profile: OpuProfile,
    *,
    n_signal: int,
    n_reference: int,
    n_out: int,
    seed: int,
    simulated: bool,
    noise: bool,
    noise_generator: str = "quantile",
    config_file: str = "",
    retries: int = 3,
    retry_delay_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> LightonmlDevice:
    """A closed :class:`LightonmlDevice` (a :class:`SimulatedLightonmlDevice` when ``simulated``)
    of ``n_signal`` features plus ``n_reference`` reference features, reading ``n_out`` pixels.

    Its ``lightonml.OPU``, simulated: optdfa's noisy drop-in device (``noise``) or lightonml's
    own simulated device, with ``R`` seeded from ``seed`` (lightonml would always use seed 0).
    Real: lightonml builds the driver's device from the host's OPU configuration (or
    ``config_file``); driver errors become clear :class:`OptdfaError` messages, busy and
    transient ones are retried.
    """
    n_features = n_signal + n_reference
    device = None
    if simulated and noise:
        from optdfa.integrations.lightonml import SimulatedOpuDevice

        device = SimulatedOpuDevice(  # raw codes, as on hardware
            profile, seed=seed, output="dn", noise_generator=noise_generator
        )
    elif simulated:
        from lightonml.internal.simulated_device import SimulatedOpuDevice as LightonSim

        device = LightonSim(
            frametime_us=profile.frame_time_s * 1e6, exposure_us=profile.exposure_s * 1e6
        )
        device.build_random_matrix(n_features, n_out, derive_seed(seed, "lightonml-matrix") % 2**32)

    def create() -> Any:
        try:
            return lightonml.OPU(
                n_components=n_out,
                opu_device=device,
                max_n_features=n_features,
                config_file=config_file,
                open_at_init=False,
                disable_pbar=True,
                rescale="none",
            )
        except IndexError as exc:  # lightonml's output-ROI check
            raise OptdfaError(
                f"{n_out} output pixels requested, more than this OPU's camera region of "
                f"interest gives ({exc})"
            ) from None

    opu = call_with_retries(
        create, what="connecting to the OPU", retries=retries, delay_s=retry_delay_s, sleep=sleep
    )
    kind = SimulatedLightonmlDevice if simulated else LightonmlDevice
    return kind(
        opu,
        n_signal=n_signal,
        n_reference=n_reference,
        n_out=n_out,
        simulated=simulated,
        retries=retries,
        retry_delay_s=retry_delay_s,
        sleep=sleep,
    )


class _FrameCounter:
    """Counts the rows lightonml passes to a device (outermost call only: a simulated device's
    ``transform2`` calls its own ``transform1``)."""

    def __init__(self, device: Any) -> None:
        self.rows = 0
        self._depth = 0
        self.installed = False
        for name in _DEVICE_CALLS:
            method = getattr(device, name, None)
            if method is None:
                continue
            try:
                setattr(device, name, self._wrap(method))
                self.installed = True
            except (AttributeError, TypeError):  # a driver object that refuses new attributes
                return

    def _wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(X: np.ndarray, *args: Any, **kwargs: Any) -> Any:
            if self._depth == 0:
                self.rows += 1 if np.ndim(X) == 1 else int(np.shape(X)[0])
            self._depth += 1
            try:
                return method(X, *args, **kwargs)
            finally:
                self._depth -= 1

        return counted


class LightonmlDevice:
    """``lightonml.OPU`` as an :class:`~optdfa.optics.device.OpticalDevice`.

    Inputs ``0 … n_signal−1`` are features; input ``n_signal`` (when ``n_reference > 0``)
    switches the ``n_reference`` reference features together. ``transform`` returns the raw
    camera output (uint8 DN on hardware, float intensities in simulation) as float32.
    Opening and closing is a context (``with device: …``); failures of the driver are retried
    ``retries`` times and mapped to clear :class:`OptdfaError` messages.
    """

    def __init__(
        self,
        opu: Any,
        *,
        n_signal: int,
        n_reference: int,
        n_out: int,
        simulated: bool,
        retries: int = 3,
        retry_delay_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.opu = opu
        self.n_signal, self.n_reference, self.n_out = int(n_signal), int(n_reference), int(n_out)
        self.n_in = self.n_signal + (1 if self.n_reference else 0)
        self.n_features = self.n_signal + self.n_reference
        self.simulated = simulated
        self.retries, self.retry_delay_s, self._sleep = retries, retry_delay_s, sleep
        self.counter = _FrameCounter(opu.device)
        self.frames_requested = 0
        self.wall_seconds = 0.0
        self._fitted = False

    # -- open / close ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(getattr(self.opu.device, "active", False))

    def _retry(self, action: Callable[[], Any], what: str, reopen: bool = False) -> Any:
        return call_with_retries(
            action,
            what=what,
            retries=self.retries,
            delay_s=self.retry_delay_s,
            sleep=self._sleep,
            before_retry=self._reopen if reopen else None,
        )

    def open(self) -> None:
        """Acquire the OPU (retrying while another process holds it) and fit the input size."""
        if not self.active:
            self._retry(self.opu.open, "opening the OPU")
        if not self._fitted:
            self._retry(
                lambda: self.opu.fit1d(n_features=self.n_features), "configuring the OPU input"
            )
            self._fitted = True

    def close(self) -> None:
        """Release the OPU (safe to call twice)."""
        if self.active:
            self.opu.close()

    def _reopen(self) -> None:
        # the device is in a bad state: a fresh open() is the remedy
        with contextlib.suppress(Exception):
            self.opu.close()
        self._retry(self.opu.open, "re-opening the OPU")

    def __enter__(self) -> LightonmlDevice:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- frames -------------------------------------------------------------------------------------
    def features(self, frames: torch.Tensor) -> np.ndarray:
        """Device frames ``(n, n_in)`` → lightonml input ``(n, n_features)`` uint8."""
        if frames.ndim != 2 or frames.shape[1] != self.n_in:
            raise OptdfaError(
                f"expected frames of shape (n, {self.n_in}), got {tuple(frames.shape)}"
            )
        x = frames.bool().cpu().numpy()
        out = np.zeros((x.shape[0], self.n_features), dtype=np.uint8)
        out[:, : self.n_signal] = x[:, : self.n_signal]
        if self.n_reference:
            out[:, self.n_signal :] = x[:, self.n_signal : self.n_signal + 1]
        return out

    def _run(self, call: Callable[[np.ndarray], Any], x: np.ndarray, what: str) -> torch.Tensor:
        if x.shape[0] == 0:
            return torch.zeros(0, self.n_out)
        self.open()
        start = time.perf_counter()
        try:
            out = self._retry(lambda: call(x), what, reopen=not self.simulated)
        finally:
            self.wall_seconds += time.perf_counter() - start
        self.frames_requested += x.shape[0]
        y = np.asarray(out, dtype=np.float32).reshape(x.shape[0], -1)
        return torch.from_numpy(y[:, : self.n_out].copy())

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        """Binary frames ``(n, n_in)`` → raw camera output ``(n, n_out)`` float32."""
        return self._run(self.opu.transform, self.features(frames), "OPU transform")

    def linear(self, frames: torch.Tensor) -> torch.Tensor:
        """``OPU.linear_transform`` of signal frames ``(n, n_signal)``: ``(n, n_out)`` float32."""
        if frames.ndim != 2 or frames.shape[1] != self.n_signal:
            raise OptdfaError(
                f"expected frames of shape (n, {self.n_signal}), got {tuple(frames.shape)}"
            )
        x = frames.bool().cpu().numpy().astype(np.uint8)
        return self._run(self.opu.linear_transform, x, "OPU linear_transform")

    @property
    def frames_shown(self) -> int:
        """Frames the device showed: the camera exposures of optdfa's drop-in noisy device, else
        the rows passed to the driver (or requested, if the driver cannot be instrumented)."""
        from optdfa.integrations.lightonml import SimulatedOpuDevice

        if isinstance(self.opu.device, SimulatedOpuDevice):
            return self.opu.device.frames
        return self.counter.rows if self.counter.installed else self.frames_requested


class SimulatedLightonmlDevice(LightonmlDevice):
    """A simulated lightonml OPU, which can also report its exact fields (``xR``)."""

    def field(self, frames: torch.Tensor) -> torch.Tensor:
        """Noiseless complex field ``(n, n_out)`` of the current matrix (no frame shown)."""
        matrix = self.opu.device.random_matrix
        x = self.features(frames).astype(np.complex64)
        return torch.from_numpy(np.dot(x, matrix[: self.n_features, : self.n_out]))

    def count_frames(self, n: int) -> None:
        """Charge ``n`` frames shown outside lightonml (the ideal-linear decoder's oracle)."""
        self.counter.rows += int(n)


class LinearTransformDecoder:
    """``M̃x`` from ``OPU.linear_transform``, scaled to unit-variance entries.

    The scale is self-calibrated (no constant of LightOn's closed reconstruction is assumed):
    ``calibration_frames`` random half-on frames ``x`` give ``σ̂² = mean(y²)/mean(|x|)``, the
    variance of one entry, and ``M̃x = y/σ̂``. Distinct nonzero frames are shown once.
    """

    name = "lightonml-linear"

    def __init__(self, device: LightonmlDevice, *, calibration_frames: int, seed: int) -> None:
        self.device = device
        self.n_signal = device.n_signal
        self.calibration_frames = max(16, int(calibration_frames))
        self.seed = seed
        self.norm: torch.Tensor | None = None

    def calibrate(self) -> None:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "linear-calibration"))
        x = torch.rand(self.calibration_frames, self.n_signal, generator=gen) < 0.5
        x[x.sum(dim=1) == 0, 0] = True
        y = self.device.linear(x).double()
        variance = float(y.square().mean()) / float(x.sum(dim=1).double().mean())
        if not variance > 0:
            raise OptdfaError("OPU linear_transform returned only zeros at calibration")
        self.norm = torch.full((self.device.n_out,), variance**-0.5)

    def measure_indexed(
        self, frames: torch.Tensor, *, every_frame: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(table, index)`` with ``table[index]`` = :meth:`measure` (as
        :meth:`~optdfa.optics.decoders.LinearDecoder.measure_indexed`; one row per distinct
        frame). ``every_frame`` (photonic DP) is not offered: the backend has no private encoding.
        """
        if self.norm is None:
            raise RuntimeError("LinearTransformDecoder.calibrate() must run before measure()")
        if every_frame:
            raise OptdfaError("the lightonml linear_transform decoder cannot show every frame")
        distinct, inverse = unique_frames(frames.bool())
        nonzero = distinct.any(dim=1)
        table = torch.zeros(distinct.shape[0], self.device.n_out)
        if bool(nonzero.any()):
            table[nonzero] = self.device.linear(distinct[nonzero]) * self.norm
        return table, inverse

    def measure(self, frames: torch.Tensor) -> torch.Tensor:
        """``M̃x`` for binary frames ``(n, n_signal)``: float32 ``(n, n_out)``."""
        table, index = self.measure_indexed(frames)
        return table[index]

    def matrix(self) -> torch.Tensor:
        """Noiseless ``M̃`` ``(n_out, n_signal)`` = ``Re(R)ᵀ/σ̂`` (simulation only)."""
        if not self.device.simulated:
            raise OptdfaError("the exact linear map of a real OPU is unknown")
        matrix = self.device.opu.device.random_matrix[: self.n_signal, : self.device.n_out]
        return torch.from_numpy(np.ascontiguousarray(matrix.real.T)) * self.norm[:, None]

    def describe(self) -> dict[str, Any]:
        return {"decoder": self.name, "calibration_frames": self.calibration_frames}

    def state_dict(self) -> dict[str, Any]:
        return {"norm": self.norm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.norm = state["norm"]


class LightonmlBackend(OpticalBackend):
    """DFA feedback on a LightOn OPU or lightonml's simulator (see the module docstring)."""

    name = "lightonml"
    OPTIONS = (
        "simulated",
        "noise",
        "linear",
        "profile",
        "overrides",
        "config_file",
        "retries",
        "retry_delay_s",
        "noise_generator",
    )
    PROFILE_TYPES = (str, OpuProfile)
    #: lightonml takes numpy arrays: encoding and decoding run on the CPU
    host_only = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.lightonml = import_lightonml()
        self.device: LightonmlDevice | None = None
        self._sleep: Callable[[float], None] = time.sleep

    def _read_options(self, options: dict[str, Any]) -> None:
        self.simulated = _check_bool("simulated", options.get("simulated", False))
        self.noise = _check_bool("noise", options.get("noise", False))
        self.linear = _check_bool("linear", options.get("linear", False))
        if self.noise and not self.simulated:
            raise OptdfaError(
                "backend 'lightonml': option noise=true adds optdfa's camera to lightonml's "
                "simulator; it needs simulated=true (--lightonml-simulated)"
            )
        noise_generator = options.get("noise_generator", "quantile")
        try:
            check_noise_options(noise_generator, None)
        except OptdfaError as err:
            raise OptdfaError(f"backend 'lightonml': {err}") from None
        if "noise_generator" in options and not self.noise:
            raise OptdfaError(
                "backend 'lightonml': noise_generator chooses the generator of optdfa's camera "
                "noise; it needs noise=true"
            )
        self.noise_generator = noise_generator
        config_file = options.get("config_file", "")
        if not isinstance(config_file, str):
            raise OptdfaError(
                f"backend 'lightonml': option config_file must be a path, got {config_file!r}"
            )
        if config_file and self.simulated:
            raise OptdfaError(
                "backend 'lightonml': config_file configures a real OPU; it does not apply with "
                "simulated=true"
            )
        retries = options.get("retries", 3)
        delay = options.get("retry_delay_s", 1.0)
        if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
            raise OptdfaError(
                f"backend 'lightonml': retries must be a non-negative integer, got {retries!r}"
            )
        if not (
            isinstance(delay, (int, float))
            and not isinstance(delay, bool)
            and math.isfinite(delay)
            and delay >= 0
        ):
            raise OptdfaError(
                f"backend 'lightonml': retry_delay_s must be a non-negative number, got {delay!r}"
            )
        self.config_file = config_file
        self.retries, self.retry_delay_s = retries, float(delay)

    # -- hooks of the optical pipeline -----------------------------------------------------------
    def _open(self, layout: FeedbackLayout, *, seed: int, device: torch.device) -> Any:
        p = self.profile
        n_err, n_pix = layout.n_out, layout.n_feedback
        n_ref = 0 if self.linear else reference_features(n_err, p.reference_fraction)
        if self.simulated:
            self._check_camera(layout)
        self.close()
        self.device = make_device(
            self.lightonml,
            p,
            n_signal=n_err,
            n_reference=n_ref,
            n_out=n_pix,
            seed=seed,
            simulated=self.simulated,
            noise=self.noise,
            noise_generator=self.noise_generator,
            config_file=self.config_file,
            retries=self.retries,
            retry_delay_s=self.retry_delay_s,
            sleep=self._sleep,
        )
        self.device.open()
        if self.linear:
            return LinearTransformDecoder(
                self.device, calibration_frames=p.calibration_frames, seed=seed
            )
        return self._profile_decoder(self.device, reference_mirrors=n_ref, signal_mirrors=1)

    def _frames_shown(self) -> int:
        assert self.device is not None
        return self.device.frames_shown

    @property
    def drifts(self) -> bool:
        return self.noise and self.profile.drift_per_frame > 0

    def _linear_map(self) -> torch.Tensor:
        """Exact in simulation; on hardware measured once from the ``n_out`` basis frames
        (noisy, and charged to the counters)."""
        if self.device.simulated:
            return self.decoder.matrix()  # (n_feedback, n_out)
        eye = torch.eye(self.device.n_signal, dtype=torch.bool)
        return self.decoder.measure(eye).T

    def _device_counters(self) -> dict[str, float]:
        if self.device is None:
            return {}
        frames = float(self.device.frames_shown)
        seconds = frames * self.profile.frame_time_s if self.simulated else self.device.wall_seconds
        return {
            "frames": frames,
            "device_seconds": seconds,
            "energy_joules": seconds * self.profile.power_w,
        }

    def _describe_device(self) -> dict[str, Any]:
        device = self.device
        opu = device.opu
        mode = "real OPU"
        if self.simulated:
            mode = "optdfa noisy simulated device" if self.noise else "lightonml simulated device"
        input_shape = tuple(int(v) for v in opu.device.input_shape)
        d: dict[str, Any] = {
            "mode": mode,
            "linear_transform": self.linear,
            "lightonml_version": installed_version(),
            "n_features": device.n_features,
            "reference_features": device.n_reference,
            "dmd_shape_xy": list(input_shape),
            "mirrors_per_feature": int(np.prod(input_shape)) // device.n_features,
            "frametime_us": float(opu.device.frametime_us),
            "exposure_us": float(opu.device.exposure_us),
            "device_seconds": "measured wall time"
            if not self.simulated
            else "modelled: frames x profile frame_time_s",
            "feedback_matrix": "exact (simulated matrix)"
            if self.simulated
            else "measured from basis frames",
        }
        if self.simulated and self.noise:
            d["noise_generator"] = self.noise_generator
        if not self.simulated:
            d["opu_version"] = opu.version()
        return d

    def _device_state(self) -> dict[str, Any]:
        device = self.device
        state: dict[str, Any] = {
            "frames": device.counter.rows,
            "frames_requested": device.frames_requested,
            "wall_seconds": device.wall_seconds,
        }
        if hasattr(device.opu.device, "state_dict"):
            state["noisy_device"] = device.opu.device.state_dict()
        return state

    def _load_device_state(self, state: dict[str, Any]) -> None:
        device = self.device
        device.counter.rows = int(state["frames"])
        device.frames_requested = int(state["frames_requested"])
        device.wall_seconds = float(state["wall_seconds"])
        if "noisy_device" in state:
            device.opu.device.load_state_dict(state["noisy_device"])

    def close(self) -> None:
        if self.device is not None:
            self.device.close()

    def __enter__(self) -> LightonmlBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
