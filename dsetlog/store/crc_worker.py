"""The checksum half of a big replay, run by :func:`dsetlog.store.scan.read_batches` on a second core.

    python -m dsetlog.store.crc_worker FD START END

Checks the whole lines of ``[START, END)`` of the log open as descriptor FD (inherited from the
reader, so both read the same file) in chunks and prints, after each
chunk, the offset it has checked up to; at the first line that fails it prints
``bad INDEX REASON`` (INDEX counted in lines from START) and stops. The reader
yields no record before this worker (or the reader itself) has passed it.
"""

from __future__ import annotations

import os
import sys

from dsetlog.store.errors import LogError
from dsetlog.store.layout import count_checked
from dsetlog.store.scan import line_chunks


def main(argv: list[str]) -> int:
    fd, start, end = int(argv[0]), int(argv[1]), int(argv[2])
    out = sys.stdout.buffer
    lines = 0
    try:
        for pos, data, n in line_chunks(fd, start, end):
            good, why = count_checked(data, n)
            if why:
                out.write(f"bad {lines + good} {' '.join(why.split())}\n".encode())
                break
            lines += good
            out.write(b"%d\n" % (pos + n))
            out.flush()
    except (OSError, ValueError, LogError):
        return 1  # no verdict: the reader checks what is left itself
    finally:
        out.flush()
        os.close(fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
