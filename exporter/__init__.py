"""autoretrain exporter: per-agent performance metrics for Prometheus."""
