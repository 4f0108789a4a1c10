"""The review page: ``GET /`` (index.html) and ``GET /static/...`` (its CSS and JavaScript).

Plain files under ``api/static/``, no build step and nothing from a CDN. The page talks to the server only
through the public REST API (``/api/v1``), sending the bearer token the user typed when the server has one.
These routes are not part of the API, so they are not in the OpenAPI document.
"""

from __future__ import annotations

from pathlib import Path

import falcon

STATIC_DIR = Path(__file__).resolve().parent / "static"

# The page loads only its own files and talks only to this server.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class IndexResource:
    """GET / (and HEAD /): the review page."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            body = self.path.read_bytes()
        except FileNotFoundError:
            raise falcon.HTTPNotFound(title="Not Found",
                                      description="the review page is not installed (api/static/index.html)") from None
        resp.content_type = "text/html; charset=utf-8"
        resp.set_header("Content-Security-Policy", CSP)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.data = body

    def on_head(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.on_get(req, resp)


def add_ui_routes(app: falcon.App, static_dir: str | Path = STATIC_DIR) -> None:
    """Serve the review page at ``/`` and its files at ``/static/`` (call once, from create_app)."""
    static_dir = Path(static_dir)
    app.add_route("/", IndexResource(static_dir / "index.html"))
    app.add_static_route("/static", str(static_dir))
