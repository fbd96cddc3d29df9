"""lightonml: version checks, the drop-in noisy device, and the ``lightonml`` backend — simulated,
and through lightonml's real-device path with a fake LightOn driver (tests/fake_lightonopu.py)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fake_lightonopu  # noqa: E402

from optdfa.backends import FeedbackLayout, create_backend, reference_block_std  # noqa: E402
from optdfa.cli.main import main  # noqa: E402
from optdfa.errors import OptdfaError  # noqa: E402
from optdfa.integrations import lightonml_compat as compat  # noqa: E402
from optdfa.integrations.lightonml import SimulatedOpuDevice  # noqa: E402
from optdfa.optics import TernaryEncoder, load_profile  # noqa: E402
from optdfa.optics.decoders import normaliser  # noqa: E402

lightonml = compat.import_lightonml()
from lightonml.internal.simulated_device import (  # noqa: E402
    SimulatedOpuDevice as LightonSimulatedDevice,
)

LAYOUT = FeedbackLayout.from_shapes(10, [("h1", (300,)), ("h2", (120,))])
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # restored by conftest


def _binary(n, k, seed=0):
    return np.random.default_rng(seed).integers(0, 2, (n, k)).astype(np.uint8)


def _errors(n=48, seed=0):
    return torch.randn(n, 10, generator=torch.Generator().manual_seed(seed))


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# -- versions --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "message"),
    [(None, "not installed"), ("1.3.1", "is too old"), ("2.0.0", "is too new")],
)
def test_unsupported_or_missing_lightonml_names_the_install_command(monkeypatch, version, message):
    monkeypatch.setattr(compat, "installed_version", lambda: version)
    with pytest.raises(OptdfaError, match=message) as info:
        create_backend("lightonml", simulated=True)
    assert '--no-deps "lightonml==1.4.3"' in str(info.value)
    compat.check_version("1.4.3")  # the tested version passes
    compat.check_version("1.4.7")


def test_device_errors_are_classified():
    from lightonml.internal.pidfile import ProcessRunningException

    missing = ModuleNotFoundError("No module named 'lightonopu'", name="lightonopu")
    assert compat.classify_device_error(missing) == "not-found"
    assert compat.classify_device_error(ProcessRunningException("already running")) == "busy"
    assert compat.classify_device_error(RuntimeError("acquisition timed out")) == "transient"
    assert compat.classify_device_error(ValueError("bad shape")) == "fatal"
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("acquisition timed out")
        return "ok"

    delays = []
    assert compat.call_with_retries(flaky, what="x", retries=2, delay_s=0.5, sleep=delays.append)
    assert delays == [0.5, 1.0]
    calls.clear()
    with pytest.raises(OptdfaError, match="failed 2 times in a row"):
        compat.call_with_retries(flaky, what="x", retries=1, delay_s=0, sleep=delays.append)


# -- the drop-in device ------------------------------------------------------------------------------
def test_dropin_device_passes_lightonml_checks_and_is_exact_without_noise():
    dev = SimulatedOpuDevice("ideal", seed=3)
    assert type(dev).__name__ == "SimulatedOpuDevice" and isinstance(dev, LightonSimulatedDevice)
    opu = lightonml.OPU(n_components=60, opu_device=dev, max_n_features=24, disable_pbar=True)
    x = _binary(30, 24)
    R = dev.random_matrix
    exact = np.abs(x @ R) ** 2
    opu.fit1d(n_features=24)
    np.testing.assert_allclose(opu.transform(x), exact, rtol=1e-5)
    np.testing.assert_allclose(opu.fit_transform1d(x), exact, rtol=1e-5)
    x2 = x.reshape(30, 4, 6)
    np.testing.assert_allclose(opu.fit_transform2d(x2), exact, rtol=1e-5)
    opu.fit2d(n_features=(4, 6))
    np.testing.assert_allclose(opu.transform(torch.from_numpy(x2)).numpy(), exact, rtol=1e-5)
    # linear_transform: the same answer as lightonml's own simulator with the same matrix
    reference = lightonml.OPU(n_components=60, simulated=True, max_n_features=24)
    reference.device.build_random_matrix(24, 60, dev.matrix_seed)
    opu.fit1d(n_features=24)
    reference.fit1d(n_features=24)
    np.testing.assert_allclose(
        opu.linear_transform(x), reference.linear_transform(x), rtol=1e-4, atol=1e-6
    )
    with pytest.raises(TypeError, match="must be of type SimulatedOpuDevice"):
        lightonml.OPU(opu_device=object())  # the check our class name satisfies


def test_dropin_device_camera_quantisation_noise_and_exposure():
    dev = SimulatedOpuDevice("lighton-aurora", seed=1, output="dn")
    opu = lightonml.OPU(n_components=4000, opu_device=dev, max_n_features=16, disable_pbar=True)
    frame = np.ones((400, 16), dtype=np.uint8)  # one frame, all features on, 400 repeats
    opu.fit1d(n_features=16)
    dn = opu.transform(frame)
    assert dn.dtype == np.uint8 and len(np.unique(dn)) <= 256
    p = dev.profile
    mu_e = np.abs(frame[0] @ dev.random_matrix) ** 2 * dev.units_per_intensity()
    mu_e *= p.photon_rate * p.exposure_s * p.quantum_efficiency
    mid = (mu_e > 40 * p.gain_e_per_dn) & (mu_e < 150 * p.gain_e_per_dn)
    var = dn.astype(float).var(axis=0)[mid]
    predicted = (mu_e[mid] + p.read_noise_e**2) / p.gain_e_per_dn**2 + 1 / 12
    assert abs(var.mean() / predicted.mean() - 1) < 0.05  # shot + read + rounding (jitter ≈ 0)
    mean = dn.astype(float).mean(axis=0)[mid]
    assert abs(np.mean(mean - p.offset_dn) / np.mean(mu_e[mid] / p.gain_e_per_dn) - 1) < 0.01
    # lightonml's exposure override reaches the camera: half the exposure, half the signal
    opu.fit1d(n_features=16, exposure_us=200)
    half = opu.transform(frame[:100]).astype(float).mean(axis=0)[mid]
    assert abs(np.mean(half - p.offset_dn) / np.mean(mean - p.offset_dn) - 0.5) < 0.02
    # intensity output: lightonml's units, still at most 256 levels
    dev2 = SimulatedOpuDevice("lighton-aurora", seed=1)
    opu2 = lightonml.OPU(n_components=4000, opu_device=dev2, max_n_features=16, disable_pbar=True)
    y = opu2.fit_transform1d(frame[:50])
    assert y.dtype == np.float32 and len(np.unique(y)) <= 256
    unsaturated = mu_e < 200 * p.gain_e_per_dn
    exact = np.abs(frame[0] @ dev2.random_matrix) ** 2
    assert abs(y.mean(axis=0)[unsaturated].mean() / exact[unsaturated].mean() - 1) < 0.01
    assert dev2.counters()["frames"] == 50


def test_dropin_device_drift_seeding_and_resume():
    prof = load_profile("noisy-lab", {"drift_per_frame": 0.01})
    dev = SimulatedOpuDevice(prof, seed=5)
    opu = lightonml.OPU(n_components=500, opu_device=dev, max_n_features=40, disable_pbar=True)
    opu.fit1d(n_features=40)
    before = dev.random_matrix.copy()
    x = _binary(50, 40, seed=2)
    opu.transform(x)
    after = dev.random_matrix
    corr = np.real(np.vdot(before, after)) / np.linalg.norm(before) / np.linalg.norm(after)
    assert corr == pytest.approx(0.99**50, abs=0.01)  # ρ^frames
    assert np.std(after.real) == pytest.approx(np.std(before.real), rel=0.03)  # law kept
    state = pickle.loads(pickle.dumps(dev))  # lightonml pickles OPUs with their device
    a, b = dev.transform1(x), state.transform1(x)
    np.testing.assert_array_equal(a, b)  # noise, drift and matrix resume bit-exactly
    twin = SimulatedOpuDevice(prof, seed=5)
    twin.build_random_matrix(40, 500)
    np.testing.assert_array_equal(twin.random_matrix, before)


def test_dropin_linear_transform_models_holographic_recovery():
    dev = SimulatedOpuDevice("lighton-aurora", seed=2)
    opu = lightonml.OPU(
        n_components=2000, opu_device=dev, max_n_features=32, disable_pbar=True, rescale="none"
    )
    opu.fit1d(n_features=32)
    x = _binary(20, 32, seed=4)
    y = opu.linear_transform(x)
    assert _corr(y, (x @ dev.random_matrix).real) > 0.97
    assert dev.frames == 2 * 20 + 2 * dev.profile.calibration_frames


# -- the backend, simulated --------------------------------------------------------------------------
def _backend(**options):
    b = create_backend("lightonml", **options)
    b.setup(LAYOUT, seed=4, device=CPU, dtype=torch.float32)
    return b


@pytest.mark.parametrize("linear", [False, True])
def test_simulated_backend_is_exact_and_at_the_digital_scale(linear):
    # a deterministic encoder, so that the exact expectation is known
    b = _backend(
        simulated=True, linear=linear, profile="ideal", overrides={"encoder": "ternary:0.1"}
    )
    B = b.feedback_matrix()
    ref = reference_block_std(LAYOUT)
    assert B.shape == (10, 420)
    for block, s in ((B[:, :300], ref[0]), (B[:, 300:], ref[-1])):
        assert abs(float(block.std()) / float(s) - 1) < 0.08
    e = _errors()
    expected = TernaryEncoder(0.1).encode(e).decode() @ B
    got = b.project(e)
    assert torch.allclose(got, expected, atol=2e-3 * float(expected.abs().max()))
    c = b.counters()
    assert c["frames"] > 0 and c["device_seconds"] == pytest.approx(c["frames"] * 500e-6)
    assert c["energy_joules"] == pytest.approx(c["device_seconds"] * 30.0)
    d = b.describe()
    assert d["mode"] == "lightonml simulated device" and d["linear_transform"] is linear
    assert d["reference_features"] == (0 if linear else 10)


def test_noisy_simulated_backend_tracks_the_exact_map_and_resumes():
    e = _errors(64, seed=1)
    ternary = {"encoder": "ternary:0.1"}  # deterministic: the exact expectation is known
    aurora = _backend(simulated=True, noise=True, overrides=ternary)
    exact = TernaryEncoder(0.1).encode(e).decode() @ aurora.feedback_matrix()
    assert _corr(aurora.project(e), exact) > 0.99
    # 6 bits, 20 e⁻ read noise
    b = _backend(simulated=True, noise=True, profile="noisy-lab", overrides=ternary)
    first = b.project(e)
    assert 0.8 < _corr(first, TernaryEncoder(0.1).encode(e).decode() @ b.feedback_matrix()) < 0.98
    assert b.counters()["frames"] == b.device.opu.device.frames  # camera exposures
    state = b.state_dict()
    again = b.project(e)
    b.load_state_dict(state)
    assert torch.equal(b.project(e), again)  # noise, drift and counters restored
    assert b.describe()["noise_generator"] == "quantile"
    legacy = _backend(simulated=True, noise=True, noise_generator="torch")
    assert legacy.device.opu.device.noise.method == "torch"
    assert legacy.describe()["noise_generator"] == "torch"


def test_backend_option_errors():
    with pytest.raises(OptdfaError, match="needs simulated=true"):
        create_backend("lightonml", noise=True)
    with pytest.raises(OptdfaError, match="retries must be a non-negative integer"):
        create_backend("lightonml", retries=-1)
    with pytest.raises(OptdfaError, match="has no option"):
        create_backend("lightonml", exposure=3)
    with pytest.raises(OptdfaError, match="noise_generator chooses .* it needs noise=true"):
        create_backend("lightonml", simulated=True, noise_generator="torch")
    with pytest.raises(OptdfaError, match="backend 'lightonml': unknown noise_generator 'x'"):
        create_backend("lightonml", simulated=True, noise=True, noise_generator="x")


# -- the real-device path, with the fake driver ---------------------------------------------------------
def _exact_map(opu_device, n_signal, n_ref, n_out):
    """``M̃`` ``(n_out, n_signal)`` from the fake medium's fields (lined formatting)."""
    n_feat = n_signal + n_ref
    factor = fake_lightonopu.MIRRORS // n_feat
    fields = opu_device.H[: n_feat * factor].reshape(n_feat, factor, -1).sum(axis=1)[:, :n_out]
    c = fields[n_signal:].sum(axis=0)
    norm = normaliser(
        torch.from_numpy(np.abs(c) ** 2),
        reference_mirrors=n_ref,
        signal_mirrors=1,
        mode="global",  # the profile's reference normalisation
    ).numpy()
    return (2 * (np.conj(c)[None, :] * fields[:n_signal]).real * norm).T


