"""The store: the events and the append-only log, which alone knows the log's file and byte layout.

``events`` (the event types), ``errors`` (the log's errors), ``layout`` (the line format: envelope, encode,
parse, checksums), ``scan`` (reading the file: valid end, chunks, replays with the parallel checker, the one
seek by seq), ``log`` (EventLog, the writer, and the functions that take a data dir), ``tolerant`` (replays
past records that pass their checksum but do not decode), ``check`` (the background check of what a snapshot
stands for), ``verify``, ``repair`` and ``contents`` (`dset log verify | repair | stats | history`),
``limits`` (what may be appended), ``locks`` (one writer per dataset), ``crc_worker`` (the checker process).
"""
