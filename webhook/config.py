"""The webhook's configuration, layered once and validated at start.

Layers, lowest first: the defaults of :class:`WebhookConfig`, environment
variables ``AUTORETRAIN_WEBHOOK_<KEY>`` (``KEY`` is the field name in upper
case, e.g. ``AUTORETRAIN_WEBHOOK_COOLDOWN_SECONDS``), then the mapping given
to :func:`~webhook.create_app` (or the command line). Every error is a
``ValueError`` naming the key, where it came from, and what is allowed.

Authentication is secure by default: with neither ``token`` nor
``token_file`` the webhook refuses to start unless ``allow_unauthenticated``
is true, so a forgotten secret never silently exposes the retrain endpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from autoretrain.exporter.effect import EffectSettings
from autoretrain.exporter.http import ServerLimits
from autoretrain.exporter.kafka_security import (
    SECRET_KEYS,
    SETTING_KEYS,
)

from .layering import LOG_LEVELS, KafkaSecurityFields, choice, layer, resolve_token
from .schedule import Cron, Every, RetrainSchedule
from .standby import MODES
from .updater.objective import Objective, ObjectiveMode
from .updater.settings import (
    RECENCY_WEIGHT,
    RETRAIN_DISCOUNT,
    RetrainSettings,
    UpdaterSettings,
)
from .updater.strategies import Rule, UpdateStrategy, make_rule, parse_strategy
from .updater.strategies.exponential import HALF_LIFE_SECONDS, RETRY_AFTER_SECONDS

__all__ = ["ENV_PREFIX", "WebhookConfig", "load_config"]

ENV_PREFIX = "AUTORETRAIN_WEBHOOK_"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class WebhookConfig(KafkaSecurityFields):
    """Validated settings of the webhook (see the module docstring for the layers).

    Attributes
    ----------
    token, token_file
        The Bearer token required on POST endpoints, inline or read from a
        file (trailing newline stripped). At most one; at least 16 printable
        characters.
    allow_unauthenticated
        Accept POSTs without a token when none is configured (never the default).
    ledger_path
        SQLite file of alert episodes and retrains (survives restarts).
    ledger_retention_days
        Finished retrains, and settled episodes no notification named for
        this long, are deleted (at start and after each retrain); 0 keeps
        them forever. Keep it longer than Alertmanager's ``repeat_interval``.
    cooldown_seconds
        Minimum time from the end of one alert-triggered retrain to the start
        of the next; alerts arriving meanwhile wait (coalesced) until it ends.
        API retrains neither wait for it nor restart it.
    max_event_skew_seconds
        Outcome events timestamped more than this after the webhook's clock
        are invalid (``field:timestamp``); see ``UpdaterSettings``. Default 300.
    api_retrain_min_interval_seconds
        Minimum time from one accepted ``POST /api/performance/trigger-retraining``
        to the next; sooner ones get a 429 with ``Retry-After`` (0: no limit).
    max_body_bytes
        Largest accepted request body; larger gets 413.
    max_alertnames
        Distinct ``alertname`` label values in ``autoretrain_webhook_alerts_total``;
        further names are counted as ``other`` (bounded cardinality).
    retrain_timeout_seconds
        How long ``POST /api/performance/trigger-retraining`` waits for its
        (serialised) retrain before answering 503.
    retrain_time_limit_seconds
        How long one retrain may run before it counts as hung: past it
        ``/readyz`` answers 503 naming the retrain and its age, and its ledger
        row becomes ``timed_out`` (the thread cannot be stopped; whatever
        waits behind it keeps waiting, and a late result replaces
        ``timed_out`` with a note). Default 600.
    retrain_catch_up_seconds
        After a start, alert retrains (queued episodes restored from the
        ledger included) wait until the updater has applied the backlog its
        source held (Kafka: up to the end offsets seen at start), at most
        this long; then they run on what it has. Default 120.
    host, port, threads
        Listen address and waitress worker threads of ``python -m autoretrain.webhook``.
    connection_limit, channel_timeout_seconds
        Open connections served at once (more wait in the listen backlog),
        and the seconds after which an idle or half-sent connection is
        closed: slow clients cannot make the webhook unreachable.
    model_storage_path, kafka_servers, kafka_topic, consumer_group, batch_size,
    batch_timeout_seconds, save_interval_seconds, buffer_size
        The :class:`~autoretrain.webhook.updater.UpdaterSettings` of the
        updater built when none is passed in (same names, meanings and
        defaults); ``kafka_servers`` None (empty) means the embedded bus,
        ``buffer_size`` None (empty) 10 x ``batch_size``.
    update_strategy, half_life_seconds, retry_after_seconds, detect_drops
        Its update rule (see :mod:`autoretrain.webhook.updater.strategies`;
        the last three are the EXPONENTIAL rule's, with its defaults);
        ``retry_after_seconds`` None (empty) means no retries of agents set aside;
        ``detect_drops`` None (unset) is the rule's default: on when
        retries are on (the fast path of :mod:`autoretrain.webhook.updater.drops`).
    retrain_discount, recency_weight
        Advanced (see :class:`~autoretrain.webhook.updater.RetrainSettings`):
        kept for experiments; no operator normally sets them.
    objective, cost_weight, latency_weight, quality_tolerance
        The selection objective (``quality``, the default, ``weighted`` or
        ``constrained``; see :mod:`autoretrain.webhook.updater.objective`):
        what the model ranks first, recorded in every saved version so the
        selectors rank by it too.
    log_level
        Logging level of ``python -m autoretrain.webhook``.
    standby
        What an instance does when another one holds the lock on the model
        store and ledger (see :mod:`webhook.standby`): ``wait`` as a standby
        (``/readyz`` 503) and take over when that one exits, or ``exit`` at start.
    model_topic
        With ``kafka_servers``: the compacted topic every saved model version
        is published to for followers (see :mod:`webhook.serving`).
    read_token, read_token_file
        Optional Bearer token for ``GET /api/model/ranking`` (inline or from
        a file; at most one). Without one the ranking is open, like the other GETs.
    effect_window_seconds, effect_min_events, effect_tolerance, effect_settle_seconds,
    effect_unhelpful_retrains
        How each retrain's effect on the platform is measured
        (:class:`~autoretrain.exporter.effect.EffectSettings`): windows of
        ``effect_window_seconds`` (at most 3600) before and after it, each
        figure needing ``effect_min_events`` events per window, changes
        within ``effect_tolerance`` counting as unchanged, measured
        ``effect_settle_seconds`` after the after-window ends;
        ``effect_unhelpful_retrains`` unchanged or worse in a row is where the
        log asks for a person (the alert's own N is in the thresholds file).
    retrain_schedule_hours, retrain_schedule_cron
        An optional periodic full retrain (off by default; at most one of
        the two): every ``retrain_schedule_hours`` hours, or at the times of
        a five-field cron expression in UTC (``"0 3 * * *"``: 03:00 daily).
        Recorded in the ledger with trigger ``schedule``; serialised with
        every other retrain, it waits for the alert cooldown and starts it.
    kafka_security_protocol, kafka_sasl_mechanism, kafka_sasl_username,
    kafka_sasl_password_file, kafka_ssl_cafile, kafka_ssl_check_hostname,
    kafka_ssl_certfile, kafka_ssl_keyfile, kafka_ssl_password_file,
    kafka_sasl_password, kafka_ssl_password
        How the updater's consumer and the model publisher connect to Kafka:
        the fields of :class:`~autoretrain.exporter.kafka_security.KafkaSecurity`
        (text; a client certificate for mutual TLS; the secrets from a file or
        from the environment, ``AUTORETRAIN_WEBHOOK_KAFKA_SASL_PASSWORD``,
        never echoed). Default PLAINTEXT.
    """

    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    allow_unauthenticated: bool = False
    ledger_path: str = "./webhook-ledger.sqlite3"
    ledger_retention_days: float = 90.0
    cooldown_seconds: float = 600.0
    max_event_skew_seconds: float = UpdaterSettings.max_event_skew_seconds
    api_retrain_min_interval_seconds: float = 10.0
    max_body_bytes: int = 1_048_576
    max_alertnames: int = 100
    retrain_timeout_seconds: float = 300.0
    retrain_time_limit_seconds: float = 600.0
    retrain_catch_up_seconds: float = 120.0
    host: str = "127.0.0.1"
    port: int = 9109
    threads: int = 8
    connection_limit: int = ServerLimits.connection_limit
    channel_timeout_seconds: int = ServerLimits.channel_timeout_seconds
    # The updater's settings: defaults from UpdaterSettings and the rule, written there.
    model_storage_path: str = UpdaterSettings.model_storage_path
    kafka_servers: str | None = None
    kafka_topic: str = UpdaterSettings.kafka_topic
    consumer_group: str = UpdaterSettings.consumer_group
    batch_size: int = UpdaterSettings.batch_size
    batch_timeout_seconds: float = UpdaterSettings.batch_timeout_seconds
    save_interval_seconds: float = UpdaterSettings.save_interval_seconds
    update_strategy: str = UpdateStrategy.EXPONENTIAL.value
    buffer_size: int | None = None
    half_life_seconds: float = HALF_LIFE_SECONDS
    retry_after_seconds: float | None = RETRY_AFTER_SECONDS
    detect_drops: bool | None = None
    retrain_discount: float = RETRAIN_DISCOUNT
    recency_weight: float = RECENCY_WEIGHT
    # The selection objective (see autoretrain.webhook.updater.objective).
    objective: str = ObjectiveMode.QUALITY.value
    cost_weight: float = Objective.cost_weight
    latency_weight: float = Objective.latency_weight
    quality_tolerance: float = Objective.quality_tolerance
    log_level: str = "INFO"
    standby: str = "wait"
    # The model topic (followers) and the ranking API's optional read token.
    model_topic: str = "agent-models"
    read_token: str | None = field(default=None, repr=False)
    read_token_file: str | None = None
    # Retrain effects (exporter.effect.EffectSettings) and the optional schedule.
    effect_window_seconds: float = EffectSettings.window_seconds
    effect_min_events: int = EffectSettings.min_events
    effect_tolerance: float = EffectSettings.tolerance
    effect_settle_seconds: float = EffectSettings.settle_seconds
    effect_unhelpful_retrains: int = EffectSettings.unhelpful_retrains
    retrain_schedule_hours: float | None = None
    retrain_schedule_cron: str | None = None
    # Kafka connection security: the fields of KafkaSecurityFields.

    @property
    def auth_required(self) -> bool:
        """True when POST endpoints need the Bearer token."""
        return self.token is not None

    def effect_settings(self) -> EffectSettings:
        """How retrain effects are measured."""
        return EffectSettings(window_seconds=self.effect_window_seconds,
                              min_events=self.effect_min_events,
                              tolerance=self.effect_tolerance,
                              settle_seconds=self.effect_settle_seconds,
                              unhelpful_retrains=self.effect_unhelpful_retrains)

    def retrain_schedule(self) -> RetrainSchedule | None:
        """The periodic full retrain's schedule, None when off."""
        if self.retrain_schedule_hours is not None:
            return Every(self.retrain_schedule_hours * 3600.0)
        if self.retrain_schedule_cron is not None:
            return Cron(self.retrain_schedule_cron)
        return None

    def updater_settings(self) -> UpdaterSettings:
        """The settings of the updater to build."""
        return UpdaterSettings(
            kafka_servers=self.kafka_servers, kafka_topic=self.kafka_topic,
            consumer_group=self.consumer_group, batch_size=self.batch_size,
            batch_timeout_seconds=self.batch_timeout_seconds,
            model_storage_path=self.model_storage_path,
            save_interval_seconds=self.save_interval_seconds, buffer_size=self.buffer_size,
            max_event_skew_seconds=self.max_event_skew_seconds,
            kafka_security=self.kafka_security() if self.kafka_servers else None,
            retrain=RetrainSettings(discount=self.retrain_discount,
                                    recency_weight=self.recency_weight),
            objective=self.selection_objective())

    def selection_objective(self) -> Objective:
        """The objective the updater's model ranks by (ValueError when invalid)."""
        return Objective(self.objective, cost_weight=self.cost_weight,
                         latency_weight=self.latency_weight,
                         quality_tolerance=self.quality_tolerance)

    def update_rule(self) -> Rule:
        """The update rule of the updater to build (its hyperparameters included)."""
        extra = {} if self.detect_drops is None else {"detect_drops": self.detect_drops}
        return make_rule(parse_strategy(self.update_strategy),
                         half_life_seconds=self.half_life_seconds,
                         retry_after_seconds=self.retry_after_seconds, **extra)

    def updater_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the :class:`~webhook.RealTimeModelUpdater` to build."""
        kwargs: dict[str, Any] = {
            "kafka_servers": self.kafka_servers,
            "kafka_topic": self.kafka_topic,
            "consumer_group": self.consumer_group,
            "batch_size": self.batch_size,
            "batch_timeout_seconds": self.batch_timeout_seconds,
            "model_storage_path": self.model_storage_path,
            "save_interval_seconds": self.save_interval_seconds,
            "update_strategy": self.update_strategy,
            "buffer_size": self.buffer_size,
            "half_life_seconds": self.half_life_seconds,
            "retry_after_seconds": self.retry_after_seconds,
            "detect_drops": self.detect_drops,
            "retrain_discount": self.retrain_discount,
            "recency_weight": self.recency_weight,
        }
        objective = self.selection_objective()
        if objective != Objective():  # the default is the updater's own
            kwargs["objective"] = objective
        if self.kafka_servers and self.kafka_security_protocol is not None:
            kwargs["kafka_security"] = self.kafka_security()
        return kwargs


# The webhook's own keys first, then the Kafka security ones (the base's fields).
_KEYS = (*(f.name for f in fields(WebhookConfig) if f.name not in SETTING_KEYS), *SETTING_KEYS)
# Passed on to the updater: UpdaterSettings, RetrainSettings and the update
# rule validate these (see _settings_errors); here they are only parsed.
_UPDATER_KEYS = ("kafka_topic", "consumer_group", "batch_size",
                 "batch_timeout_seconds", "save_interval_seconds", "buffer_size",
                 "max_event_skew_seconds", "update_strategy", "half_life_seconds",
                 "retry_after_seconds", "detect_drops", "retrain_discount", "recency_weight",
                 "objective", "cost_weight", "latency_weight", "quality_tolerance")
# Likewise validated by EffectSettings (see _settings_errors); here only parsed.
_EFFECT_KEYS = ("effect_window_seconds", "effect_min_events", "effect_tolerance",
                "effect_settle_seconds", "effect_unhelpful_retrains")
_OPTIONAL_STR = ("token", "token_file", "kafka_servers", "read_token", "read_token_file",
                 "retrain_schedule_cron", *SETTING_KEYS)
# How the text of an environment variable is parsed (a type, not a rule).
_BOOL = ("allow_unauthenticated", "detect_drops")
_INT = ("max_body_bytes", "max_alertnames", "port", "threads", "batch_size", "buffer_size",
        "connection_limit", "channel_timeout_seconds", "effect_min_events",
        "effect_unhelpful_retrains")
# None (or an empty variable): the updater's default buffer; no retries; the
# rule's default drop detection; no schedule.
_NULLABLE = ("buffer_size", "retry_after_seconds", "detect_drops", "retrain_schedule_hours")
_FLOAT = (
    "ledger_retention_days",
    "cooldown_seconds",
    "max_event_skew_seconds",
    "api_retrain_min_interval_seconds",
    "retrain_timeout_seconds",
    "retrain_time_limit_seconds",
    "retrain_catch_up_seconds",
    "batch_timeout_seconds",
    "save_interval_seconds",
    "half_life_seconds",
    "retry_after_seconds",
    "retrain_discount",
    "recency_weight",
    "cost_weight",
    "latency_weight",
    "quality_tolerance",
    "effect_window_seconds",
    "effect_tolerance",
    "effect_settle_seconds",
    "retrain_schedule_hours",
)
_ZERO_OK = ("cooldown_seconds", "api_retrain_min_interval_seconds",
            "retrain_catch_up_seconds", "ledger_retention_days")


_MAX_EFFECT_WINDOW = 3600.0


def _describe(key: str, value: Any) -> str:
    # Never echo a secret back into an error message or a log line.
    return (f"a value of type {type(value).__name__}"
            if key in ("token", "read_token", *SECRET_KEYS)
            else repr(value))


def _from_env(key: str, text: str, name: str) -> Any:
    """Convert the text of the variable ``name`` (setting ``key``) to the key's type."""
    if key in _BOOL:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(
            f"{name} must be one of {', '.join(_TRUE + _FALSE[:-1])}, got {text!r}"
        )
    if key in _NULLABLE and not text.strip():
        return None
    if key in _INT:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {text!r}") from None
    if key in _FLOAT:
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError(f"{name} must be a number, got {text!r}") from None
    if key in _OPTIONAL_STR:
        # Empty means unset, so an orchestrator can blank a variable out.
        return text if text.strip() else None
    return text


def _check(key: str, value: Any, source: str) -> Any:
    """Validate one value of the webhook's own keys; return it normalised."""
    where = f"{key} (from {source})"
    if value is None and key in _NULLABLE:
        return None
    if key in _UPDATER_KEYS or key in _EFFECT_KEYS:
        # Checked once, by the updater's settings and rule or by EffectSettings
        # (_settings_errors).
        if key in _FLOAT and type(value) is int:
            return float(value)
        return value
    if key in _BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {_describe(key, value)}")
        return value
    if key in _INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {_describe(key, value)}")
        low = 0 if key == "port" else 1
        high = 65535 if key == "port" else None
        if value < low or (high is not None and value > high):
            allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"{where} must be an integer {allowed}, got {value!r}")
        return value
    if key in _FLOAT:
        ok = (
            not isinstance(value, bool)
            and isinstance(value, int | float)
            and math.isfinite(value)
            and (value >= 0 if key in _ZERO_OK else value > 0)
        )
        if not ok:
            bound = ">= 0" if key in _ZERO_OK else "> 0"
            raise ValueError(f"{where} must be a finite number {bound}, got {value!r}")
        return float(value)
    if value is None and key in _OPTIONAL_STR:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string, got {_describe(key, value)}")
    if key == "standby":
        return choice(key, value, source, MODES)
    if key == "log_level":
        return choice(key, value.upper(), source, LOG_LEVELS)
    if key == "retrain_schedule_cron":
        try:
            Cron(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return value


def _settings_errors(config: WebhookConfig, sources: Mapping[str, str]) -> None:
    """Build the retrain effects' settings, the updater's settings and its rule
    once, as the app will: a value or a combination they refuse fails at start,
    the message naming the key and where it came from (``effect tolerance
    must ...`` of :class:`EffectSettings` becomes ``effect_tolerance (from
    ...) must ...``)."""
    try:
        effects = config.effect_settings()
        config.update_rule()
        config.updater_settings()
    except ValueError as exc:
        text = str(exc)
        for key in sources:
            named = f"effect {key[len('effect_'):]} " if key in _EFFECT_KEYS else f"{key} "
            if text.startswith(named):
                raise ValueError(f"{key} (from {sources[key]}) {text[len(named):]}") from None
        raise
    if effects.window_seconds > _MAX_EFFECT_WINDOW:
        # The updater's outcome counts reach back 3 h: two windows and a retrain.
        key = "effect_window_seconds"
        raise ValueError(f"{key} (from {sources.get(key, 'default')}) must be at most "
                         f"{_MAX_EFFECT_WINDOW:g}, got {effects.window_seconds!r}")


def load_config(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> WebhookConfig:
    """Layer defaults < ``environ`` (``AUTORETRAIN_WEBHOOK_*``) < ``overrides``; validate.

    Unknown keys, in either layer, are errors: a misspelt setting must not be
    ignored silently. ``token_file`` is read here, so a missing or empty file
    fails at start, not at the first request.
    """
    sources: dict[str, str] = {}

    def check(key: str, value: Any, source: str) -> Any:
        sources[key] = source
        return _check(key, value, source)

    config = WebhookConfig(**layer(_KEYS, ENV_PREFIX, environ, overrides, check, _from_env))
    try:
        config.kafka_security()
    except ValueError as exc:
        raise ValueError(f"Kafka security ({ENV_PREFIX}KAFKA_*): {exc}") from None
    if config.retrain_schedule_hours is not None and config.retrain_schedule_cron is not None:
        raise ValueError("set retrain_schedule_hours or retrain_schedule_cron, not both")
    _settings_errors(config, sources)
    config = resolve_token(config, "token")
    # The ranking API's read token is checked as the token is.
    config = resolve_token(config, "read_token")
    if config.token is None and not config.allow_unauthenticated:
        raise ValueError(
            "no token configured: set token or token_file (env "
            f"{ENV_PREFIX}TOKEN or {ENV_PREFIX}TOKEN_FILE), or set allow_unauthenticated "
            "to true to accept unauthenticated POSTs (not recommended)"
        )
    return config