def test_real_device_path_end_to_end(monkeypatch, tmp_path):
    config = fake_lightonopu.install(monkeypatch, tmp_path)
    ternary = {"encoder": "ternary:0.1"}  # deterministic: a known number of frames
    b = _backend(config_file=str(config), retry_delay_s=0, overrides=ternary)
    dev = fake_lightonopu.OpuDevice.instances[-1]
    assert dev.active and dev.open_calls == 1
    exact = _exact_map(dev, 10, 10, 420)
    measured = (b.feedback_matrix() / b.block_std[None, :]).T.numpy()  # basis frames, noisy
    assert _corr(measured, exact) > 0.95
    frames_before = b.counters()["frames"]
    b.project(_errors(1, seed=3))  # 2 distinct frames, each with and without the reference
    c = b.counters()
    assert c["frames"] - frames_before == 8  # 4 shown, padded to the OPU's minimum batch of 8
    assert c["device_seconds"] > 0  # measured wall time
    d = b.describe()
    assert d["mode"] == "real OPU" and "lightonopu version 1.4.2" in d["opu_version"]
    assert d["mirrors_per_feature"] == fake_lightonopu.MIRRORS // 20
    b.close()
    assert not dev.active
    b.project(_errors(2))  # re-opens on demand
    assert dev.active
    b.close()
    lin = _backend(config_file=str(config), retry_delay_s=0, linear=True, overrides=ternary)
    frames = lin.counters()["frames"]
    lin.project(_errors(1, seed=3))
    # 2 distinct frames, 3 encoded frames each (the fake reconstruction), padded from 6 to 8
    assert lin.counters()["frames"] - frames == 8


