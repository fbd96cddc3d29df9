"""Hardware profiles: the shipped ones load, and every kind of bad profile is one clear error."""

from __future__ import annotations

import math

import pytest
import tomli_w

from optdfa.errors import OptdfaError
from optdfa.optics import FIELDS, available_profiles, load_profile
from optdfa.optics.profile import PROFILE_DIR, profile_field_table


def test_shipped_profiles_load_and_are_documented():
    assert {"ideal", "lighton-aurora", "noisy-lab"} <= set(available_profiles())
    for name in ("ideal", "lighton-aurora", "noisy-lab"):
        p = load_profile(name)
        assert p.name == name
        assert set(p.fields()) == {f.name for f in FIELDS}
        text = (PROFILE_DIR / f"{name}.toml").read_text()
        # every field line carries a comment (its unit or its meaning)
        for f in FIELDS:
            line = next(ln for ln in text.splitlines() if ln.startswith(f"{f.name} ="))
            if f.kind in (int, float):
                assert "#" in line, f"{name}: field {f.name} has no unit comment"


def test_aurora_numbers_from_the_spec():
    p = load_profile("lighton-aurora")
    assert p.dmd_mirrors == 1140 * 912 == 1_039_680
    assert p.camera_pixels == 1920 * 1080
    assert p.adc_bits == 8 and p.max_dn == 255
    assert p.frame_time_s == 500e-6 and p.exposure_s == 400e-6
    text = (PROFILE_DIR / "lighton-aurora.toml").read_text()
    assert text.count("[assumption]") >= 8 and text.count("[spec]") >= 4


def test_ideal_has_no_noise_and_no_quantisation():
    p = load_profile("ideal")
    assert not (p.shot_noise or p.saturation or p.adc)
    assert p.read_noise_e == p.dark_current_e_per_s == p.power_jitter == p.drift_per_frame == 0


def test_overrides_apply_and_are_validated():
    p = load_profile("lighton-aurora", {"adc_bits": 6, "read_noise_e": 12, "encoder": "bitplane:3"})
    assert (p.adc_bits, p.read_noise_e, p.encoder) == (6, 12.0, "bitplane:3")
    assert p.replace({"poisson_exact_below_e": math.inf}).poisson_exact_below_e == math.inf
    with pytest.raises(OptdfaError, match="unknown profile field 'adc_bitz'"):
        load_profile("lighton-aurora", {"adc_bitz": 6})
    with pytest.raises(OptdfaError, match="'adc_bits' must be an integer"):
        load_profile("lighton-aurora", {"adc_bits": 6.5})
    with pytest.raises(OptdfaError, match="'shot_noise' must be true or false"):
        load_profile("lighton-aurora", {"shot_noise": 1})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("read_noise_e", -1.0, "'read_noise_e' must be non-negative"),
        ("dark_current_e_per_s", -0.1, "'dark_current_e_per_s' must be non-negative"),
        ("power_jitter", -0.01, "'power_jitter' must be non-negative"),
        ("drift_per_frame", -1e-3, "'drift_per_frame' must be in"),
        ("adc_bits", 0, "'adc_bits' must be between 1 and 16"),
        ("adc_bits", 17, "'adc_bits' must be between 1 and 16"),
        ("full_well_e", 0.0, "'full_well_e' must be positive"),
        ("full_well_e", -5.0, "'full_well_e' must be positive"),
        ("quantum_efficiency", 1.5, "'quantum_efficiency' must be in"),
        ("exposure_s", 1e-3, "'exposure_s' .* must not exceed 'frame_time_s'"),
        ("encoder", "ternary:abc", "field 'encoder': cannot parse encoder"),
        ("decoder", "magic", "'decoder' must be one of"),
        ("reference_fraction", 1.0, "'reference_fraction' must be strictly between"),
        ("gain_e_per_dn", math.inf, "'gain_e_per_dn' must be finite"),
    ],
)
def test_impossible_values_are_rejected_naming_the_field(field, value, message):
    with pytest.raises(OptdfaError, match=message):
        load_profile("lighton-aurora", {field: value})


def _write(tmp_path, data, name="custom.toml"):
    path = tmp_path / name
    path.write_text(tomli_w.dumps(data))
    return path


def test_profile_files_missing_unknown_or_misplaced_fields(tmp_path):
    base = load_profile("lighton-aurora").to_toml_dict()
    assert load_profile(_write(tmp_path, base)).fields() == load_profile("lighton-aurora").fields()

    missing = {k: dict(v) for k, v in base.items()}
    del missing["camera"]["full_well_e"]
    with pytest.raises(OptdfaError, match=r"missing field\(s\) full_well_e \(\[camera\]\)"):
        load_profile(_write(tmp_path, missing))

    unknown = {k: dict(v) for k, v in base.items()}
    unknown["camera"]["bias_frames"] = 3
    with pytest.raises(OptdfaError, match="unknown field 'bias_frames' in \\[camera\\]"):
        load_profile(_write(tmp_path, unknown))

    misplaced = {k: dict(v) for k, v in base.items()}
    misplaced["dmd"]["adc_bits"] = misplaced["camera"].pop("adc_bits")
    with pytest.raises(OptdfaError, match="'adc_bits' belongs in \\[camera\\], not \\[dmd\\]"):
        load_profile(_write(tmp_path, misplaced))

    negative = {k: dict(v) for k, v in base.items()}
    negative["camera"]["read_noise_e"] = -3.0
    with pytest.raises(OptdfaError, match="custom.toml: field 'read_noise_e' must be non-negative"):
        load_profile(_write(tmp_path, negative))


def test_unknown_names_and_paths(tmp_path):
    with pytest.raises(
        OptdfaError,
        match="unknown profile 'aurora'; available profiles: ideal, lighton-aurora, noisy-lab",
    ):
        load_profile("aurora")
    with pytest.raises(OptdfaError, match="does not exist"):
        load_profile(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera\n")
    with pytest.raises(OptdfaError, match="is not valid TOML"):
        load_profile(bad)


def test_field_table_lists_every_field_with_units():
    table = profile_field_table()
    for f in FIELDS:
        assert f"`{f.name}`" in table and f.unit in table
