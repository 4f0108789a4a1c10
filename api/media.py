"""msgspec as Falcon's JSON media handler: responses (dicts, lists, Structs) are encoded in C."""

from __future__ import annotations

from typing import Any

import falcon
import falcon.media
import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class MsgspecJSONHandler(falcon.media.BaseHandler):
    """``resp.media = struct`` is encoded by msgspec; ``req.get_media()`` decodes plain JSON (typed request
    bodies are decoded by the validation hooks of :mod:`api.spec` instead)."""

    exhaust_stream = True

    def deserialize(self, stream: Any, content_type: str | None, content_length: int | None) -> Any:
        data = stream.read()
        if not data:
            raise falcon.MediaNotFoundError("JSON")
        try:
            return _decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise falcon.MediaMalformedError("JSON") from exc

    def serialize(self, media: Any, content_type: str | None = None) -> bytes:
        return _encoder.encode(media)


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)