def test_real_device_busy_and_transient_failures_are_retried(monkeypatch, tmp_path):
    config = fake_lightonopu.install(monkeypatch, tmp_path)
    delays = []
    b = create_backend("lightonml", config_file=str(config), retries=3, retry_delay_s=0.25)
    b._sleep = delays.append
    fake_lightonopu.OpuDevice.fail_open = 2
    b.setup(LAYOUT, seed=0, device=CPU, dtype=torch.float32)
    assert delays == [0.25, 0.5]
    fake_lightonopu.OpuDevice.fail_transform = 2
    b.project(_errors(4))
    dev = fake_lightonopu.OpuDevice.instances[-1]
    assert dev.close_calls >= 2 and dev.active  # re-opened between attempts
    fake_lightonopu.OpuDevice.fail_transform = 10
    with pytest.raises(OptdfaError, match="OPU transform failed 4 times in a row"):
        b.project(_errors(4, seed=1))
    fake_lightonopu.OpuDevice.fail_open = 10
    busy = create_backend("lightonml", config_file=str(config), retries=1, retry_delay_s=0)
    with pytest.raises(OptdfaError, match="the OPU is busy.*tried 2 times.*opu.close"):
        busy.setup(LAYOUT, seed=0, device=CPU, dtype=torch.float32)


