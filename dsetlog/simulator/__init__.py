"""The built-in OpenAI-compatible chat-completions server on loopback (and OpenAI's Batch API over it), for
runs without an API key, with the quirks of real servers as switches.

It is the provider behind ``--simulate``, the test fixture, and ``dset simulate``.  Its public face is
``Simulator`` (the server: ``start()``/``stop()`` or ``with``, ``stats()``, ``requests()``) and
``SimConfig`` (its switches), both re-exported here.  Answers are deterministic functions of
``(seed, prompt key)``, built from the prompt's own sentences; faults are a pure function of
``(seed, prompt key, attempt)``; everything it says is labelled as simulated.

Modules, lowest first: ``config`` (SimConfig), ``reply`` (a reply on the wire), ``text`` (the synthetic
text), ``schema`` (JSON instances of a schema), ``faults`` (injected faults, rate limit, refusals),
``stats`` (counters and the request log), ``chat`` (how a chat completion is answered), ``batches``
(``/v1/files`` and ``/v1/batches``, answered by ``chat``), ``protocol``
(the HTTP/1.1 connection) and ``server`` (``Simulator``, its routes, ``serve_forever``).  It imports
nothing of dsetlog outside this package but the ground floor's ``dsetlog.scripts`` (words, sentence ends
and the token estimate in any script, the same the client counts with).
"""

from dsetlog.simulator.config import SimConfig
from dsetlog.simulator.server import Simulator

__all__ = ["SimConfig", "Simulator"]
