"""Mergeable column summaries and the summary engine (issue 18): a drift check whose memory
does not grow with the window and which summarises each log partition once.

``sketch``: one column's summary and ``merge``; ``methods``: the drift methods on summaries
with their error bounds; ``window``: a reference's and a window's summaries and the verdict
made from them; ``engine``: the local engine over the Parquet log, with stored summaries.
"""
