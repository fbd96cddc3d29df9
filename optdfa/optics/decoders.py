"""Decoders: a linear projection of binary frames, recovered from a device.

The device's last input is the **reference block** ``r``: a fixed group of ``reference_mirrors``
always-on mirrors with field ``c = H r`` at the camera. The other ``n_signal`` inputs carry the
frames ``x`` (each a macro-pixel of ``signal_mirrors`` mirrors). With ``κ`` the camera output per
unit intensity and ``I(·)`` the camera output of a frame,

    I(x + r) − I(x) − [Ī(r) − Ī(0)] = κ(|Hx + c|² − |Hx|² − |c|²) = 2κ Re(c̄ ⊙ Hx)

is linear in ``x`` (dark charge and black level cancel). ``R_j = Ī(r) − Ī(0) = κ|c_j|²`` is
calibrated once from ``calibration_frames`` repeats of the reference-only and the dark frame.

**Normalisation** to a map ``M̃`` with unit-variance entries. Write ``H_jk = √m_sig G_jk``,
``c_j = √m_ref G_jr`` (``G`` unit complex Gaussian) and ``ĝ = mean_j |G_jr|²`` (≈ 1). The
estimate ``κ̂ = mean_j R_j / m_ref`` (= κĝ) makes the decoder self-calibrating: no profile
constant is needed, so the same decoder works on a real OPU. Then

    (M̃x)_j = y_j / √(2 m_sig κ̂ P_j),      y_j = 2κ Re(c̄_j (Hx)_j),

with ``P_j = max(R_j, 0.01·mean R)`` for ``pixel`` normalisation and ``P_j = mean R`` for
``global``. Noiselessly this is ``M̃_jk = √(2/ĝ) Re(ḡ_jr G_jk)/d_j`` with
``d_j = max(|G_jr|, √(0.01ĝ))`` (pixel; for the 99 % of pixels whose reference is brighter than
1 % of the mean, ``M̃_jk = √(2/ĝ) Re(e^{−iφ_j} G_jk)`` is exactly N(0, 1/ĝ) — a rotated circular
Gaussian) or ``d_j = √ĝ`` (global; entries with unit mean square, scaled per pixel by the
reference amplitude).

``ideal-linear`` computes the same ``M̃x`` from the exact fields (no camera): it isolates the
encoding from the camera. Both decoders show each distinct nonzero frame once per call when
``deduplicate`` is on (a zero frame projects to 0 without being shown).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from optdfa.errors import OptdfaError
from optdfa.optics.device import OpticalDevice, transform_into
from optdfa.optics.dmd import MAX_PACKED_INPUTS, bit_weights, frame_keys
from optdfa.optics.workspace import Workspace

#: pixel normalisation never divides by less than this share of the mean reference intensity
PIXEL_FLOOR = 0.01


def unique_frames(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of bool ``(n, k)`` frames and, per frame, the index of its distinct row."""
    k = frames.shape[1]
    if k <= MAX_PACKED_INPUTS:
        # pack each frame into an int64 key; the distinct keys unpack into the distinct frames
        distinct_keys, inverse = torch.unique(frame_keys(frames), return_inverse=True)
        return (distinct_keys[:, None] & bit_weights(k, frames.device)) != 0, inverse
    uniq, inverse = torch.unique(frames, dim=0, return_inverse=True)
    return uniq, inverse


def normaliser(
    reference: torch.Tensor, *, reference_mirrors: int, signal_mirrors: int, mode: str
) -> torch.Tensor:
    """Per-pixel factor ``1/√(2 m_sig κ̂ P_j)`` turning ``y = 2κ Re(c̄ Hx)`` into ``M̃x``.

    ``reference`` is ``R_j = κ|c_j|²`` per pixel (any output unit).
    """
    mean = float(reference.mean())
    if not mean > 0:
        raise OptdfaError(
            f"the reference block gives no light on the camera (mean {mean:.3g}); raise the "
            f"reference fraction, the exposure or the photon rate"
        )
    kappa = mean / reference_mirrors
    if mode == "pixel":
        power = reference.clamp_min(PIXEL_FLOOR * mean)
    elif mode == "global":
        power = torch.full_like(reference, mean)
    else:
        raise OptdfaError(f"unknown reference normalisation {mode!r}; valid: pixel, global")
    return (2.0 * signal_mirrors * kappa * power).rsqrt()


