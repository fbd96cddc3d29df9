"""The training guard: says so, once and clearly, when an optical run stops learning properly.

A :class:`TrainingGuard` is a training hook (the loop calls ``on_step`` / ``on_epoch_end``) that
the trainer installs on every DFA run whose backend delivers approximate feedback (the optical
backends). It watches two things:

**Feedback health** (every step, a few hundred flops: one ``(batch, n_out) @ (n_out, n_fb)``
product). ``d_b`` is the feedback the backend delivered for sample ``b`` of the step's error,
``x_b = e_b · B_eff`` the exact linear projection of the *same* error through the backend's
effective feedback matrix (on a simulated device its noiseless map, on a real device the map
calibrated from its basis frames), and ``u_b = (d_b − x_b)/‖x_b‖`` the relative deviation.
Over each epoch (``N`` samples with nonzero error):

- ``alignment = mean_b cos(d_b, x_b)`` — how well the delivered feedback points along the
  exact one (1: perfect; the stochastic encoder alone gives ≈ 0.85);
- ``deviation = sqrt(mean_b ‖u_b‖²)`` — the relative size of the deviation;
- ``bias = ‖mean_b u_b‖`` — its **persistent** part: the deviation that keeps the same direction
  from sample to sample and step to step. Random, zero-mean deviations (shot noise, a stochastic
  encoding) average out of it as ``deviation/√N``; a deterministic distortion that does not
  (LightOn's one-amplitude ternarisation, an offset of the camera) stays. Per-coordinate
  optimizers (Adam) turn a persistent gradient component into steps of full size however small
  it is, so this is what breaks learning (``docs/physics-model.md``, "Ternarisation and Adam").

The feedback is **biased** when ``bias > BIAS_LIMIT`` and **degraded** when
``alignment < ALIGNMENT_LIMIT``. The limits were fixed on digits, before the recipe matrix and
the MNIST and CNN bars were run (``docs/results/recipes.md``): the healthy encoders of the
shipped profiles stay at ``bias ≤ 0.10`` (stochastic ≈ 0.03), LightOn's ``ternary:0.1`` starts
at 0.33–0.39 in the first epoch; 0.2 lies between them (their geometric mean, 0.19, rounded).
Without noise the stochastic encoder alone gives ``alignment ≈ 0.85``; the noisy-lab camera,
≈ 0.65; below 0.5 the noise exceeds the signal in the delivered feedback.

**Loss trend** (every epoch): the training loss **climbs** when it has risen ``CLIMB_EPOCHS``
epochs in a row and has given back more than ``CLIMB_SHARE`` of what it had gained (its rise
above its best epoch exceeds that share of the fall from the first epoch to the best). The share,
not a ratio, keeps late fluctuations of a nearly zero loss (0.0017 → 0.0027 nats) from counting.

Each kind of warning is said once per run: on the terminal (standard error), as a
``"warnings"`` list in that epoch's ``metrics.jsonl`` line, and in ``summary.json`` (``guard``),
whose ``status`` becomes ``completed-with-warnings``. Every epoch line also gets
``feedback_health`` (the three numbers above). The guard changes nothing in training, and its
state is saved in the checkpoint, so a resumed run warns as the uninterrupted one did.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

import torch

from optdfa.errors import OptdfaError

if TYPE_CHECKING:
    from optdfa.training import Trainer

#: a persistent deviation larger than this share of the exact feedback is "biased"
BIAS_LIMIT = 0.2
#: a mean cosine with the exact feedback below this is "degraded"
ALIGNMENT_LIMIT = 0.5
#: the training loss "climbs" when it rose this many epochs in a row …
CLIMB_EPOCHS = 3
#: … and gave back more than this share of its fall from the first epoch to its best
CLIMB_SHARE = 0.1

WARNING_KINDS = ("known-failure", "feedback-biased", "feedback-degraded", "loss-climbing")


def biased_encoding(encoder: Any) -> bool:
    """Whether ``encoder``'s error repeats from step to step: every deterministic encoder optdfa
    ships (``ternary:τ``, ``bitplane-nearest:K``) has a persistent part that Adam amplifies;
    the stochastic ones are unbiased (docs/user-guide.md, "Encoders and optimizers")."""
    return encoder is not None and not encoder.stochastic


def monitored(rule: Any) -> bool:
    """Whether the guard watches ``rule``: DFA whose backend delivers approximate feedback."""
    backend = getattr(rule, "backend", None)
    return bool(getattr(backend, "approximate_feedback", False))


class FeedbackStats:
    """Running sums of the feedback-health statistics over one window (an epoch)."""

    def __init__(self) -> None:
        self.samples = 0
        self.cosine_sum = 0.0
        self.deviation_sq_sum = 0.0
        self.deviation_sum: torch.Tensor | None = None

    def add(self, delivered: torch.Tensor, exact: torch.Tensor) -> None:
        """Add a step's ``delivered`` and ``exact`` feedback, both ``(batch, n_feedback)``."""
        delivered, exact = delivered.detach().double(), exact.detach().double()
        norms = torch.linalg.vector_norm(exact, dim=1)
        keep = norms > 0  # samples with no error carry no information
        if not bool(keep.any()):
            return
        delivered, exact, norms = delivered[keep], exact[keep], norms[keep]
        rel = (delivered - exact) / norms[:, None]
        cos = torch.nn.functional.cosine_similarity(delivered, exact, dim=1, eps=1e-30)
        self.samples += int(keep.sum())
        self.cosine_sum += float(cos.sum())
        self.deviation_sq_sum += float(rel.square().sum())
        total = rel.sum(dim=0).cpu()
        self.deviation_sum = total if self.deviation_sum is None else self.deviation_sum + total

    def result(self) -> dict[str, float] | None:
        """``alignment``, ``deviation``, ``bias`` and ``samples`` of the window (None if empty)."""
        if not self.samples:
            return None
        n = self.samples
        return {
            "alignment": self.cosine_sum / n,
            "deviation": math.sqrt(self.deviation_sq_sum / n),
            "bias": float(torch.linalg.vector_norm(self.deviation_sum)) / n,
            "samples": n,
        }