def test_real_device_not_found_not_configured_or_driver_too_old(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lightonopu", None)  # no driver on this host
    with pytest.raises(OptdfaError, match="no LightOn OPU found.*--lightonml-simulated"):
        _backend()
    fake_lightonopu.install(monkeypatch, tmp_path)
    monkeypatch.setattr("lightonml.internal.config.host_has_opu_config", lambda: False)
    with pytest.raises(OptdfaError, match="no LightOn OPU configured.*config_file=PATH"):
        _backend()
    old = fake_lightonopu.install(monkeypatch, tmp_path, driver_version="1.3.0")
    with pytest.raises(OptdfaError, match="driver is too old.*lightonopu>=1.4.1"):
        _backend(config_file=str(old))


def test_cli_train_simulated_and_missing_device(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "--backend", "lightonml", "--epochs", "1", "--train-subset", "100"]
    args += ["--hidden", "32", "--quiet"]
    assert main([*args, "--lightonml-simulated", "--profile", "noisy-lab", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] > 0 and summary["energy_joules"] > 0
    assert summary["rule"]["backend"]["mode"] == "lightonml simulated device"
    assert summary["rule"]["backend"]["profile"] == "noisy-lab"
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "lightonopu", None)
    assert main([*args, "--out", str(tmp_path / "real")]) == 2
    err = capsys.readouterr().err
    assert "no LightOn OPU found" in err and err.count("\n") == 1
    assert not (tmp_path / "real").exists()


def test_noisy_linear_transform_backend():
    # drop-in device, raw-code output; a deterministic encoder (the exact expectation is known)
    b = _backend(simulated=True, noise=True, linear=True, overrides={"encoder": "ternary:0.1"})
    e = _errors(32, seed=2)
    exact = TernaryEncoder(0.1).encode(e).decode() @ b.feedback_matrix()
    assert _corr(b.project(e), exact) > 0.97


def test_an_error_bound_leaves_the_non_private_encoding_unchanged():
    # lightonml declares no private encoding: a clipping rule's bound must not switch it to the
    # fixed-scale, every-frame path of photonic DP (the DP mechanism refuses this backend)
    e = _errors(16, seed=5) * 0.1
    plain = _backend(simulated=True, profile="ideal", overrides={"encoder": "stochastic"})
    bounded = _backend(simulated=True, profile="ideal", overrides={"encoder": "stochastic"})
    bounded.set_error_bound(float(e.abs().max()) * 4)
    assert not bounded.private_encoding
    frames = bounded.counters()["frames"]
    assert torch.equal(bounded.project(e), plain.project(e))
    assert bounded.counters()["frames"] == plain.counters()["frames"] > frames
    linear = _backend(simulated=True, linear=True, profile="ideal")
    with pytest.raises(OptdfaError, match="cannot show every frame"):
        linear.decoder.measure_indexed(torch.ones(2, 10, dtype=torch.bool), every_frame=True)


def test_hardware_acceptance_checks(monkeypatch, tmp_path):
    from optdfa.integrations.lightonml_check import format_checks, run_checks

    simulated = run_checks(simulated=True, pixels=512)
    assert [r.status for r in simulated].count("FAIL") == 0, format_checks(simulated)
    assert [r.name for r in simulated if r.status == "SKIP"] == ["busy OPU is reported"]
    config = fake_lightonopu.install(monkeypatch, tmp_path)
    real = run_checks(config_file=str(config), pixels=512)
    assert all(r.status == "PASS" for r in real), format_checks(real)
    assert "frames counted at the driver" in format_checks(real)
    unconfigured = run_checks(pixels=512)  # the driver is there, the host has no OPU config
    assert any("no LightOn OPU configured" in r.detail for r in unconfigured if r.status == "FAIL")


def test_reference_is_recalibrated_as_the_profile_asks():
    b = _backend(simulated=True, noise=True, overrides={"recalibrate_every_frames": 100})
    once = b.calibration_frames
    assert once == 2 * b.profile.calibration_frames
    b.project(_errors(64))  # > 100 frames shown: the next projection recalibrates first
    b.project(_errors(16, seed=1))
    assert b.calibration_frames == 2 * once


def test_noisy_training_resumes_bit_exactly_from_the_checkpoint_file(tmp_path, capsys):
    """The drop-in device's state (noise, drift, matrix) survives torch.load(weights_only=True)."""
    args = ["train", "--dataset", "digits", "--method", "dfa", "--backend", "lightonml"]
    args += ["--lightonml-simulated", "--backend-option", "noise=true", "--train-subset", "300"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([*args, "--epochs", "2", "--out", str(whole)]) == 0
    assert main([*args, "--epochs", "1", "--out", str(split)]) == 0
    assert main(["train", "--epochs", "2", "--out", str(split), "--resume"]) == 0
    capsys.readouterr()

    def lines(folder):
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if "second" not in k} for r in rows]

    assert len(lines(whole)) == 2 and lines(whole) == lines(split)
