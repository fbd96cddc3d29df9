"""A stand-in for LightOn's closed driver ``lightonopu``, to run lightonml's *real-device* path.

``install(monkeypatch, tmp_path)`` puts fake ``lightonopu`` modules in ``sys.modules``, accepts
``pkg_resources.require("lightonopu>=…")`` and writes an OPU configuration file; then
``lightonml.OPU(config_file=…)`` builds, opens and drives :class:`OpuDevice` exactly as it would
drive the hardware: it formats features onto the DMD (the fake ``formatting_v2`` lays each
feature on a contiguous run of mirrors, like LightOn's lined formatting), packs the bits, calls
``transform2`` in batches padded to the configured minimum batch size, and reads uint8 frames.

The optics: a complex Gaussian medium (``E|H|² = 1`` per mirror) on a 64×32 DMD and optdfa's
:class:`~optdfa.optics.camera.Camera` with Aurora's 8-bit sensor, integrating for the
``exposure_us`` lightonml sets. Failures are injected per test:
``OpuDevice.fail_open`` (busy: lightonml's pid-file ``ProcessRunningException``) and
``OpuDevice.fail_transform`` (a transient ``RuntimeError``), each a count of failing calls.
``linear_reconstruction`` shows three frames per input (as a multi-measurement scheme would)
and returns the exact ``Re(x·H)`` of the fake medium: it stands in for LightOn's closed
reconstruction, which no test here can reproduce.
"""

from __future__ import annotations

import json
import sys
import types
import warnings
from contextlib import contextmanager
from enum import Enum

import numpy as np
import torch

with warnings.catch_warnings():  # lightonml itself needs pkg_resources (setuptools<81)
    warnings.simplefilter("ignore", UserWarning)
    import pkg_resources

from optdfa.optics import Camera, load_profile
from optdfa.optics.exposure import camera_at_exposure
from optdfa.optics.noise import NoiseSource

DMD_XY = (64, 32)  # lightonml's cartesian (width, height)
CAMERA_XY = (64, 32)
MIRRORS = DMD_XY[0] * DMD_XY[1]


class AcqState(Enum):
    stopped = 1
    batch = 2
    online = 3


class OutputRoiStrategy(Enum):
    mid_width = 1
    mid_square = 2


def fake_profile():
    """Aurora's camera on a small DMD, with the light scaled to Aurora's level."""
    aurora = load_profile("lighton-aurora")
    scale = aurora.dmd_mirrors / MIRRORS
    return aurora.replace(
        {
            "dmd_rows": DMD_XY[1],
            "dmd_cols": DMD_XY[0],
            "camera_rows": CAMERA_XY[1],
            "camera_cols": CAMERA_XY[0],
            "photon_rate": aurora.photon_rate * scale,
        }
    )


class OpuDevice:
    """The fake driver object lightonml instantiates on a host with an OPU."""

    fail_open = 0
    fail_transform = 0
    instances: list[OpuDevice] = []
    #: the device holding the OPU (lightonopu locks it with a pid file)
    holder: OpuDevice | None = None

    def __init__(self, opu_type, frametime_us, exposure_us, seq_nb_prelim, _, verbose, name):
        self.opu_type, self.name = opu_type, name
        self.frametime_us, self.exposure_us = frametime_us, exposure_us
        self.active = False
        self.open_calls = self.close_calls = 0
        self.output_roi = ((0, 0), CAMERA_XY)
        rng = np.random.default_rng(11)
        shape = (MIRRORS, CAMERA_XY[0] * CAMERA_XY[1])
        self.H = (
            (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2)
        ).astype(np.complex64)
        self.base_camera = Camera.from_profile(fake_profile())
        self.noise = NoiseSource(12)
        OpuDevice.instances.append(self)

    # -- life cycle --------------------------------------------------------------------------
    def open(self):
        self.open_calls += 1
        if OpuDevice.fail_open > 0:
            OpuDevice.fail_open -= 1
            from lightonml.internal.pidfile import ProcessRunningException

            raise ProcessRunningException("process already running in /tmp/opu.pid as pid 4242")
        holder = OpuDevice.holder
        if holder is not None and holder is not self and holder.active:
            from lightonml.internal.pidfile import ProcessRunningException

            raise ProcessRunningException("process already running in /tmp/opu.pid as pid 4243")
        OpuDevice.holder = self
        self.active = True

    def close(self):
        self.close_calls += 1
        self.active = False
        if OpuDevice.holder is self:
            OpuDevice.holder = None

    def reserve(self, n):
        pass

    @contextmanager
    def acquiring(self, n_images=None, online=False):
        yield

    def versions(self):
        return "fake OPU firmware 0.0"

    # -- geometry -----------------------------------------------------------------------------
    input_shape = DMD_XY
    output_shape_max = CAMERA_XY
    output_roi_strategy = OutputRoiStrategy.mid_width
    acq_state = AcqState.stopped
    output_dtype = np.uint8
    gain_dB = 0.0

    @property
    def input_size(self):
        return MIRRORS // 8

    @property
    def output_shape(self):
        return self.output_roi[1]

    @property
    def output_readout_us(self):
        return 100

    # -- frames ----------------------------------------------------------------------------------
    def mirrors(self, packed: np.ndarray) -> torch.Tensor:
        """Packed DMD frames (n, MIRRORS/8) → (n, MIRRORS) bool (lightonml's bit order)."""
        return torch.from_numpy(np.unpackbits(packed, axis=-1, bitorder="little").astype(bool))

    def transform2(self, X, Y, batch_index=None, nb_acq_output=None):
        if OpuDevice.fail_transform > 0:
            OpuDevice.fail_transform -= 1
            raise RuntimeError("acquisition timed out")
        intensity = np.abs(self.field(self.mirrors(X))) ** 2
        camera = camera_at_exposure(self.base_camera, float(self.exposure_us) * 1e-6)
        out = camera.expose(torch.from_numpy(intensity.astype(np.float32)), self.noise)
        # lightonml pads X to the minimum batch but passes Y unpadded: keep the first rows
        Y[:] = out.numpy()[: Y.shape[0], : Y.shape[1]].astype(np.uint8)

    def field(self, mirrors) -> np.ndarray:
        """Exact complex field (n, pixels) of DMD frames (the tests' oracle)."""
        return np.asarray(mirrors, dtype=np.float32) @ self.H

    def transform_single(self, X):
        out = np.empty((1, self.H.shape[1]), dtype=np.uint8)
        self.transform2(X[None], out)
        return out[0]


