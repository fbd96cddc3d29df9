"""optdfa: Direct Feedback Alignment with the feedback projection on an optical co-processor.

Quick use::

    import optdfa
    result = optdfa.train({"dataset": "digits", "method": "dfa", "epochs": 5})
    print(result.summary["test_accuracy"])

Lower level (any ``nn.Module`` with :class:`FeedbackPoint` marks, any ``torch.optim`` optimizer)::

    rule = optdfa.DirectFeedbackAlignment("digital", seed=0)
    rule.attach(model, example_batch)
    optimizer.zero_grad(); rule.compute_gradients(x, y, optdfa.cross_entropy); optimizer.step()
"""

from optdfa.backends import FeedbackBackend, FeedbackLayout, available_backends, create_backend
from optdfa.config import TrainConfig, load_config
from optdfa.errors import OptdfaError, TrainingDiverged
from optdfa.rules import (
    Backprop,
    DirectFeedbackAlignment,
    FeedbackAlignment,
    FeedbackPoint,
    LearningRule,
    cross_entropy,
    half_squared_error,
    make_rule,
)
from optdfa.training import RunResult, Trainer, TrainingHook, train

__version__ = "0.1.0"

__all__ = [
    "Backprop",
    "DirectFeedbackAlignment",
    "FeedbackAlignment",
    "FeedbackBackend",
    "FeedbackLayout",
    "FeedbackPoint",
    "LearningRule",
    "OptdfaError",
    "RunResult",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingHook",
    "__version__",
    "available_backends",
    "create_backend",
    "cross_entropy",
    "half_squared_error",
    "load_config",
    "make_rule",
    "train",
]
