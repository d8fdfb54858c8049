"""autoretrain: keep an agent platform's agent-selection model good without a human in the loop.

The public API, importable from here::

    from autoretrain import PerformanceMonitor, RealTimeModelUpdater, UpdateStrategy, create_app
    from autoretrain import ModelFollower  # an orchestrator that follows the trainer's model

Subpackages: :mod:`autoretrain.exporter` (recording, the thresholds file, the
outcome-event contract, the Kafka-fed exporter) and :mod:`autoretrain.webhook`
(the Alertmanager receiver, the retrain controller and, in
:mod:`autoretrain.webhook.updater`, the model and its updater).

Names are resolved on first use, so ``import autoretrain.exporter`` in an
orchestrator does not import the model, numpy's linear algebra or Flask.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# The repository keeps exporter/ and webhook/ at its top level (the layout the
# project was asked for); an installed wheel has them inside this package
# (setuptools package-dir). From a source checkout, look for them beside this
# folder so that the same ``autoretrain.*`` imports work without an install.
_here = os.path.dirname(__file__)
if not os.path.isdir(os.path.join(_here, "exporter")):  # pragma: no branch
    __path__.append(os.path.dirname(_here))

__version__ = "0.1.0"

_EXPORTS = {
    "PerformanceMonitor": "autoretrain.exporter",
    "init_performance_monitor": "autoretrain.exporter",
    "get_performance_monitor": "autoretrain.exporter",
    "EmbeddedBus": "autoretrain.exporter",
    "KafkaSink": "autoretrain.exporter",
    "load_thresholds": "autoretrain.exporter",
    "RealTimeModelUpdater": "autoretrain.webhook",
    "UpdateStrategy": "autoretrain.webhook",
    "AgentSelectionModel": "autoretrain.webhook",
    "ModelStore": "autoretrain.webhook",
    "create_app": "autoretrain.webhook",
    "ModelFollower": "autoretrain.webhook",
}

__all__ = [
    "AgentSelectionModel",
    "EmbeddedBus",
    "KafkaSink",
    "ModelFollower",
    "ModelStore",
    "PerformanceMonitor",
    "RealTimeModelUpdater",
    "UpdateStrategy",
    "create_app",
    "get_performance_monitor",
    "init_performance_monitor",
    "load_thresholds",
]

if TYPE_CHECKING:
    from autoretrain.exporter import (
        EmbeddedBus,
        KafkaSink,
        PerformanceMonitor,
        get_performance_monitor,
        init_performance_monitor,
        load_thresholds,
    )
    from autoretrain.webhook import (
        AgentSelectionModel,
        ModelFollower,
        ModelStore,
        RealTimeModelUpdater,
        UpdateStrategy,
        create_app,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
