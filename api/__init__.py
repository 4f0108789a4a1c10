"""The REST API (Falcon): ``from api import create_app``."""

from api.app import create_app

__all__ = ["create_app"]
