"""The ASGI root: the server builds its admin API, portal, console and ADE web view at once; tests' apps
build each on its first request; the lifespan runs the background tasks either way."""

from __future__ import annotations

from starlette.testclient import TestClient

from pomona.app import Pomona, create_app

PARTS = ("api", "portal", "console", "ade_web")


def built(app: object) -> list[str]:
    return [name for name in PARTS if name in vars(app)]


class TestRootApp:
    def test_eager_builds_every_part(self, pomona: Pomona) -> None:
        """The server's app (eager, the default) has every part built before its first request."""
        assert built(create_app(pomona=pomona)) == list(PARTS)

    def test_lazy_builds_a_part_on_its_first_request(self, pomona: Pomona) -> None:
        """Not eager: the lifespan starts and stops the background tasks with no part built; a request to
        a part builds that part alone, and it answers as the eager app's does."""
        app = create_app(pomona=pomona, eager=False)
        with TestClient(app, base_url="https://pomona.test") as c:  # type: ignore[arg-type]
            assert pomona.background._loop is not None  # started by the lifespan
            assert built(app) == []
            assert c.get("/console/signin").status_code == 200
            assert built(app) == ["console"]
            assert c.get("/api/v1/openapi.json").json()["info"]["title"] == "Pomona admin API"
            assert built(app) == ["api", "console"]
        assert pomona.background._loop is None  # stopped by the lifespan
