"""autoretrain webhook: Alertmanager receiver and the retraining controller."""
