"""The engine: runs work items against a model with bounded concurrency, recording every step; progress."""
