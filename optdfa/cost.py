"""Hardware cost model: what one DFA training step costs on an OPU, and the digital alternative.

For a model (its feedback layout: error dimension ``n_out``, feedback dimension
``n_feedback``), a batch size, an encoder and a decoder:

- **frames per step** (optical): every sample's error becomes ``planes`` binary frames (the
  encoder: ternary and stochastic 2, ``bitplane:K`` 2K); the ``reference`` decoder shows each
  frame twice (with and without the reference block), ``ideal-linear`` once. So at most
  ``batch × planes × frames_per_plane × passes`` frames per step, where ``passes`` tiles a
  projection that does not fit one device: ``ceil(n_out / error inputs of the DMD) ×
  ceil(n_feedback / camera pixels)`` (an assumption: each pass re-shows the frames on another DMD
  block / camera region). Frame deduplication (``deduplicate_frames``) and all-zero frames (not
  shown) can only lower the count: the model gives the upper bound, sweeps measure the actual one.
  Calibration (``2 × calibration_frames`` for the reference decoder, once per run) is amortised
  over the run's steps.
- **device seconds** = frames × ``frame_time_s``; **joules** = device seconds × ``power_w`` (both
  from the profile, whose file cites each figure's source).
- **digital alternative on this CPU**: the same projection, a ``(batch × n_out)·(n_out ×
  n_feedback)`` float32 GEMM, *timed here* (median of repeated runs). For sizes not timed, a
  least-squares fit ``t = flops/F`` (:func:`scipy.optimize.nnls`, relative residuals) of
  timings taken on this machine at out-of-cache sizes (``FIT_SIZES``).
- **a GPU**, not measured here: a roofline from datasheet figures (:data:`REFERENCE_GPU`):
  ``max(flops / peak FP32, bytes / memory bandwidth)``, at the board's maximum power.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from optdfa.errors import OptdfaError
from optdfa.optics.encoders import parse_encoder
from optdfa.optics.profile import OpuProfile

#: (input shape, outputs, training samples) of the built-in datasets (teacher: from its spec)
DATASET_FACTS: dict[str, tuple[tuple[int, ...], int, int]] = {
    "digits": ((1, 8, 8), 10, 1437),
    "mnist": ((1, 28, 28), 10, 60_000),
    "fashion-mnist": ((1, 28, 28), 10, 60_000),
}
#: frames shown per encoded frame by each decoder
FRAMES_PER_PLANE = {"reference": 2, "ideal-linear": 1}


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of a GPU (not measured here)."""

    name: str
    fp32_flops: float  # FLOP/s, dense FP32 (no tensor cores)
    memory_bandwidth: float  # bytes/s
    memory_bytes: float
    power_w: float  # board power at full load
    source: str


#: the GPU of the crossover figure (stated, not measured)
REFERENCE_GPU = GpuSpec(
    name="NVIDIA A100 SXM4 80 GB",
    fp32_flops=19.5e12,
    memory_bandwidth=2.039e12,
    memory_bytes=80e9,
    power_w=400.0,
    source=(
        "NVIDIA A100 Tensor Core GPU datasheet (2021): FP32 19.5 TFLOPS, HBM2e 2,039 GB/s, "
        "80 GB, max TDP 400 W (SXM4)"
    ),
)


# -- optical cost -------------------------------------------------------------------------------
@dataclass
class OpticalStepCost:
    """Cost of the feedback projection of one training step on an OPU (see the module docstring)."""

    profile: str
    n_out: int
    n_feedback: int
    batch_size: int
    encoder: str
    decoder: str
    planes: int
    frames_per_plane: int
    passes: int
    frames_per_step: int  # upper bound, calibration excluded
    calibration_frames: int  # once per run
    steps_per_run: int | None
    frames_per_step_amortised: float
    device_seconds_per_step: float
    joules_per_step: float
    frame_time_s: float
    power_w: float
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def error_inputs(profile: OpuProfile) -> int:
    """Error entries one DMD can show beside the reference block (one mirror each at least)."""
    return profile.dmd_mirrors - max(1, int(profile.reference_fraction * profile.dmd_mirrors))