class LinearDecoder(ABC):
    """Recovers ``M̃x`` ``(n, n_out)`` for binary frames ``x`` ``(n, n_signal)`` from a device."""

    name: str = ""

    def __init__(
        self,
        device: OpticalDevice,
        *,
        reference_mirrors: int,
        signal_mirrors: int,
        normalisation: str = "pixel",
        deduplicate: bool = True,
    ) -> None:
        if device.n_in < 2:
            raise OptdfaError("a reference decoder needs a device with at least 2 inputs")
        self.device = device
        self.n_signal = device.n_in - 1
        self.n_out = device.n_out
        self.reference_mirrors = int(reference_mirrors)
        self.signal_mirrors = int(signal_mirrors)
        self.normalisation = normalisation
        self.deduplicate = deduplicate
        #: per-pixel normalisation (set by :meth:`calibrate`)
        self.norm: torch.Tensor | None = None

    @abstractmethod
    def calibrate(self) -> None:
        """Measure what the decoder needs (reference intensity); charges frames if it shows any."""

    @abstractmethod
    def _measure_distinct(self, frames: torch.Tensor, out: torch.Tensor) -> None:
        """Write ``M̃x`` of nonzero frames ``(u, n_signal)`` into ``out`` ``(u, n_out)``."""

    def measure_indexed(
        self, frames: torch.Tensor, *, every_frame: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Measurements without repetition: ``(table (k+1, n_out), index (n,))``.

        ``table[index]`` equals :meth:`measure` of ``frames``: ``table`` holds one row per
        distinct nonzero frame (every frame when deduplication is off) and a final zero row,
        which all-zero frames point to. Lets callers recombine without copying repeated rows.
        ``every_frame=True`` shows every frame, repeated or all-zero, so that each carries its
        own, independent device noise (photonic DP).
        """
        if self.norm is None:
            raise RuntimeError(f"{type(self).__name__}.calibrate() must run before measure()")
        if frames.ndim != 2 or frames.shape[1] != self.n_signal:
            raise OptdfaError(
                f"expected frames of shape (n, {self.n_signal}), got {tuple(frames.shape)}"
            )
        frames = frames.bool()
        if self.deduplicate and not every_frame:
            distinct, inverse = unique_frames(frames)
        else:
            distinct, inverse = frames, None
        nonzero = distinct.any(dim=1)
        if every_frame:
            nonzero = torch.ones_like(nonzero)
        if bool(nonzero.all()):
            shown, position = distinct, None
        else:
            shown = distinct[nonzero]
        k = shown.shape[0]
        table = torch.empty(k + 1, self.n_out, device=self.norm.device)
        table[k] = 0
        if k:
            self._measure_distinct(shown, table[:k])
        if k != distinct.shape[0]:
            position = torch.full((distinct.shape[0],), k, dtype=torch.int64, device=frames.device)
            position[nonzero] = torch.arange(k, device=frames.device)
            index = position if inverse is None else position[inverse]
        elif inverse is not None:
            index = inverse
        else:
            index = torch.arange(k, device=frames.device)
        return table, index.to(table.device)

    def measure(self, frames: torch.Tensor, *, every_frame: bool = False) -> torch.Tensor:
        """``M̃x`` for binary frames ``(n, n_signal)``: float32 ``(n, n_out)``."""
        table, index = self.measure_indexed(frames, every_frame=every_frame)
        return table[index]

    def _with_reference(self, frames: torch.Tensor, on: bool) -> torch.Tensor:
        ref = torch.full((frames.shape[0], 1), on, dtype=torch.bool, device=frames.device)
        return torch.cat((frames, ref), dim=1)

    def matrix(self) -> torch.Tensor:
        """The noiseless map ``M̃`` ``(n_out, n_signal)`` from the exact fields (needs ``device.field``)."""
        field = getattr(self.device, "field", None)
        if field is None:
            raise OptdfaError(f"{type(self.device).__name__} cannot report its exact fields")
        eye = torch.eye(self.n_signal, dtype=torch.bool)
        signal = field(self._with_reference(eye, False))  # (n_signal, n_out) = √m_sig G
        c = field(self._with_reference(torch.zeros(1, self.n_signal, dtype=torch.bool), True))[0]
        norm = normaliser(
            c.abs().square(),
            reference_mirrors=self.reference_mirrors,
            signal_mirrors=self.signal_mirrors,
            mode=self.normalisation,
        )
        y = 2.0 * (c.conj()[None, :] * signal).real  # κ = 1 in field units
        return (y * norm[None, :]).T.contiguous()

    def describe(self) -> dict[str, Any]:
        return {
            "decoder": self.name,
            "normalisation": self.normalisation,
            "deduplicate": self.deduplicate,
            "reference_mirrors": self.reference_mirrors,
            "signal_mirrors": self.signal_mirrors,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"norm": None if self.norm is None else self.norm.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        norm = state.get("norm")
        device = self.norm.device if self.norm is not None else "cpu"
        self.norm = None if norm is None else norm.to(device)


class ReferenceDecoder(LinearDecoder):
    """Reference-field recovery from camera intensities (see the module docstring)."""

    name = "reference"

    def __init__(self, device: OpticalDevice, *, calibration_frames: int, **kwargs: Any) -> None:
        super().__init__(device, **kwargs)
        if calibration_frames < 1:
            raise OptdfaError(f"calibration_frames must be ≥ 1, got {calibration_frames}")
        self.calibration_frames = int(calibration_frames)
        self._workspace = Workspace(getattr(device, "device", "cpu"))
        #: calibrated ``R_j = Ī(r) − Ī(0)`` and ``Ī(0)`` (camera output units)
        self.reference: torch.Tensor | None = None
        self.dark: torch.Tensor | None = None

    def calibrate(self) -> None:
        k = self.calibration_frames
        frames = torch.zeros(2 * k, self.device.n_in, dtype=torch.bool)
        frames[:k, -1] = True
        out = self.device.transform(frames).to(torch.float64)
        self.dark = out[k:].mean(dim=0).to(torch.float32)
        self.reference = (out[:k].mean(dim=0) - out[k:].mean(dim=0)).to(torch.float32)
        self.norm = normaliser(
            self.reference,
            reference_mirrors=self.reference_mirrors,
            signal_mirrors=self.signal_mirrors,
            mode=self.normalisation,
        )

    def _measure_distinct(self, frames: torch.Tensor, out: torch.Tensor) -> None:
        u = frames.shape[0]
        shown = torch.zeros(2 * u, self.n_signal + 1, dtype=torch.bool, device=frames.device)
        shown[:u, :-1] = frames  # with the reference block …
        shown[:u, -1] = True
        shown[u:, :-1] = frames  # … and without it
        dn = transform_into(self.device, shown, self._workspace.get("dn", (2 * u, self.n_out)))
        torch.sub(dn[:u], dn[u:], out=out)
        out.sub_(self.reference).mul_(self.norm)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["calibration_frames"] = self.calibration_frames
        if self.reference is not None:
            d["mean_reference_output"] = float(self.reference.mean())
            d["mean_dark_output"] = float(self.dark.mean())
        return d

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "reference": None if self.reference is None else self.reference.cpu(),
            "dark": None if self.dark is None else self.dark.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = self.norm.device if self.norm is not None else "cpu"
        for key in ("reference", "dark"):
            value = state.get(key)
            setattr(self, key, None if value is None else value.to(device))


class IdealLinearDecoder(LinearDecoder):
    """``M̃x`` from the exact fields, no camera (each shown frame is still charged)."""

    name = "ideal-linear"

    def calibrate(self) -> None:
        field = self.device.field  # type: ignore[attr-defined]
        c = field(self._with_reference(torch.zeros(1, self.n_signal, dtype=torch.bool), True))[0]
        self._conj_reference = c.conj()
        self.norm = normaliser(
            c.abs().square(),
            reference_mirrors=self.reference_mirrors,
            signal_mirrors=self.signal_mirrors,
            mode=self.normalisation,
        )

    def _measure_distinct(self, frames: torch.Tensor, out: torch.Tensor) -> None:
        f = self.device.field(self._with_reference(frames, False))  # type: ignore[attr-defined]
        self.device.count_frames(frames.shape[0])  # type: ignore[attr-defined]
        torch.mul((self._conj_reference[None, :] * f).real, 2.0, out=out)
        out.mul_(self.norm)


DECODER_CLASSES = {"reference": ReferenceDecoder, "ideal-linear": IdealLinearDecoder}


def make_decoder(
    name: str,
    device: OpticalDevice,
    *,
    reference_mirrors: int,
    signal_mirrors: int,
    normalisation: str = "pixel",
    deduplicate: bool = True,
    calibration_frames: int = 64,
) -> LinearDecoder:
    """Build the decoder ``name`` (``reference`` or ``ideal-linear``) for ``device``."""
    common = {
        "reference_mirrors": reference_mirrors,
        "signal_mirrors": signal_mirrors,
        "normalisation": normalisation,
        "deduplicate": deduplicate,
    }
    if name == "reference":
        return ReferenceDecoder(device, calibration_frames=calibration_frames, **common)
    if name == "ideal-linear":
        if not hasattr(device, "field"):
            raise OptdfaError(
                f"the ideal-linear decoder needs exact fields, which {type(device).__name__} lacks"
            )
        return IdealLinearDecoder(device, **common)
    raise OptdfaError(f"unknown decoder {name!r}; valid decoders: {', '.join(DECODER_CLASSES)}")
