"""Prints, as JSON, every route of the app a server started with the given flags would serve:
the app is built in this process exactly as the server builds it (extensions loaded, their
`app_started` routes included, the page mounted), without serving it. Run as a script by
test_auth_routes.py so that loading extensions does not touch the test process."""
from __future__ import annotations

import json
import sys
import time
from typing import Any


def routes_of(app: Any, prefix: str = "") -> list[dict[str, Any]]:
    from fastapi.routing import iter_route_contexts
    from starlette.routing import Mount

    out: list[dict[str, Any]] = []
    for rc in iter_route_contexts(app.routes):
        route = rc.route
        if isinstance(route, Mount):
            inner = getattr(route.app, "routes", None)
            if inner is not None:
                out += routes_of(route.app, prefix + route.path)
            else:  # a static files folder: any path under it
                out.append({"path": prefix + route.path + "/{path:path}", "methods": ["GET"], "required_query": [],
                            "mount": True})
            continue
        methods = sorted(rc.methods or ["GET"])
        params = getattr(rc, "dependant", None)
        required_query = [p.name for p in getattr(params, "query_params", []) if p.field_info.is_required()]
        out.append({"path": prefix + str(rc.path), "methods": methods, "required_query": required_query,
                    "mount": False})
    return out


def main(argv: list[str]) -> None:
    from webui.app import build_real_app
    from webui.cli import parse_args

    app = build_real_app(parse_args(argv), time.time())
    print(json.dumps(routes_of(app)))


if __name__ == "__main__":
    main(sys.argv[1:])