def optical_step_cost(
    profile: OpuProfile,
    n_out: int,
    n_feedback: int,
    batch_size: int,
    *,
    encoder: str | None = None,
    decoder: str | None = None,
    steps_per_run: int | None = None,
) -> OpticalStepCost:
    """Frames, device seconds and joules of one step's projection (encoder/decoder default to the profile's)."""
    for name, value in (("n_out", n_out), ("n_feedback", n_feedback), ("batch size", batch_size)):
        if not (isinstance(value, int) and value >= 1):
            raise OptdfaError(f"{name} must be a positive integer, got {value!r}")
    if steps_per_run is not None and steps_per_run < 1:
        raise OptdfaError(f"steps per run must be a positive integer, got {steps_per_run}")
    enc = parse_encoder(encoder if encoder is not None else profile.encoder)
    dec = decoder if decoder is not None else profile.decoder
    if dec not in FRAMES_PER_PLANE:
        raise OptdfaError(f"unknown decoder {dec!r}; valid decoders: {', '.join(FRAMES_PER_PLANE)}")
    per_plane = FRAMES_PER_PLANE[dec]
    passes = math.ceil(n_out / error_inputs(profile)) * math.ceil(
        n_feedback / profile.camera_pixels
    )
    frames = batch_size * enc.planes * per_plane * passes
    calibration = 2 * profile.calibration_frames * passes if dec == "reference" else 0
    amortised = frames + (calibration / steps_per_run if steps_per_run else 0.0)
    seconds = amortised * profile.frame_time_s
    where = profile.source or profile.name
    return OpticalStepCost(
        profile=profile.name,
        n_out=n_out,
        n_feedback=n_feedback,
        batch_size=batch_size,
        encoder=enc.spec,
        decoder=dec,
        planes=enc.planes,
        frames_per_plane=per_plane,
        passes=passes,
        frames_per_step=frames,
        calibration_frames=calibration,
        steps_per_run=steps_per_run,
        frames_per_step_amortised=amortised,
        device_seconds_per_step=seconds,
        joules_per_step=seconds * profile.power_w,
        frame_time_s=profile.frame_time_s,
        power_w=profile.power_w,
        sources={
            "frame_time_s": f"profile {profile.name} [cost] frame_time_s ({where})",
            "power_w": f"profile {profile.name} [cost] power_w ({where})",
            "planes": f"encoder {enc.spec} (optdfa.optics.encoders)",
            "frames_per_plane": f"decoder {dec}: {per_plane} frame(s) per encoded frame",
            "calibration_frames": f"profile {profile.name} [encoding] calibration_frames",
            "passes": (
                f"ceil(n_out / {error_inputs(profile)} DMD error inputs) x "
                f"ceil(n_feedback / {profile.camera_pixels} camera pixels)"
            ),
        },
    )


# -- digital: measured CPU GEMM, stated GPU ------------------------------------------------------
def gemm_flops(batch: int, n_out: int, n_feedback: int) -> float:
    """Floating-point operations of ``(batch × n_out)·(n_out × n_feedback)``."""
    return 2.0 * batch * n_out * n_feedback


def gemm_bytes(batch: int, n_out: int, n_feedback: int) -> float:
    """Float32 bytes the GEMM must move at least once (both operands and the result)."""
    return 4.0 * (n_out * n_feedback + batch * n_out + batch * n_feedback)


def measure_cpu_gemm(
    batch: int, n_out: int, n_feedback: int, *, repeats: int = 20, min_seconds: float = 0.2
) -> float:
    """Median seconds of one float32 ``(batch × n_out)·(n_out × n_feedback)`` on this CPU.

    Uses torch's current thread count. Repeats until ``repeats`` timings and ``min_seconds`` of
    timing have been collected (at most 10 000 calls).
    """
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(batch, n_out, generator=gen)
    B = torch.randn(n_out, n_feedback, generator=gen)
    out = torch.empty(batch, n_feedback)
    for _ in range(3):
        torch.mm(e, B, out=out)
    times: list[float] = []
    spent = 0.0
    while (len(times) < repeats or spent < min_seconds) and len(times) < 10_000:
        t0 = time.perf_counter()
        torch.mm(e, B, out=out)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return statistics.median(times)


@dataclass
class CpuGemmModel:
    """``t = t0 + flops/flop_rate`` fitted to timings of this CPU (the fit sets ``t0 = 0``).

    (For a fixed batch the bytes moved are nearly proportional to the FLOPs, so a separate
    bandwidth term cannot be identified from the timings; the fitted rate is the sustained one.)
    """

    t0: float
    flop_rate: float  # FLOP/s
    threads: int
    measurements: list[dict[str, float]]

    def seconds(self, batch: float, n_out: Any, n_feedback: Any) -> Any:
        flops = 2.0 * batch * np.asarray(n_out, dtype=float) * np.asarray(n_feedback, dtype=float)
        return self.t0 + flops / self.flop_rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: (n_out, n_feedback) sizes timed for the fit: B from 16 MB to 800 MB, beyond the caches, where
