"""The store: events, the append-only log (its byte layout, seek and scan), record limits, locks, verify and repair."""
