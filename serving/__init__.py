"""The monitored serving app: follows ``models:NAME@champion``, shadows ``@challenger``,
logs every prediction and exports Prometheus metrics. ``serving.app.create_app`` is the
factory; ``driftloop serve`` (serving/cli.py) runs it under uvicorn. See docs/serving.md."""
