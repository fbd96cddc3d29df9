"""Physics of the simulated OPU: speckle statistics, camera noise laws, quantisation, costs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from optdfa.errors import OptdfaError
from optdfa.optics import Camera, SimulatedOPU, load_profile


def _frames(n, k, seed=0, p=0.5):
    return torch.rand(n, k, generator=torch.Generator().manual_seed(seed)) < p


def _device(profile="ideal", overrides=None, n_in=64, n_out=20_000, **kw):
    """A device whose inputs share the whole DMD (realistic brightness)."""
    p = load_profile(profile, overrides)
    mirrors = [p.dmd_mirrors // n_in] * n_in
    return SimulatedOPU(p, n_in, n_out, seed=kw.pop("seed", 1), mirrors=mirrors, **kw)


def test_noiseless_intensities_follow_the_exponential_speckle_law():
    dev = _device()
    frame = _frames(1, 64, seed=2)
    n_on = int(frame.sum()) * dev.mirrors[0].item()
    intensity = dev.intensity(frame)[0].double().numpy()  # 20 000 independent pixels
    ks = stats.kstest(intensity / n_on, "expon")  # E|Hx|² = number of mirrors on
    assert ks.pvalue > 0.01, ks
    # the test has teeth: the intensity of a real (not complex) Gaussian field is chi²(1)
    real_field = dev.field(frame)[0].real.double().numpy() ** 2 * 2 / n_on
    assert stats.kstest(real_field, "expon").pvalue < 1e-6
    # the ideal camera returns the mean photo-electrons
    out = dev.transform(frame)[0].double().numpy()
    k = dev.camera.conversion.electrons_per_unit
    np.testing.assert_allclose(out, intensity * k, rtol=1e-5)


def _repeat(dev, frame, n):
    return dev.transform(frame.expand(n, -1).contiguous()).double()


@pytest.mark.parametrize("exact_below", [math.inf, 0.0])
def test_shot_noise_variance_matches_poisson(exact_below):
    # shot noise only, ADC with a fine gain: Var(DN) = μ/g² + 1/12 (Poisson + rounding)
    gain = 4.0
    dev = _device(
        "ideal",
        {
            "shot_noise": True,
            "poisson_exact_below_e": exact_below,
            "adc": True,
            "adc_bits": 16,
            "gain_e_per_dn": gain,
        },
        n_out=256,
    )
    frame = _frames(1, 64, seed=4)
    mu = dev.intensity(frame)[0].double() * dev.camera.conversion.electrons_per_unit
    dn = _repeat(dev, frame, 600)
    keep = mu > 100  # pixels bright enough that the rounding term is small
    predicted = mu[keep] / gain**2 + 1 / 12
    ratio = dn.var(dim=0)[keep] / predicted
    assert abs(float(ratio.mean()) - 1) < 0.05
    assert torch.allclose(dn.mean(dim=0)[keep], mu[keep] / gain, rtol=0.02)


def test_dark_frame_statistics_read_noise_and_dark_current():
    dev = _device(
        "ideal",
        {
            "shot_noise": True,
            "dark_current_e_per_s": 5e6,
            "read_noise_e": 30.0,
            "adc": True,
            "adc_bits": 12,
            "gain_e_per_dn": 2.0,
            "offset_dn": 100.0,
        },
        n_out=128,
    )
    dark = torch.zeros(1, 64, dtype=torch.bool)
    dn = _repeat(dev, dark, 2000)
    mean_dark = 5e6 * 400e-6  # 2000 e-
    assert abs(float(dn.mean()) - (100 + mean_dark / 2)) < 0.5
    predicted_var = (mean_dark + 30.0**2) / 4 + 1 / 12
    assert abs(float(dn.var(dim=0).mean()) / predicted_var - 1) < 0.03


def test_saturation_clips_at_the_top_code_and_quantisation_error_is_half_a_dn():
    bits = 6
    dev = _device("ideal", {"adc": True, "adc_bits": bits, "gain_e_per_dn": 20.0}, n_out=4000)
    frames = _frames(8, 64, seed=5)
    dn = dev.transform(frames)
    assert float(dn.max()) == 2**bits - 1
    assert float((dn == 2**bits - 1).float().mean()) > 0.2
    assert torch.equal(dn, dn.round())
    exact = dev.intensity(frames) * dev.camera.conversion.electrons_per_unit / 20.0
    inside = exact < 2**bits - 1.5
    assert float((dn - exact)[inside].abs().max()) <= 0.5 + 1e-4
    # full-well saturation before the ADC: charge stops at the well
    well = _device("ideal", {"saturation": True, "full_well_e": 1000.0}, n_out=4000)
    assert float(well.transform(frames).max()) == 1000.0


def test_fused_and_staged_camera_agree_in_distribution():
    # a camera whose full well is below the ADC top code: no shadowing, pixels near the well
    p = load_profile(
        "noisy-lab",
        {"drift_per_frame": 0.0, "power_jitter": 0.0, "adc_bits": 12, "gain_e_per_dn": 4.0},
    )
    cam = Camera.from_profile(p)
    intensity = torch.linspace(1, 12_000 / cam.conversion.electrons_per_unit, 200)
    x = intensity.expand(3000, -1).contiguous()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    fused = cam.expose(x.clone(), g1).double()
    staged = cam.expose_staged(x.clone(), g2).double()
    assert torch.allclose(fused.mean(0), staged.mean(0), atol=0.5, rtol=0.01)
    assert torch.allclose(fused.var(0), staged.var(0), rtol=0.12, atol=0.3)


def test_gaussian_shot_noise_is_invisible_at_the_aurora_dn_resolution():
    # total variation between the DN laws of Poisson and N(μ, μ) charges, aurora camera
    p = load_profile("lighton-aurora")
    g, off, sr = p.gain_e_per_dn, p.offset_dn, p.read_noise_e
    edges = (np.arange(1, p.max_dn + 1) - off - 0.5) * g

    def law(sf):
        cdf = np.array([sf(e) for e in edges])
        return -np.diff(np.concatenate([[1.0], cdf, [0.0]]))

    worst = 0.0
    for mu in [1, 10, 30, 64, 200, 1000, 5000]:
        k = np.arange(0, int(mu + 15 * math.sqrt(mu) + 60))
        pk = stats.poisson.pmf(k, mu)
        poisson = law(lambda e, k=k, pk=pk: np.sum(pk * stats.norm.sf((e - k) / sr)))
        gauss = law(lambda e, mu=mu: stats.norm.sf((e - mu) / math.sqrt(mu + sr**2)))
        worst = max(worst, 0.5 * np.abs(poisson - gauss).sum())
    assert worst < 5e-3


def test_same_seeds_same_outputs_and_state_resume():
    p = load_profile("lighton-aurora")
    frames = _frames(40, 64, seed=6)
    m = [16_000] * 64
    a = SimulatedOPU(p, 64, 500, seed=9, mirrors=m)
    b = SimulatedOPU(p, 64, 500, seed=9, mirrors=m)
    assert torch.equal(a.transform(frames), b.transform(frames))
    c = SimulatedOPU(p, 64, 500, seed=9, noise_seed=123, mirrors=m)
    assert not torch.equal(a.transform(frames), c.transform(frames))
    state = a.state_dict()
    first = a.transform(frames)
    a.load_state_dict(state)
    assert torch.equal(a.transform(frames), first)
    # one thread or two (torch's parallel streams in threads or not, the quantile lookup
    # split or not): same numbers
    x = _frames(200, 64, seed=7)
    for method in ("quantile", "torch"):
        torch.set_num_threads(1)
        d = SimulatedOPU(p, 64, 500, seed=9, mirrors=m, noise_generator=method)
        out_one = d.transform(x)
        torch.set_num_threads(2)
        e = SimulatedOPU(p, 64, 500, seed=9, mirrors=m, noise_generator=method)
        assert torch.equal(out_one, e.transform(x))
        assert d.describe()["noise_generator"] == method


def test_power_jitter_and_medium_drift():
    frames = _frames(1, 64, seed=8).expand(400, -1).contiguous()
    jitter = _device("ideal", {"power_jitter": 0.05}, n_out=300)
    out = jitter.transform(frames).double()
    per_frame = out.mean(1) / out.mean()
    assert abs(float(per_frame.std()) - 0.05) < 0.01
    assert float((out / out[0]).std(1).max()) < 1e-4  # one factor per frame
    drift = _device("ideal", {"drift_per_frame": 0.01}, n_out=3000)
    f0 = drift.field(frames[:1])[0]
    drift.transform(frames[:100])  # 100 frames go by
    f100 = drift.field(frames[:1])[0]
    corr = float((f0.conj() * f100).real.sum() / (f0.abs().norm() * f100.abs().norm()))
    assert abs(corr - 0.99**100) < 0.05
    # the drifted medium keeps its statistics
    assert abs(float(f100.abs().square().mean() / f0.abs().square().mean()) - 1) < 0.1


def test_cost_counters():
    dev = _device("lighton-aurora", n_out=100)
    dev.transform(_frames(30, 64))
    c = dev.counters()
    assert c["frames"] == 30
    assert c["device_seconds"] == pytest.approx(30 * 500e-6)
    assert c["energy_joules"] == pytest.approx(30 * 500e-6 * 30.0)


def test_bad_frames_and_layouts_are_rejected():
    dev = _device("ideal", n_out=10)
    with pytest.raises(
        OptdfaError, match="binary \\(bool, or uint8 holding 0/1\\), got dtype torch.float32"
    ):
        dev.transform(torch.ones(2, 64))
    with pytest.raises(OptdfaError, match="uint8 frames may hold only 0 and 1, found 2"):
        dev.transform(torch.full((2, 64), 2, dtype=torch.uint8))
    with pytest.raises(OptdfaError, match="built for 64 inputs"):
        dev.transform(torch.ones(2, 65, dtype=torch.bool))
    with pytest.raises(OptdfaError, match="larger than the DMD \\(912×1140 = 1039680 mirrors\\)"):
        dev.transform(torch.ones(1, 1_039_681, dtype=torch.bool))
    assert dev.transform(torch.ones(64, dtype=torch.uint8)).shape == (1, 10)
    p = load_profile("ideal")
    with pytest.raises(OptdfaError, match="the inputs need 2000000 mirrors"):
        SimulatedOPU(p, 2, 10, seed=0, mirrors=[1_000_000, 1_000_000])
    with pytest.raises(OptdfaError, match="the camera has 1080×1920"):
        SimulatedOPU(p, 2, 1920 * 1080 + 1, seed=0)
    drifting = p.replace({"drift_per_frame": 1e-4})
    with pytest.raises(OptdfaError, match="a drifting medium is simulated densely"):
        SimulatedOPU(drifting, 64, 1000, seed=0, dense_budget_bytes=1000)
