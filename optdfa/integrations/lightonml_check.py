"""Acceptance checks of optdfa on a LightOn OPU: what only real hardware can confirm.

``python hardware/check_lightonml.py`` (or :func:`run_checks`) exercises, on the host's OPU, the
code paths that the test suite can only reach through a fake driver (docs/lightonml.md lists
them): opening and closing the device, the busy error while another process holds it, raw
uint8 frames and the frame count at the driver (including the padding to the OPU's minimum
batch), temporal noise, lightonml's exposure override, reference decoding and
``linear_transform`` (superposition), and a projection of the ``lightonml`` backend with its
measured device time. Each check reports PASS, FAIL (with the reason) or SKIP.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from optdfa.errors import OptdfaError
from optdfa.integrations.lightonml_compat import check_version, import_lightonml, installed_version
from optdfa.optics.profile import load_profile

#: largest acceptable relative superposition error of a recovered linear map
SUPERPOSITION_LIMIT = 0.35


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


class _Skip(Exception):
    pass


def _superposition(measure: Callable[[torch.Tensor], torch.Tensor], n: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(32, n, generator=gen) < 0.5
    x[x.sum(dim=1) == 0, 0] = True
    split = torch.rand(32, n, generator=gen) < 0.5
    whole = measure(x).double()
    parts = measure(x & split).double() + measure(x & ~split).double()
    return float((parts - whole).norm() / whole.norm())


def run_checks(
    *,
    simulated: bool = False,
    config_file: str = "",
    profile: str = "lighton-aurora",
    pixels: int = 1024,
    inputs: int = 16,
    seed: int = 0,
    retries: int = 0,
    retry_delay_s: float = 0.0,
) -> list[Check]:
    """Run every check (see the module docstring); never raises for a failing check."""
    from optdfa.backends import FeedbackLayout, create_backend
    from optdfa.backends.lightonml_backend import (
        LightonmlDevice,
        make_device,
        reference_features,
    )
    from optdfa.optics.decoders import make_decoder

    results: list[Check] = []
    state: dict[str, Any] = {}
    p = load_profile(profile)
    n_ref = reference_features(inputs, p.reference_fraction)
    n_features = inputs + n_ref

    def new_device(retry: int) -> LightonmlDevice:
        return make_device(
            state["lightonml"],
            p,
            n_signal=inputs,
            n_reference=n_ref,
            n_out=pixels,
            seed=seed,
            simulated=simulated,
            noise=simulated,
            config_file=config_file,
            retries=retry,
            retry_delay_s=retry_delay_s,
        )

    def check(name: str, needs: tuple[str, ...] = ()) -> Callable[[Callable[[], str]], None]:
        def run(body: Callable[[], str]) -> None:
            missing = [k for k in needs if k not in state]
            if missing:
                results.append(Check(name, "SKIP", f"needs an earlier check ({missing[0]})"))
                return
            try:
                results.append(Check(name, "PASS", body()))
            except _Skip as exc:
                results.append(Check(name, "SKIP", str(exc)))
            except (OptdfaError, AssertionError) as exc:
                results.append(Check(name, "FAIL", str(exc) or type(exc).__name__))
            except Exception as exc:  # report, do not stop the other checks
                results.append(Check(name, "FAIL", f"{type(exc).__name__}: {exc}"))

        return run

    @check("lightonml version")
    def _() -> str:
        version = installed_version()
        check_version(version)
        state["lightonml"] = import_lightonml()
        try:
            import lightonopu  # type: ignore[import-not-found]

            driver = f", lightonopu {getattr(lightonopu, '__version__', '?')}"
        except ImportError:
            driver = ", no lightonopu driver" if not simulated else ""
        return f"lightonml {version}{driver}"

    @check("open and close (context)", needs=("lightonml",))
    def _() -> str:
        device = new_device(retries)
        with device:
            assert device.active, "the device is not active inside the context"
            name = device.opu.version().splitlines()[0]
        assert not device.active, "the device is still active after the context"
        state["device"] = device
        return name

    @check("busy OPU is reported", needs=("device",))
    def _() -> str:
        if simulated:
            raise _Skip("a simulated device has no lock")
        holder = state["device"]
        with holder:
            other = new_device(0)
            try:
                other.open()
            except OptdfaError as exc:
                assert "busy" in str(exc), f"wrong error: {exc}"
                return str(exc).split(";")[0]
            finally:
                other.close()
        raise AssertionError("a second process could open the OPU while it was held")

    @check("raw frames and frame count", needs=("device",))
    def _() -> str:
        device = state["device"]
        with device:
            before = device.counter.rows
            frames = torch.ones(8, device.n_in, dtype=torch.bool)
            out = device.transform(frames).numpy()
            shown = device.counter.rows - before
        assert out.shape == (8, pixels), f"output shape {out.shape}"
        assert np.array_equal(out, np.round(out)), "the output is not integer camera codes"
        assert out.min() >= 0 and out.max() <= 65535, "codes outside 0..65535"
        assert not device.counter.installed or shown >= 8, f"{shown} frames counted for 8"
        state["frames"] = out
        how = (
            "at the driver"
            if device.counter.installed
            else "as requested (driver not instrumented)"
        )
        return f"codes {int(out.min())}..{int(out.max())}; {shown} frames counted {how}"

    @check("temporal noise", needs=("frames",))
    def _() -> str:
        spread = float(state["frames"].std(axis=0).mean())
        assert spread > 0, "8 identical frames gave identical outputs: no camera noise visible"
        return f"mean temporal std {spread:.3g} DN"

    @check("exposure override", needs=("device",))
    def _() -> str:
        device = state["device"]
        opu = device.opu
        with device:
            nominal = float(opu.device.exposure_us)
            signal = []
            for us in (nominal, max(1, round(nominal / 2))):
                opu.fit1d(n_features=n_features, exposure_us=us)
                dark = device.transform(torch.zeros(8, device.n_in, dtype=torch.bool)).double()
                lit = device.transform(torch.ones(8, device.n_in, dtype=torch.bool)).double()
                signal.append(float((lit.mean(0) - dark.mean(0)).mean()))
            opu.fit1d(n_features=n_features)  # back to the configured exposure
        ratio = signal[1] / signal[0]
        half = max(1, round(nominal / 2)) / nominal
        assert abs(ratio / half - 1) < 0.15, (
            f"signal ratio {ratio:.3f} for exposure ratio {half:.3f}"
        )
        return f"signal ratio {ratio:.3f} at exposure ratio {half:.3f}"

    @check("reference decoding (superposition)", needs=("device",))
    def _() -> str:
        device = state["device"]
        with device:
            decoder = make_decoder(
                "reference",
                device,
                reference_mirrors=n_ref,
                signal_mirrors=1,
                calibration_frames=max(16, p.calibration_frames),
            )
            decoder.calibrate()
            error = _superposition(decoder.measure, inputs, seed)
        assert error < SUPERPOSITION_LIMIT, f"superposition error {error:.3f}"
        return f"relative error {error:.3f}"

    @check("linear_transform (superposition)", needs=("device",))
    def _() -> str:
        device = state["device"]
        with device:
            opu = device.opu

            def measure(x: torch.Tensor) -> torch.Tensor:
                full = torch.zeros(x.shape[0], n_features, dtype=torch.bool)
                full[:, :inputs] = x  # the reference features stay off
                y = opu.linear_transform(full.numpy().astype(np.uint8))
                return torch.from_numpy(np.asarray(y, dtype=np.float32))

            error = _superposition(measure, inputs, seed)
        assert math.isfinite(error) and error < SUPERPOSITION_LIMIT, f"error {error:.3f}"
        return f"relative error {error:.3f}"

    @check("lightonml backend projection", needs=("lightonml",))
    def _() -> str:
        options: dict[str, Any] = {
            "simulated": simulated,
            "noise": simulated,
            "profile": profile,
            "retries": retries,
            "retry_delay_s": retry_delay_s,
        }
        if config_file:
            options["config_file"] = config_file
        backend = create_backend("lightonml", **options)
        layout = FeedbackLayout.from_shapes(10, [("h", (min(pixels, 256),))])
        try:
            backend.setup(layout, seed=seed, device=torch.device("cpu"), dtype=torch.float32)
            feedback = backend.project(
                torch.randn(8, 10, generator=torch.Generator().manual_seed(1))
            )
            counters = backend.counters()
        finally:
            backend.close()
        assert torch.isfinite(feedback).all(), "non-finite feedback"
        assert counters["frames"] > 0 and counters["device_seconds"] > 0, str(counters)
        return f"{int(counters['frames'])} frames, {counters['device_seconds']:.3g} s device time"

    return results


def format_checks(results: list[Check]) -> str:
    width = max(len(r.name) for r in results)
    return "\n".join(f"{r.status:4s}  {r.name:<{width}}  {r.detail}" for r in results)
