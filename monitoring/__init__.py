"""Monitoring: what was observed. The prediction and label log (writer and
reader), the drift and realised-performance checks (Evidently), verdicts, and
the Prometheus, Alertmanager and Grafana configuration shipped beside them."""
