"""The model updater: learns the agent-selection model from outcome events.

Never imports Flask (the webhook app imports this package, not the reverse).
"""

from .batch import EventBatch
from .model import AgentSelectionModel
from .retrain import Score, full_retrain, incremental_retrain, recency_weights, score_model
from .store import CorruptModel, ModelStore, StoredModel
from .strategies import UpdateStrategy
from .updater import RealTimeModelUpdater

__all__ = [
    "AgentSelectionModel",
    "CorruptModel",
    "EventBatch",
    "ModelStore",
    "RealTimeModelUpdater",
    "Score",
    "StoredModel",
    "UpdateStrategy",
    "full_retrain",
    "incremental_retrain",
    "recency_weights",
    "score_model",
]
