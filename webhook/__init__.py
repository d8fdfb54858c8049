"""autoretrain webhook: Alertmanager receiver and the retraining controller.

The model updater is importable from here; this module does not import
Flask (the Flask app lives in its own modules).
"""

from .updater import (
    AgentSelectionModel,
    CorruptModel,
    ModelStore,
    RealTimeModelUpdater,
    UpdateStrategy,
)

__all__ = [
    "AgentSelectionModel",
    "CorruptModel",
    "ModelStore",
    "RealTimeModelUpdater",
    "UpdateStrategy",
]
