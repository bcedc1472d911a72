"""Who sees what in the console, from the policy's directory. Pure.

* an operator of the directory (``directory.operators``) and a director: every ticket and
  agent;
* a supervisor (named in a group's ``supervisors``): the tickets and agents of the groups they
  supervise and of their own groups, and their own tickets (every group under
  ``supervisor_scope: every_group``);
* an agent or expert: the tickets of their groups and those assigned to them; the agents of
  their groups;
* a group's tickets include those still naming a group the policy retired into it
  (``retired_groups: moved_to``);
* a group asked for findings (dispatch's ``request_specialist``) sees the ticket too, until it
  answers (``provide_findings``): its members and supervisors read the question and send the
  answer from their desks; the dashboard's figures and queues stay their groups' own;
* a customer (a survey link's token), ``system``, or an id the directory does not know: nothing
  of the API (403); a customer token opens its ticket's survey page only.

Seeing is not acting: a command is sent to dispatch in the caller's name and dispatch decides
(assignee, supervisor of the group, ...); the console only refuses (403) a command on a ticket or
agent the caller may not even see.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.policy import Policy
from shared.credentials import Credential

EVERY_GROUP: None = None


@dataclass(frozen=True)
class Viewer:
    """A person looking at the console, and the part of the desk they see."""

    subject: str
    name: str
    role: str
    """``operator``, ``director``, ``supervisor``, ``expert`` or ``agent``."""
    groups: frozenset[str] | None
    """The groups whose tickets and agents they see; None: every group."""

    @property
    def sees_everything(self) -> bool:
        return self.groups is None

    @property
    def supervises(self) -> bool:
        """Shown the per-agent figures of the groups they see (the monthly review)."""
        return self.role in ("operator", "director", "supervisor")

    def sees_ticket(
        self, group_id: str | None, agent_id: str | None, asked: str | None = None
    ) -> bool:
        """Whether they see a ticket of ``group_id`` assigned to ``agent_id`` whose specialist
        request waits on the group ``asked`` (None: no request open)."""
        if self.groups is None or agent_id == self.subject:
            return True
        return any(g is not None and g in self.groups for g in (group_id, asked))

    def sees_agent(self, agent_id: str, groups: list[str]) -> bool:
        if self.groups is None or agent_id == self.subject:
            return True
        return bool(self.groups & set(groups))


class NotAPerson(Exception):
    """A credential that opens nothing in the console's API (a customer's, ``system``, or an
    id the directory does not know)."""


def check_kind(credential: Credential) -> None:
    """:class:`NotAPerson` unless the token is of a kind people hold (an agent's, an
    operator's): told by the verified token alone, so a request can be refused before it takes
    a sending slot or a connection, which a customer's or channel client's token would
    otherwise compete with the agents for."""
    if credential.kind != "agent":
        raise NotAPerson(f"a {credential.kind} token does not open the console's API")


def viewer(credential: Credential, policy: Policy) -> Viewer:
    """The viewer a verified token stands for; :class:`NotAPerson` when it stands for none."""
    directory = policy.directory
    subject = credential.subject
    check_kind(credential)
    operator = next((o for o in directory.operators if o.id == subject), None)
    if operator is not None:
        return Viewer(subject, operator.name, "operator", EVERY_GROUP)
    agent = directory.agent.get(subject)
    if agent is None:
        raise NotAPerson(f"{subject!r} is not in the policy's directory")
    if agent.role == "director" or (
        agent.supervises and directory.supervisor_scope == "every_group"
    ):
        return Viewer(subject, agent.name, agent.role, EVERY_GROUP)
    supervised = {g.id for g in directory.groups if subject in g.supervisors}
    role = "supervisor" if supervised and agent.role != "expert" else agent.role
    groups = {*agent.groups, *supervised}
    inherited = {gone for gone, home in directory.moved.items() if home in groups}
    return Viewer(subject, agent.name, role, frozenset(groups | inherited))
