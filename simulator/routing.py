"""Route templates ("/v2/{kind}/batch/{job_id}") matched against request paths."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .protocol import Request, Response

# Who may call a route: any valid key, an Admin/Architect key, no key at all (control API), or a
# signed storage URL that must come WITHOUT an Authorization header.
ANY_KEY, EXPORT_KEY, NO_AUTH, STORAGE = "any_key", "export_key", "no_auth", "storage"

Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    template: str
    handler: Handler
    access: str = ANY_KEY
    patterns: dict[str, str] = field(default_factory=dict)  # per-parameter regex, default [^/]+
    regex: re.Pattern = field(init=False, repr=False)

    def __post_init__(self) -> None:
        def group(m: re.Match) -> str:
            name = m.group(1)
            return f"(?P<{name}>{self.patterns.get(name, '[^/]+')})"

        self.regex = re.compile("^" + re.sub(r"\{(\w+)\}", group, self.template) + "$")


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, access: str = ANY_KEY, **patterns: str) -> None:
        self.routes.append(Route(method, template, handler, access, patterns))

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, params, path_exists): path_exists with no route means 405."""
        path_exists = False
        for route in self.routes:
            m = route.regex.match(path)
            if m:
                path_exists = True
                if route.method == method or (method == "HEAD" and route.method == "GET"):
                    return route, m.groupdict(), True
        return None, {}, path_exists