#: the crossover with an OPU lies (smaller GEMMs run faster per FLOP; cost times them directly)
FIT_SIZES = (
    (1_000, 4_000),
    (1_000, 10_000),
    (2_000, 20_000),
    (10_000, 4_000),
    (5_000, 20_000),
    (10_000, 20_000),
)


def fit_cpu_gemm(batch: int, sizes=FIT_SIZES, repeats: int = 5) -> CpuGemmModel:
    """Time the GEMM at ``sizes`` on this CPU and fit the sustained FLOP rate (``t = flops/F``).

    Least squares on relative residuals (each row divided by its timing), non-negative.
    """
    from scipy.optimize import nnls

    rows, times, measured = [], [], []
    for n_out, n_fb in sizes:
        t = measure_cpu_gemm(batch, n_out, n_fb, repeats=repeats, min_seconds=0.05)
        measured.append({"batch": batch, "n_out": n_out, "n_feedback": n_fb, "seconds": t})
        rows.append([gemm_flops(batch, n_out, n_fb)])
        times.append(t)
    a = np.asarray(rows) / np.asarray(times)[:, None]
    coef, _ = nnls(a, np.ones(len(times)))
    t0, per_flop = 0.0, float(coef[0])
    if per_flop <= 0:
        raise OptdfaError("the CPU timings do not grow with the GEMM size: cannot fit a FLOP rate")
    return CpuGemmModel(
        t0=t0,
        flop_rate=1.0 / per_flop,
        threads=torch.get_num_threads(),
        measurements=measured,
    )


def gpu_gemm_seconds(gpu: GpuSpec, batch: float, n_out: Any, n_feedback: Any) -> Any:
    """Roofline time of the GEMM on ``gpu`` (datasheet peak FP32 and bandwidth; no launch cost)."""
    n_out = np.asarray(n_out, dtype=float)
    n_feedback = np.asarray(n_feedback, dtype=float)
    flops = 2.0 * batch * n_out * n_feedback
    nbytes = 4.0 * (n_out * n_feedback + batch * n_out + batch * n_feedback)
    return np.maximum(flops / gpu.fp32_flops, nbytes / gpu.memory_bandwidth)


