"""Backends by name: the registry, third-party entry points, the digital backend's contract."""

from __future__ import annotations

import pytest
import torch

import optdfa
from optdfa.backends import FeedbackLayout, available_backends, create_backend
from optdfa.errors import OptdfaError

PLUGIN = '''
from optdfa.backends.digital import DigitalBackend


class Doubled(DigitalBackend):
    """A third-party backend: the digital projection, doubled."""

    name = "doubled"

    def project(self, error):
        return 2 * super().project(error)
'''


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed-looking distribution that registers two backends, one of them broken."""
    (tmp_path / "optdfa_test_plugin.py").write_text(PLUGIN)
    info = tmp_path / "optdfa_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: optdfa-test-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[optdfa.backends]\ndoubled = optdfa_test_plugin:Doubled\nbroken = no_such_module:Thing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_third_party_backend_registers_through_entry_points(plugin_dist):
    assert {"digital", "doubled", "broken"} <= set(available_backends())
    digital = optdfa.train({"epochs": 1, "hidden": [16], "backend": "digital"})
    doubled = optdfa.train({"epochs": 1, "hidden": [16], "backend": "doubled"})
    assert doubled.summary["rule"]["backend"]["name"] == "doubled"
    assert doubled.metrics[0]["train_loss"] != digital.metrics[0]["train_loss"]
    with pytest.raises(OptdfaError, match="backend 'broken' could not be loaded"):
        create_backend("broken")


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(OptdfaError, match=r"unknown backend 'nope'; valid backends: .*digital"):
        create_backend("nope")


def test_digital_backend_contract():
    layout = FeedbackLayout.from_shapes(3, [("a", (4,)), ("b", (2, 3))])
    backend = create_backend("digital")
    backend.setup(layout, seed=11, device=torch.device("cpu"), dtype=torch.float32)
    e = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    out = backend.project(e)
    assert out.shape == (5, 10) and out.dtype == torch.float32
    torch.testing.assert_close(out, e @ backend.feedback_matrix())
    a, b = layout.split(out)
    assert a.shape == (5, 4) and b.shape == (5, 2, 3)
    assert backend.counters()["projections"] == 1 and backend.counters()["samples"] == 5
    with pytest.raises(OptdfaError, match=r"expects errors of shape \(batch, 3\)"):
        backend.project(torch.zeros(5, 4))
    with pytest.raises(OptdfaError, match="non-finite"):
        backend.project(torch.full((2, 3), float("nan")))
    again = create_backend("digital")
    again.setup(layout, seed=11, device=torch.device("cpu"), dtype=torch.float32)
    assert torch.equal(again.feedback_matrix(), backend.feedback_matrix())  # seeded