class Formatter:
    """``formatting_v2.Formatter``: lined mapping, each feature on ``factor`` contiguous mirrors."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.lined_factor = 1

    def define_lined_mapping(self, n_features, roi_size, roi_offset):
        self.n_features = int(np.prod(n_features))
        self.lined_factor = int(np.prod(roi_size)) // self.n_features

    def apply_format(self, src, target, n_features, reverse_bits_order):
        bits = np.unpackbits(src, axis=-1)[..., :n_features]
        mirrors = np.zeros((*bits.shape[:-1], MIRRORS), dtype=np.uint8)
        mirrors[..., : n_features * self.lined_factor] = np.repeat(bits, self.lined_factor, -1)
        target[...] = np.packbits(mirrors, axis=-1, bitorder="little")


class LinearReconstruction:
    """``lightonopu.linear_reconstruction`` stand-in (see the module docstring)."""

    FRAMES_PER_INPUT = 3

    def __init__(self):
        self.pending = []

    def init(self, n_mirrors):
        self.n_mirrors = n_mirrors

    def encode_batch(self, X):
        self.pending.append(np.array(X, dtype=np.uint8))
        return np.repeat(X, self.FRAMES_PER_INPUT, axis=0)

    def decode_batch(self, raw):
        x = self.pending.pop(0)
        device = OpuDevice.instances[-1]
        fmt = Formatter(DMD_XY)
        fmt.define_lined_mapping(x.shape[1], DMD_XY, (0, 0))
        packed = np.empty((x.shape[0], MIRRORS // 8), dtype=np.uint8)
        fmt.apply_format(np.packbits(x, axis=-1), packed, x.shape[1], True)
        field = device.field(device.mirrors(packed))
        assert raw.shape[0] == self.FRAMES_PER_INPUT * x.shape[0]
        return field.real[:, : raw.shape[1]]


def install(monkeypatch, tmp_path, *, driver_version="1.4.2", config=None):
    """Install the fake driver; returns the path of the OPU configuration file."""
    OpuDevice.fail_open = OpuDevice.fail_transform = 0
    OpuDevice.instances = []
    OpuDevice.holder = None
    pkg = types.ModuleType("lightonopu")
    pkg.__version__ = driver_version
    pkg.__path__ = []
    internal = types.ModuleType("lightonopu.internal")
    internal.__path__ = []
    device_mod = types.ModuleType("lightonopu.internal.device")
    device_mod.OpuDevice = OpuDevice
    formatting = types.ModuleType("lightonopu.formatting_v2")
    formatting.Formatter = Formatter
    reconstruction = LinearReconstruction()
    linear = types.ModuleType("lightonopu.linear_reconstruction")
    for name in ("init", "encode_batch", "decode_batch"):
        setattr(linear, name, getattr(reconstruction, name))
    pkg.internal, internal.device = internal, device_mod
    pkg.formatting_v2, pkg.linear_reconstruction = formatting, linear
    for name, module in {
        "lightonopu": pkg,
        "lightonopu.internal": internal,
        "lightonopu.internal.device": device_mod,
        "lightonopu.formatting_v2": formatting,
        "lightonopu.linear_reconstruction": linear,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)

    real_require = pkg_resources.require

    def require(spec):
        if str(spec).startswith("lightonopu"):
            wanted = str(spec).split(">=")[1]
            if tuple(map(int, driver_version.split("."))) < tuple(map(int, wanted.split("."))):
                raise pkg_resources.VersionConflict(f"lightonopu {driver_version}", spec)
            return []
        return real_require(spec)

    monkeypatch.setattr(pkg_resources, "require", require)
    cfg = {
        "type": "fake",
        "name": "fake-opu",
        "version": "test",
        "input": {"frametime_us": 500, "minimum_batch_size": 8},
        "output": {"exposure_us": 400},
        "ones_range": [1, MIRRORS],
        "n_samples_by_pass": 64,
        "n_transform_tries": 1,
    }
    cfg.update(config or {})
    path = tmp_path / "opu.json"
    path.write_text(json.dumps(cfg))
    return path