def machine_memory_bytes() -> float:
    """Physical memory of this machine (bytes)."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


# -- the crossover figure -------------------------------------------------------------------------
def crossover_figure(
    profile: OpuProfile,
    batch_size: int,
    path: str | os.PathLike[str],
    *,
    cpu: CpuGemmModel,
    encoder: str | None = None,
    decoder: str | None = None,
    gpu: GpuSpec = REFERENCE_GPU,
    n_out_range: tuple[float, float] = (2, 1e6),
    n_feedback_range: tuple[float, float] = (1e2, 1e7),
    marker: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Where the OPU beats this CPU (time) and the stated GPU (time and energy), over (n_out, n_feedback).

    Left: ``log10(CPU seconds / OPU seconds)`` per step, with the crossover (ratio 1) for the CPU
    and for the GPU; right: ``log10(GPU joules / OPU joules)``. Hatched: ``B`` (float32) does not
    fit this machine's memory. Dots: the sizes timed on this CPU. Returns the figure's numbers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optdfa.outputs import atomic_savefig

    n_out = np.logspace(*np.log10(n_out_range), 121)
    n_fb = np.logspace(*np.log10(n_feedback_range), 121)
    NO, NF = np.meshgrid(n_out, n_fb, indexing="ij")
    opu_s = np.empty_like(NO)
    for i, a in enumerate(n_out):
        for j, b in enumerate(n_fb):
            c = optical_step_cost(
                profile, int(round(a)), int(round(b)), batch_size, encoder=encoder, decoder=decoder
            )
            opu_s[i, j] = c.device_seconds_per_step
    cpu_s = cpu.seconds(batch_size, NO, NF)
    gpu_s = gpu_gemm_seconds(gpu, batch_size, NO, NF)
    opu_j = opu_s * profile.power_w
    gpu_j = gpu_s * gpu.power_w
    ram = machine_memory_bytes()
    too_big = ram < 4.0 * NO * NF
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 5))
    panels = (
        (axes[0], np.log10(cpu_s / opu_s), "log10(CPU time / OPU time) per step"),
        (axes[1], np.log10(gpu_j / opu_j), f"log10(GPU energy / OPU energy) per step ({gpu.name})"),
    )
    for ax, z, title in panels:
        lim = max(1.0, float(np.nanmax(np.abs(z))))
        mesh = ax.pcolormesh(NF, NO, z, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
        fig.colorbar(mesh, ax=ax, label="> 0: the OPU wins")
        ax.contour(NF, NO, z, levels=[0.0], colors="k", linewidths=1.5)
        ax.contourf(
            NF, NO, too_big.astype(float), levels=[0.5, 1.5], hatches=["///"], colors="none"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("feedback dimension n_feedback (hidden units fed)")
        ax.set_ylabel("error dimension n_out")
        ax.set_title(title, fontsize=9)
        if marker is not None:
            ax.plot(marker[1], marker[0], "k*", ms=12)
    gpu_time_ratio = np.log10(gpu_s / opu_s)
    axes[0].contour(
        NF, NO, gpu_time_ratio, levels=[0.0], colors="g", linewidths=1.5, linestyles="--"
    )
    for m in cpu.measurements:
        axes[0].plot(m["n_feedback"], m["n_out"], "ko", ms=3)
    axes[0].plot([], [], "k-", label="OPU = this CPU (measured GEMM, fitted)")
    axes[0].plot([], [], "g--", label=f"OPU = {gpu.name} (datasheet roofline)")
    axes[0].plot([], [], "ko", ms=3, label="sizes timed on this CPU")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"{profile.name}: batch {batch_size}, "
        f"{optical_step_cost(profile, 10, 10, batch_size, encoder=encoder, decoder=decoder).encoder}"
        f" / {decoder or profile.decoder}; hatched: B does not fit in {ram / 1e9:.0f} GB of RAM",
        fontsize=10,
    )
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)
    return {
        **crossover_products(
            profile, batch_size, cpu=cpu, encoder=encoder, decoder=decoder, gpu=gpu
        ),
        "ram_bytes": ram,
    }


def crossover_products(
    profile: OpuProfile,
    batch_size: int,
    *,
    cpu: CpuGemmModel,
    encoder: str | None = None,
    decoder: str | None = None,
    gpu: GpuSpec = REFERENCE_GPU,
) -> dict[str, float]:
    """``n_out × n_feedback`` above which one OPU pass beats the CPU (time) and the GPU (time, energy).

    One pass: the OPU's step time ``T`` does not depend on the sizes. The CPU matches it at
    ``2·batch·P = (T − t0)·F``; the GPU (compute-bound for batch ≥ 3 at these datasheet figures) at
    ``2·batch·P = T·peak`` in time and ``2·batch·P = T·(P_opu/P_gpu)·peak`` in energy.
    """
    opu = optical_step_cost(profile, 1, 1, batch_size, encoder=encoder, decoder=decoder)
    t = opu.device_seconds_per_step
    per_product = 2.0 * batch_size
    gpu_rate = min(gpu.fp32_flops, gpu.memory_bandwidth * per_product / 4.0)
    return {
        "opu_seconds_per_step": t,
        "opu_joules_per_step": opu.joules_per_step,
        "cpu_time_product": max(0.0, t - cpu.t0) * cpu.flop_rate / per_product,
        "gpu_time_product": t * gpu_rate / per_product,
        "gpu_energy_product": t * (profile.power_w / gpu.power_w) * gpu_rate / per_product,
    }


# -- the model's feedback layout --------------------------------------------------------------------
def model_layout(
    model: str,
    input_shape: tuple[int, ...],
    n_out: int,
    *,
    hidden: list[int],
    channels: list[int] | None = None,
    kernel_size: int = 5,
    activation: str = "tanh",
):
    """The :class:`~optdfa.backends.FeedbackLayout` DFA uses for this model (built on the CPU)."""
    from optdfa.models import build_model
    from optdfa.rules import DirectFeedbackAlignment
    from optdfa.seeding import torch_generator

    net = build_model(
        model,
        input_shape,
        n_out,
        hidden=hidden,
        activation=activation,
        channels=channels,
        kernel_size=kernel_size,
        generator=torch_generator(0, "init"),
    )
    rule = DirectFeedbackAlignment("digital", seed=0)
    rule.attach(net, torch.zeros(2, *input_shape))
    rule.close()
    return rule.layout
