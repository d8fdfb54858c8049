"""The model updater: learns the agent-selection model from outcome events.

Never imports Flask (the webhook app imports this package, not the reverse).
"""

from .batch import EventBatch
from .model import AgentEstimate, AgentSelectionModel
from .objective import Objective, ObjectiveMode
from .results import MODEL_TYPE, RetrainResult, RetrainStatus, RetrainType
from .retrain import Score, full_retrain, incremental_retrain, recency_weights, score_model
from .settings import RetrainSettings, UpdaterSettings
from .status import UpdaterStatus
from .store import CorruptModel, ModelStore, StoredModel
from .strategies import (
    BayesianRule,
    ExponentialRule,
    GradientRule,
    MovingAverageRule,
    Rule,
    UpdateStrategy,
)
from .updater import RealTimeModelUpdater

__all__ = [
    "MODEL_TYPE",
    "AgentEstimate",
    "AgentSelectionModel",
    "BayesianRule",
    "CorruptModel",
    "EventBatch",
    "ExponentialRule",
    "GradientRule",
    "ModelStore",
    "MovingAverageRule",
    "Objective",
    "ObjectiveMode",
    "RealTimeModelUpdater",
    "RetrainResult",
    "RetrainSettings",
    "RetrainStatus",
    "RetrainType",
    "Rule",
    "Score",
    "StoredModel",
    "UpdateStrategy",
    "UpdaterSettings",
    "UpdaterStatus",
    "full_retrain",
    "incremental_retrain",
    "recency_weights",
    "score_model",
]
