"""autoretrain webhook: Alertmanager receiver and the retraining controller.

The model updater is importable from here; this module does not import
Flask: ``create_app`` (in :mod:`webhook.app`) is imported on first use, so
``from webhook import RealTimeModelUpdater`` stays Flask-free.
"""

from typing import TYPE_CHECKING, Any

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
    "ModelFollower",
    "ModelStore",
    "RealTimeModelUpdater",
    "UpdateStrategy",
    "create_app",
]

if TYPE_CHECKING:
    from .app import create_app
    from .serving import ModelFollower


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ModelFollower":
        from .serving import ModelFollower

        return ModelFollower
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