class TrainingGuard:
    """Watch feedback health and the loss trend; warn once per kind (see the module docstring)."""

    def __init__(self, *, stream: Any = None, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self._stats = FeedbackStats()
        #: one entry per warning said: kind, epoch, message
        self.warnings: list[dict[str, Any]] = []
        self.health: list[dict[str, Any]] = []
        self.train_losses: list[float] = []
        #: warnings said before the first epoch, written into its metrics line
        self._pending: list[str] = []

    # -- before training ----------------------------------------------------------------------
    def preflight(self, trainer: Trainer) -> None:
        """Warn before the first step about a combination known to fail (documented in
        ``docs/user-guide.md``, "Encoders and optimizers")."""
        encoder = getattr(trainer.rule.backend, "encoder", None)
        if biased_encoding(encoder) and trainer.config.optimizer == "adam":
            self._pending += self._warn(
                "known-failure",
                0,
                f"the deterministic encoder {encoder.spec} with Adam is known to make DFA collapse "
                "(digits: ternary:0.1 about 50 % with the MLP, bitplane-nearest:2 about 40 % "
                "with the CNN; docs/results/recipes.md): its encoded error has a sum the error "
                "does not have, a persistent bias that Adam's per-coordinate steps amplify. Use "
                "the default encoder (stochastic) or bitplane:K.",
            )

    # -- the hook protocol --------------------------------------------------------------------
    def on_step(self, trainer: Trainer, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        rule = trainer.rule
        error, feedback = getattr(rule, "last_error", None), getattr(rule, "last_feedback", None)
        if error is None or feedback is None:
            return
        backend = rule.backend
        matrix = backend.feedback_matrix()  # the backend caches it (recomputed if it drifts)
        if matrix is None:
            raise OptdfaError(
                f"backend {backend.name!r} delivers approximate feedback but reports no "
                "feedback matrix to check it against"
            )
        matrix = matrix.to(device=feedback.device, dtype=feedback.dtype)
        exact = error.detach().to(matrix.dtype) @ matrix
        self._stats.add(feedback, exact)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        said, self._pending = self._pending, []
        health = self._stats.result()
        self._stats = FeedbackStats()
        if health is not None:
            metrics["feedback_health"] = health
            self.health.append({"epoch": epoch, **health})
            if health["bias"] > BIAS_LIMIT:
                said += self._warn(
                    "feedback-biased",
                    epoch,
                    f"the optical feedback is biased: {100 * health['bias']:.0f} % of the exact "
                    f"projection e·B persists from step to step (limit {100 * BIAS_LIMIT:.0f} %); "
                    f"DFA may stop learning, above all with Adam. {self._advice(trainer)}",
                )
            if health["alignment"] < ALIGNMENT_LIMIT:
                said += self._warn(
                    "feedback-degraded",
                    epoch,
                    f"the optical feedback is degraded: its cosine with the exact projection e·B "
                    f"is {health['alignment']:.2f} (limit {ALIGNMENT_LIMIT}); the device's noise "
                    f"or drift swamps the signal. {self._advice(trainer)}",
                )
        loss = metrics.get("train_loss")
        if isinstance(loss, float) and math.isfinite(loss):
            self.train_losses.append(loss)
            if self._climbing():
                said += self._warn(
                    "loss-climbing",
                    epoch,
                    f"the training loss has risen {CLIMB_EPOCHS} epochs in a row, to "
                    f"{loss:.4g} from a best of {min(self.train_losses):.4g}: the run is not "
                    f"learning; try a smaller --lr. {self._advice(trainer)}",
                )
        if said:
            metrics["warnings"] = said

    # -- reporting ----------------------------------------------------------------------------
    def _climbing(self) -> bool:
        losses = self.train_losses
        if len(losses) <= CLIMB_EPOCHS:
            return False
        tail = losses[-CLIMB_EPOCHS - 1 :]
        rising = all(b > a for a, b in zip(tail, tail[1:], strict=False))
        best = min(losses)
        return rising and losses[-1] - best > CLIMB_SHARE * (losses[0] - best)

    @staticmethod
    def _advice(trainer: Trainer) -> str:
        encoder = getattr(trainer.rule.backend, "encoder", None)
        if biased_encoding(encoder):
            return (
                f"The encoder {encoder.spec} gives the error a sum it does not have; use the default "
                "encoder (stochastic) or bitplane:K (--opu encoder=...)."
            )
        return "See docs/user-guide.md, 'When the guard warns'."

    def _warn(self, kind: str, epoch: int, message: str) -> list[str]:
        if any(w["kind"] == kind for w in self.warnings):
            return []
        self.warnings.append({"kind": kind, "epoch": epoch, "message": message})
        if not self.quiet:
            print(f"optdfa: warning (epoch {epoch}): {message}", file=self.stream or sys.stderr)
        return [f"{kind}: {message}"]

    @property
    def healthy(self) -> bool:
        return not self.warnings

    def summary(self) -> dict[str, Any]:
        """What ``summary.json`` records under ``guard``."""
        return {
            "healthy": self.healthy,
            "warnings": list(self.warnings),
            "limits": {
                "bias": BIAS_LIMIT,
                "alignment": ALIGNMENT_LIMIT,
                "climb_epochs": CLIMB_EPOCHS,
                "climb_share": CLIMB_SHARE,
            },
            "last_feedback_health": self.health[-1] if self.health else None,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "warnings": list(self.warnings),
            "health": list(self.health),
            "train_losses": list(self.train_losses),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.warnings = list(state.get("warnings", []))
        self.health = list(state.get("health", []))
        self.train_losses = [float(v) for v in state.get("train_losses", [])]
