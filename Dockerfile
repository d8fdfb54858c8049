# One image for the Python services of docker-compose.yml: the exporter
# (python -m autoretrain.exporter), the webhook (python -m autoretrain.webhook) and the simulated
# platform (python -m examples.platform_feed). The compose file picks the
# command; alone, the image runs the webhook.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package first (its layer is rebuilt only when the code changes), as a
# regular install from /src, removed afterwards: at run time the code comes
# from site-packages only (autoretrain.exporter, autoretrain.webhook).
COPY pyproject.toml README.md LICENSE /src/
COPY autoretrain /src/autoretrain
COPY exporter /src/exporter
COPY webhook /src/webhook
RUN pip install /src \
    && rm -rf /src

# The simulated platform is an example, not part of the package; it runs
# from /app (python -m puts the working directory on the path).
COPY examples ./examples

# An unprivileged user owning the data directories: named volumes mounted
# there start with this ownership, so the webhook can write its model store
# and ledger without root.
RUN groupadd --system --gid 10001 autoretrain \
    && useradd --system --uid 10001 --gid autoretrain --home-dir /app \
       --shell /usr/sbin/nologin autoretrain \
    && mkdir -p /var/lib/autoretrain/models /var/lib/autoretrain/ledger \
    && chown -R autoretrain:autoretrain /var/lib/autoretrain
USER 10001:10001

# exporter /metrics, webhook
EXPOSE 9108 9109

CMD ["python", "-m", "autoretrain.webhook"]
