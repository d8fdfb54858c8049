"""Serving the trained model beyond the trainer's process.

* :class:`ModelFollower` (:mod:`.follower`): ``predict_best_agent`` from the
  newest version the trainer saved, followed from its store directory or
  from the model topic;
* :class:`ModelPublisher` and the message codec (:mod:`.model_topic`): the
  trainer publishes every saved version to a compacted Kafka topic;
* :func:`ranking_blueprint` (:mod:`.ranking`): ``GET /api/model/ranking``
  for orchestrators in any language, on the webhook and on the read-only
  selector (:mod:`.selector`, ``python -m autoretrain.selector``).

Importing this package does not import Flask or kafka-python.
"""

from typing import TYPE_CHECKING, Any

from .follower import LOAD_FAILURE_REASONS, ModelFollower
from .model_topic import (
    DEFAULT_TOPIC,
    InvalidModelMessage,
    ModelMessage,
    ModelPublisher,
    decode_model,
    encode_model,
)

__all__ = [
    "DEFAULT_TOPIC",
    "LOAD_FAILURE_REASONS",
    "InvalidModelMessage",
    "ModelFollower",
    "ModelMessage",
    "ModelPublisher",
    "decode_model",
    "encode_model",
    "ranking_blueprint",
]

if TYPE_CHECKING:
    from .ranking import ranking_blueprint


def __getattr__(name: str) -> Any:
    if name == "ranking_blueprint":
        from .ranking import ranking_blueprint

        return ranking_blueprint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
