"""Loading a YAML policy file into a pydantic model, with errors that name the line and field.

The policy file is configuration an operator edits by hand, so a mistake must come back as
``policy.yaml:42: sla.policies[3].targets.first_response: cannot read duration 'soon'`` rather
than as a traceback. Its version is a hash of its bytes: every decision records it, so a ticket's
history says which rules decided it. Versions written ahead of time take effect at their
``effective_from`` (:class:`PolicySchedule`); each service records when it switched in its
``policy_history`` table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from shared.database import Connection, identifier
from shared.logging import get_logger

if TYPE_CHECKING:
    from shared.service import Service, Worker

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


MAX_POLICY_BYTES = 4 * 1024 * 1024
"""A policy file is written by hand: larger than this, it is not one (``/dev/zero`` would read
for ever)."""


def read_policy_file(path: Path) -> bytes:
    """A policy file's bytes (:class:`PolicyError` when too large; OSError when unreadable)."""
    with path.open("rb") as file:
        content = file.read(MAX_POLICY_BYTES + 1)
    if len(content) > MAX_POLICY_BYTES:
        raise PolicyError(str(path), [f"larger than {MAX_POLICY_BYTES // 1024 // 1024} MiB"])
    return content


def load_policy(path: Path, model: type[M], check: Check[M] | None = None) -> tuple[M, str]:
    """Read and validate a policy file; return the model and its version."""
    content = read_policy_file(path)
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


@dataclass(frozen=True)
class PolicyVersion(Generic[M]):
    """One version of the policy: the validated model, its version (content hash), its file."""

    policy: M
    version: str
    source: str

    @property
    def effective_from(self) -> datetime | None:
        """None: in force from the start (a single file without a date)."""
        value: datetime | None = getattr(self.policy, "effective_from", None)
        return value

    @property
    def approved_by(self) -> str | None:
        value: str | None = getattr(self.policy, "approved_by", None)
        return value

    @property
    def starts(self) -> datetime:
        return self.effective_from or _BEGINNING


_BEGINNING = datetime.min.replace(tzinfo=UTC)


class PolicySchedule(Generic[M]):
    """The policy versions of a file or a directory, and which one is in force at a moment.

    ``path`` is one YAML file or a directory of them (``*.yaml``, ``*.yml``); each file is a
    version, in force from its ``effective_from`` until the next version's. So a change is
    written ahead of time and services switch *at that moment, by their clock* — never because a
    file changed. A version without ``effective_from`` is in force from the start; before the
    first version starts, the earliest one is in force (a service always has a policy).

    Files are re-read when they change (one ``stat`` per file per call): a file that does not
    validate is refused and logged, and the previous content of that file, if any, stays.
    """

    def __init__(self, path: Path, model: type[M], check: Check[M] | None = None) -> None:
        self.path = path
        self.model = model
        self.check = check
        self._files: dict[Path, tuple[tuple[int, int], PolicyVersion[M] | None]] = {}
        self._versions: list[PolicyVersion[M]] = []
        self._recorded: str | None = None
        self._refresh(strict=True)

    # --- reading --------------------------------------------------------------------------

    def versions(self) -> list[PolicyVersion[M]]:
        """Every valid version, in the order they take effect."""
        self._refresh()
        return list(self._versions)

    def in_force(self, moment: datetime) -> PolicyVersion[M]:
        """The version in force at ``moment``: the last one whose effective date has passed."""
        versions = self.versions()
        started = [v for v in versions if v.starts <= moment]
        return started[-1] if started else versions[0]

    def pending_switch(self, moment: datetime) -> bool:
        """Whether the version in force at ``moment`` may not be recorded yet (see adopt)."""
        return self.in_force(moment).version != self._recorded

    async def adopt(self, conn: Connection, moment: datetime) -> tuple[PolicyVersion[M], bool]:
        """The version in force at ``moment``, recorded in the schema's ``policy_history``.

        The second value is true in the one transaction that records the switch to it (for
        this schema, across instances): what a service does once per version — dispatch moves
        the tickets of retired groups — it does when it is true. A version is remembered as
        recorded only once another transaction has committed it, so a rolled-back switch is
        made again.
        """
        current = self.in_force(moment)
        if current.version == self._recorded:
            return current, False
        inserted = await conn.fetchval(
            "INSERT INTO policy_history (version, approved_by, effective_from, loaded_at, source)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (version) DO NOTHING RETURNING true",
            current.version,
            current.approved_by,
            current.effective_from,
            moment,
            current.source,
        )
        if inserted:
            log.info(
                "policy in force",
                version=current.version,
                approved_by=current.approved_by,
                effective_from=current.effective_from,
            )
            return current, True
        self._recorded = current.version
        return current, False

    # --- loading --------------------------------------------------------------------------

    def _paths(self) -> list[Path]:
        if not self.path.is_dir():
            return [self.path]
        return sorted(p for p in self.path.iterdir() if p.suffix in (".yaml", ".yml"))

    def _refresh(self, *, strict: bool = False) -> None:
        try:
            paths = self._paths()
        except OSError as error:
            if strict:
                raise
            log.error("policy source unreadable; keeping the versions read", error=str(error))
            return
        changed = set(self._files) - set(paths)
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                changed.add(path)
                continue
            stamp = (stat.st_mtime_ns, stat.st_size)
            known = self._files.get(path)
            if known is not None and known[0] == stamp:
                continue
            changed.add(path)
            try:
                loaded, version = load_policy(path, self.model, self.check)
            except (OSError, PolicyError) as error:
                if strict and not self.path.is_dir():
                    raise
                log.error(
                    "policy version refused; keeping what was in force",
                    path=str(path),
                    error=str(error),
                )
                self._files[path] = (stamp, known[1] if known else None)
                continue
            self._files[path] = (stamp, PolicyVersion(loaded, version, str(path)))
            if known is not None:
                log.info("policy version reloaded", path=str(path), version=version)
        for gone in set(self._files) - set(paths):
            del self._files[gone]
        if changed or strict:
            found = [v for _, v in self._files.values() if v is not None]
            if not found:
                if strict:
                    raise PolicyError(str(self.path), ["no valid policy version"])
                log.error("no valid policy version left; keeping the versions read")
                return
            self._versions = sorted(found, key=lambda v: (v.starts, v.source))


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


@dataclass(frozen=True)
class Adoption:
    """A version a service put in force, and when (by its clock)."""

    version: str
    approved_by: str | None
    effective_from: datetime | None
    loaded_at: datetime
    source: str


async def adoptions(conn: Connection, schema: str) -> list[Adoption]:
    """A service's ``policy_history``, oldest first; empty before it created the table."""
    table = f"{identifier(schema)}.policy_history"
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return []
    rows = await conn.fetch(
        f"SELECT version, approved_by, effective_from, loaded_at, source FROM {table} "
        "ORDER BY loaded_at, version"
    )
    return [Adoption(*row) for row in rows]


POLICY_CHECK_INTERVAL = timedelta(seconds=1)
"""How often an idle service looks whether a new policy version has come into force."""


def keep_in_force(schedule: PolicySchedule[M]) -> Worker:
    """A worker that records the switch to each version when it comes into force, by the
    service's clock, even while no message arrives (handlers adopt it as well)."""
    from shared.service import every

    async def policy_in_force(service: Service) -> None:
        async with service.pool.acquire() as conn, conn.transaction():
            await schedule.adopt(conn, await service.clock.now(conn))

    return every(POLICY_CHECK_INTERVAL, policy_in_force)
