"""Policy section of the agents' standard replies: named texts a ``respond`` command may use.

sop.md names a standard inquiry template ("please describe the type of problem and when it
happened") and knowledge-base answers for common problems. Each reply has a text per language
(Jinja2, rendered in a sandbox with the ticket's ``number`` and ``subject``); the ticket's
language picks the variant, falling back to ``default_language``.
"""

from __future__ import annotations

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.templating import pick_language


class ReplyPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_language: str = "en"
    templates: dict[str, dict[str, str]] = Field(
        default={},
        description="reply name -> language -> text (Jinja2: number, subject; and waited, "
        "how long an automatic resolution's ticket waited: routing.unanswered_resolution).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ReplyPolicy:
        environment = SandboxedEnvironment()
        problems: list[str] = []
        for name, variants in self.templates.items():
            if self.default_language not in variants:
                problems.append(f"reply {name} has no {self.default_language!r} variant")
            for language, text in variants.items():
                try:
                    environment.parse(text)
                except TemplateSyntaxError as error:
                    problems.append(f"reply {name} ({language}): line {error.lineno}: {error}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def language_of(self, name: str, language: str | None) -> str:
        return pick_language(self.templates[name], language, self.default_language)
