"""One-shot fault rules: a status, a connection reset mid-body, or a malformed JSON body."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

KINDS = ("status", "reset", "malformed")


@dataclass
class Fault:
    path_regex: str
    kind: str = "status"
    count: int = 1
    status: int = 503
    retry_after: str | None = None
    method: str | None = None
    after_bytes: int = 0
    body: dict | None = None  # status faults: replaces the Fullstory error body
    pattern: re.Pattern = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, not {self.kind!r}")
        if self.count < 1:
            raise ValueError("fault count must be at least 1")
        self.pattern = re.compile(self.path_regex)
        self.method = self.method.upper() if self.method else None
        self.retry_after = None if self.retry_after is None else str(self.retry_after)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and self.pattern.search(path) is not None


class FaultRules:
    """Rules are consumed in the order they were added: the first rule that matches takes the request."""

    def __init__(self) -> None:
        self._rules: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._rules.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._rules)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
