"""The prediction and label log: append-only Parquet, partitioned by day.

Layout under the log root (a local directory or any URI pyarrow.fs opens, such
as ``s3://bucket/prefix``)::

    predictions/model=<name>/date=YYYY-MM-DD/part-<ms>-<pid>-<seq>.parquet
    labels/model=<name>/date=YYYY-MM-DD/part-<ms>-<pid>-<seq>.parquet
    labels/date=YYYY-MM-DD/part-<ms>-<pid>-<seq>.parquet   (legacy, still read)

Every process writes its own files (pid and a sequence in the name), so several
serving workers never contend. A day's window is read by listing only that
day's partitions. Prediction rows carry the reserved columns below plus one
column per feature; label rows carry ``request_id``, ``label`` (as text) and
``received_at``. Labels are joined at read time, the last one for a request
winning, so a label may arrive before or after its prediction is flushed.
"""

from monitoring.predlog.reader import PredictionLogReader, WindowReader, open_log
from monitoring.predlog.store import LogStore, keep_sample
from monitoring.predlog.writer import PredictionLogWriter, WriterStats

__all__ = ["LogStore", "PredictionLogReader", "PredictionLogWriter", "WindowReader", "WriterStats",
           "keep_sample", "open_log"]
