"""The noise generators and the intensity table of the simulated OPU."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from scipy import stats

from optdfa.backends import create_backend
from optdfa.errors import OptdfaError
from optdfa.optics import SimulatedOPU, load_profile
from optdfa.optics.noise import NoiseSource, quantile_table


def test_quantile_table_is_within_two_to_the_minus_17_of_the_normal_law():
    table = quantile_table().double().numpy()
    n = table.size
    assert n == 2**16 and np.all(np.diff(table) > 0)
    # the law puts 1/n on each entry: its distribution function just below and at entry k is
    # k/n and (k+1)/n, while Φ(entry k) = (k + ½)/n up to float32 rounding of the entry
    phi = stats.norm.cdf(table)
    k = np.arange(n)
    assert np.max(np.abs(phi - (k + 0.5) / n)) < 2**-17 + 2e-7
    assert table.sum() == 0.0 and abs(np.mean(table**2) - 1) < 3e-5  # symmetric, variance 1
    assert 4.3 < table[-1] < 4.35


def test_quantile_draws_are_standard_normal_and_resume_bit_exactly():
    noise = NoiseSource(7)
    z = noise.normal_(torch.empty(1_000_003)).double()
    assert abs(float(z.mean())) < 0.004 and abs(float(z.var()) - 1) < 0.004
    assert stats.kstest(z[:200_000].numpy(), "norm").pvalue > 1e-3
    # consecutive draws differ; the saved state replays them; small draws take another path
    state = noise.get_state()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = torch.load(buf, weights_only=True)  # tensors only
    a = noise.normal_(torch.empty(5000))
    b = noise.normal_(torch.empty(7, 3))
    other = NoiseSource(7)
    other.set_state(restored)
    assert torch.equal(other.normal_(torch.empty(5000)), a)
    assert torch.equal(other.normal_(torch.empty(7, 3)), b)
    assert not torch.equal(a[:21].view(7, 3), b)
    assert not torch.equal(NoiseSource(8).normal_(torch.empty(5000)), a)


def test_torch_generator_keeps_the_stream_of_earlier_versions():
    """``noise_generator="torch"`` reproduces the output optdfa gave before the quantile
    generator (SHA-256 of the bytes recorded with that version)."""
    frames = torch.rand(40, 11, generator=torch.Generator().manual_seed(5)) > 0.5
    opu = SimulatedOPU(
        load_profile("lighton-aurora"),
        11,
        500,
        seed=3,
        mirrors=[20000] * 10 + [500000],
        noise_generator="torch",
    )
    out = opu.transform(frames)
    digest = hashlib.sha256(out.numpy().tobytes()).hexdigest()
    assert digest == "ea9f5f1346535175c2c203414d44660f2b77345f28c16a23de0970ddba8feca7"
    # a state saved by that version (a plain list of torch states) still loads
    noise = NoiseSource(3, streams=2, method="torch")
    noise.set_state([g.get_state() for g in noise.generators])


def test_bad_noise_options_are_rejected():
    with pytest.raises(OptdfaError, match="unknown noise_generator 'box'; valid: quantile, torch"):
        NoiseSource(1, method="box")
    with pytest.raises(OptdfaError, match="noise_streams applies to noise_generator=torch only"):
        NoiseSource(1, streams=2)
    with pytest.raises(ValueError, match="not one of the 'quantile' noise generator"):
        NoiseSource(1).set_state(NoiseSource(1, method="torch").get_state())
    with pytest.raises(
        OptdfaError, match="backend 'sim-opu': noise_streams applies to noise_generator=torch only"
    ):
        create_backend("sim-opu", noise_streams=2)
    with pytest.raises(OptdfaError, match="unknown noise_generator 'fast'; valid: quantile, torch"):
        create_backend("sim-opu", noise_generator="fast")
    with pytest.raises(OptdfaError, match="noise_streams must be a positive integer"):
        create_backend("sim-opu", noise_generator="torch", noise_streams=0)


@pytest.mark.parametrize("n_out", [3000, 700])
def test_intensity_table_equals_the_frame_by_matrix_product(n_out):
    """Transforms through the table of every frame's intensity give the direct product's
    intensities bit for bit (camera off), for a classifier-sized device."""
    p = load_profile("ideal", {"shot_noise": False, "adc": False})
    mirrors = [9000] * 10 + [400000]
    frames = torch.rand(300, 11, generator=torch.Generator().manual_seed(2)) > 0.6
    opu = SimulatedOPU(p, 11, n_out, seed=4, mirrors=mirrors)
    assert opu.describe()["intensity_table"]
    via_table = opu.transform(frames)
    f = torch.mm(frames.float(), opu._weighted_matrix()).view(-1, 2, n_out)
    direct = torch.mul(f[:, 0], f[:, 0]).addcmul_(f[:, 1], f[:, 1])
    expected = direct * opu.camera.conversion.electrons_per_unit
    assert torch.equal(via_table, expected)
    # and equal to the exact fields in float64 up to float32 rounding
    exact = opu.field(frames).to(torch.complex128).abs().square()
    assert torch.allclose(direct.double(), exact, rtol=1e-5, atol=1e-6)


def test_intensity_table_only_for_a_static_medium_of_few_inputs():
    p = load_profile("ideal")
    assert SimulatedOPU(p, 11, 100, seed=1).describe()["intensity_table"]
    assert not SimulatedOPU(p, 30, 100, seed=1).describe()["intensity_table"]  # 2^30 frames
    drifting = load_profile("ideal", {"drift_per_frame": 0.01})
    assert not SimulatedOPU(drifting, 11, 100, seed=1).describe()["intensity_table"]
