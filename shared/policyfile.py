"""Loading a YAML policy file into a pydantic model, with errors that name the line and field.

The policy file is configuration an operator edits by hand, so a mistake must come back as
``policy.yaml:42: sla.policies[3].targets.first_response: cannot read duration 'soon'`` rather
than as a traceback. Its version is a hash of its bytes: every decision records it, so a ticket's
history says which rules decided it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from shared.logging import get_logger

log = get_logger(__name__)
M = TypeVar("M", bound=BaseModel)


class PolicyError(ValueError):
    """The policy file cannot be used; ``problems`` lists each one with its line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: invalid policy\n" + "\n".join(f"  {p}" for p in problems))
        self.source = source
        self.problems = problems


def policy_version(content: bytes) -> str:
    """Content hash of the policy file: the version every decision records."""
    return "sha256:" + hashlib.sha256(content).hexdigest()[:16]


Check = Callable[[M], list[tuple[tuple[int | str, ...], str]]]
"""More rules, that need more than the file (settings): each problem's field path and message."""


def load_policy(path: Path, model: type[M], check: Check[M] | None = None) -> tuple[M, str]:
    """Read and validate a policy file; return the model and its version."""
    content = path.read_bytes()
    return parse_policy(content, model, source=str(path), check=check), policy_version(content)


def parse_policy(
    content: bytes, model: type[M], *, source: str = "<policy>", check: Check[M] | None = None
) -> M:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyError(source, [f"not UTF-8: {error}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PolicyError(source, [f"{where}: {getattr(error, 'problem', error)}"]) from None
    if not isinstance(data, dict):
        raise PolicyError(source, [f"{source}:1: the policy must be a mapping of sections"])
    try:
        policy = model.model_validate(data)
    except ValidationError as error:
        found = [(item["loc"], item["msg"]) for item in error.errors()]
        raise PolicyError(source, _located(node, source, found)) from None
    if check is not None and (found := check(policy)):
        raise PolicyError(source, _located(node, source, found))
    return policy


def _located(
    node: yaml.Node | None, source: str, found: list[tuple[tuple[int | str, ...], str]]
) -> list[str]:
    problems = []
    for path, message in found:
        line = _line_of(node, path)
        where = f"{source}:{line}" if line else source
        problems.append(f"{where}: {_dotted(path)}: {message}")
    return problems


class PolicyWatch(Generic[M]):
    """A policy file kept current: :meth:`current` reloads it when the file changed.

    Decisions already taken keep the version they recorded; new decisions take the new one. An
    edit that does not validate is refused (logged) and the previous policy stays in force.
    """

    def __init__(self, path: Path, model: type[M], check: Check[M] | None = None) -> None:
        self.path = path
        self.model = model
        self.check = check
        self._stamp = self._stat()
        self._policy, self.version = load_policy(path, model, check)

    def _stat(self) -> tuple[int, int]:
        stat = os.stat(self.path)
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> tuple[M, str]:
        """The policy in force and its version (one ``stat`` per call)."""
        try:
            stamp = self._stat()
        except OSError:
            return self._policy, self.version
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._policy, self.version = load_policy(self.path, self.model, self.check)
            except (OSError, PolicyError) as error:
                log.error(
                    "policy change refused; keeping the previous policy",
                    path=str(self.path),
                    version=self.version,
                    error=str(error),
                )
            else:
                log.info("policy reloaded", version=self.version)
        return self._policy, self.version


def _dotted(path: tuple[int | str, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _line_of(node: yaml.Node | None, path: tuple[int | str, ...]) -> int | None:
    """Line (1-based) of the deepest node along ``path`` that exists in the YAML."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key, value in node.value:
                if key.value == part:
                    found = value
                    line = key.start_mark.line + 1
                    break
            if found is None:
                return line
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
