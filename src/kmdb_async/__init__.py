"""kmdb-async: import KissMetrics raw event exports into SQL, in one uvloop process."""

__version__ = "0.1.0"
