"""ItemIds: a dataset's work item ids by row, and rows by id, in ~20 bytes an item instead of ~140.

The engine's item ids are a prefix and 16 hex digits (``q_4d468eb9320cf2ac``, :func:`dsetlog.ids.content_id`).
Kept as Python strings in a dict, each took ~140 bytes (the string, its dict slot, a list slot): at ten million
entries a third of the read model. Here such an id is a prefix code (one byte) and its digits as a 64-bit number,
and rows are found by an open-addressing hash table of row numbers over those numbers (an ``array``, saved in a
snapshot as it is). An id of any other shape (a hand-made log, more than 254 prefixes) is kept as its string.

An entry's id is its item's digits after ``entry_`` (:func:`dsetlog.ids.entry_id_for`): :meth:`ItemIds.by_digits`
finds the items with those digits, whatever their prefix.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator

ODD = 255  # prefix code of an id kept as its string
ID_PARTS = 3  # the arrays a snapshot keeps (ItemIds.arrays)
_MAX_PREFIXES = 254
_MULTIPLIER = 0x9E3779B97F4A7C15  # Fibonacci hashing: the digits of bench logs are not uniform in their low bits
_MASK64 = (1 << 64) - 1
_EMPTY = -1
# Ids kept by their string too, found without parsing: every id while a bulk fold (a replay) makes the table
# (:meth:`ItemIds.settle` drops them after it), else the open items (queued, not yet answered), which the next
# records ask for. Past this many open ones, the oldest are left to the table.
_OPEN_KEPT = 1 << 20
_BIG_ENDIAN = sys.byteorder == "big"


def digits_of(text: str) -> int | None:
    """The 16 lowercase hex digits as a number, or None when ``text`` is not exactly that."""
    # int() also takes "_", "+", "-", spaces, capitals and other scripts' digits: refuse them first (C calls, as
    # this runs for each record of a replay)
    if len(text) != 16 or not text.isascii() or not text.isalnum() or not (text.islower() or text.isdigit()):
        return None
    try:
        return int(text, 16)
    except ValueError:  # letters past f
        return None


class ItemIds:
    """Row ``r``'s id is ``prefixes[prefix[r]] + "_" + f"{digits[r]:016x}"``, or ``odd[digits[r]]``."""

    __slots__ = ("prefixes", "prefix", "digits", "odd", "odd_rows", "slots", "shared_digits", "_known",
                 "_complete", "_missed")

    def __init__(self, prefixes: list[str] | None = None, prefix: bytearray | None = None,
                 digits: array[int] | None = None, odd: list[str] | None = None, slots: array[int] | None = None,
                 *, complete: bool = False, shared_digits: bool = False) -> None:
        self.prefixes: list[str] = prefixes if prefixes is not None else []
        self.prefix = prefix if prefix is not None else bytearray()
        self.digits = digits if digits is not None else array("Q")
        self.odd: list[str] = odd if odd is not None else []
        self.odd_rows = {item_id: r for r, item_id in zip(self._odd_rows(), self.odd, strict=True)}
        self.slots = slots if slots is not None else array("i", [_EMPTY]) * 8
        # two rows have the same digits (ids of two prefixes): an entry id may then name either item's entry
        self.shared_digits = shared_digits
        # not in a snapshot: a model loaded from one finds them by the table. complete: every row's id is in it
        # (a table made from empty by a bulk fold), so an id it lacks is not here at all
        self._known: dict[str, int] = {}
        self._complete = complete and not self.prefix
        self._missed: tuple[str, str, int | None] = ("", "", None)  # the last id get() did not find, parsed

    def _odd_rows(self) -> Iterator[int]:
        prefix = self.prefix
        return (r for r in range(len(prefix)) if prefix[r] == ODD)

    def __len__(self) -> int:
        return len(self.prefix)

    def id(self, r: int) -> str:
        p = self.prefix[r]
        if p == ODD:
            return self.odd[self.digits[r]]
        return f"{self.prefixes[p]}_{self.digits[r]:016x}"

    def ids(self) -> Iterator[str]:
        return map(self.id, range(len(self.prefix)))

    def get(self, item_id: str) -> int | None:
        """The row of this id, or None."""
        found = self._known.get(item_id)
        if found is not None or self._complete:
            return found
        prefix, sep, rest = item_id.partition("_")
        value = digits_of(rest) if sep else None
        if value is None or prefix not in self.prefixes:
            found = self.odd_rows.get(item_id)
            if found is None:
                self._missed = (item_id, prefix, value)
            return found
        p = self.prefixes.index(prefix)
        slots, digits, codes = self.slots, self.digits, self.prefix
        mask = len(slots) - 1  # of this table, even if another thread grows it meanwhile
        i = ((value * _MULTIPLIER) & _MASK64) >> (65 - len(slots).bit_length())  # the top bits: log2(len) of them
        while (r := slots[i]) != _EMPTY:
            if digits[r] == value and codes[r] == p:
                return r
            i = (i + 1) & mask
        self._missed = (item_id, prefix, value)
        return None

    def by_digits(self, value: int) -> list[int]:
        """The rows whose digits are ``value`` (ids of any prefix)."""
        if self._complete:  # the table is not kept up while complete (settle() makes it): every id is in _known
            known, prefix, digits = self._known.get, self.prefix, f"{value:016x}"
            return sorted(r for p in self.prefixes if (r := known(f"{p}_{digits}")) is not None and prefix[r] != ODD)
        slots, digits = self.slots, self.digits
        mask = len(slots) - 1  # of this table, even if another thread grows it meanwhile
        i = ((value * _MULTIPLIER) & _MASK64) >> (65 - len(slots).bit_length())  # the top bits: log2(len) of them
        found = []
        while (r := slots[i]) != _EMPTY:
            if digits[r] == value:
                found.append(r)
            i = (i + 1) & mask
        return found

    @property
    def may_share_digits(self) -> bool:
        """Whether two rows may have the same digits (ids of two prefixes): :attr:`shared_digits` says so once the
        table is made, which a complete one is not until it settles."""
        return self.shared_digits or (self._complete and len(self.prefixes) > 1)

    def closed(self, item_id: str) -> None:
        """The item will seldom be asked for by its id again (it was answered): leave it to the table."""
        if not self._complete:
            self._known.pop(item_id, None)

    def settle(self) -> None:
        """The bulk fold is over: keep ids as numbers only (the answered ones, and the open ones too: they are
        found by the table from now on)."""
        if self._complete:
            self._grow()
        self._known, self._complete = {}, False

    def add(self, item_id: str) -> int:
        """A new row for this id (not already here: :meth:`get` first)."""
        r = len(self.prefix)
        missed, prefix, value = self._missed
        if missed != item_id:  # not just looked up: parse it
            prefix, sep, rest = item_id.partition("_")
            value = digits_of(rest) if sep else None
        p = self._prefix_code(prefix) if value is not None else ODD
        if p == ODD:
            self.prefix.append(ODD)
            self.digits.append(len(self.odd))
            self.odd.append(item_id)
            self.odd_rows[item_id] = r
            if self._complete:
                self._known[item_id] = r
            return r
        self.prefix.append(p)
        self.digits.append(value)  # type: ignore[arg-type]
        if self._complete:  # (two prefixes with the same digits are found when the table is made: settle())
            self._known[item_id] = r
            return r
        if 2 * (r + 1) > len(self.slots):
            self._grow()
        else:
            self._place(r, value)  # type: ignore[arg-type]
        if len(self._known) >= _OPEN_KEPT and not self._complete:
            del self._known[next(iter(self._known))]
        self._known[item_id] = r
        return r

    def _prefix_code(self, prefix: str) -> int:
        try:
            return self.prefixes.index(prefix)
        except ValueError:
            if len(self.prefixes) >= _MAX_PREFIXES:
                return ODD
            self.prefixes.append(prefix)
            return len(self.prefixes) - 1

    def _place(self, r: int, value: int) -> None:
        slots, digits = self.slots, self.digits
        mask = len(slots) - 1
        i = ((value * _MULTIPLIER) & _MASK64) >> (65 - len(slots).bit_length())  # the top bits: log2(len) of them
        while (other := slots[i]) != _EMPTY:
            if digits[other] == value:  # rows of one digits share a probe sequence: it passes every one of them
                self.shared_digits = True
            i = (i + 1) & mask
        slots[i] = r

    def _grow(self) -> None:
        """A table four times the rows (half of it empty at least until the next growth), every row placed anew."""
        size = 8
        while size < 4 * len(self.prefix):
            size *= 2
        slots = array("i", [_EMPTY]) * size
        mask, shift = size - 1, 65 - size.bit_length()
        prefix, digits = self.prefix, self.digits
        for r in range(len(prefix)):  # _place, inline: a growth places every row again
            if prefix[r] != ODD:
                i = ((digits[r] * _MULTIPLIER) & _MASK64) >> shift
                while (other := slots[i]) != _EMPTY:
                    if digits[other] == digits[r]:
                        self.shared_digits = True
                    i = (i + 1) & mask
                slots[i] = r
        self.slots = slots  # readers see the old table or the whole new one

    # -- snapshots -------------------------------------------------------------

    def arrays(self) -> list[bytes]:
        """prefix, digits and slots as little-endian bytes (:meth:`from_arrays`)."""
        if self._complete:
            self._grow()  # the table a snapshot keeps (kept up from here on: no longer complete)
            self._known, self._complete = {}, False
        out = [bytes(self.prefix)]
        for column in (self.digits, self.slots):
            if _BIG_ENDIAN:
                column = array(column.typecode, column)
                column.byteswap()
            out.append(column.tobytes())
        return out

    @classmethod
    def from_arrays(cls, prefixes: list[str], odd: list[str], raw: list[memoryview], *, shared_digits: bool) -> ItemIds:
        digits, slots = array("Q"), array("i")
        digits.frombytes(raw[1])
        slots.frombytes(raw[2])
        if _BIG_ENDIAN:
            digits.byteswap()
            slots.byteswap()
        prefix = bytearray(raw[0])
        if len(digits) != len(prefix) or len(slots) < 8 or len(slots) & (len(slots) - 1):
            raise ValueError(f"a snapshot's item ids do not hold together ({len(prefix)} prefixes, {len(digits)} "
                             f"numbers, a table of {len(slots)})")
        return cls(prefixes, prefix, digits, odd, slots, shared_digits=shared_digits)
