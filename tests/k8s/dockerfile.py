"""The Dockerfile read as instructions, stage by stage (enough of Docker's syntax for our file:
comments, line continuations, `KEY=value` ENV/ARG/LABEL forms and JSON-form ENTRYPOINT)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from manifests import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str
    stage: int  # 0 for the first FROM's stage


def instructions() -> list[Instruction]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    result, stage = [], -1
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        result.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return result


def stage_count() -> int:
    return 1 + max(i.stage for i in instructions())


def final(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction in the final stage."""
    last = stage_count() - 1
    return [i.arguments for i in instructions() if i.keyword == keyword and i.stage == last]


def pairs(keyword: str, stage: int | None = None) -> dict[str, str]:
    """KEY=value pairs of ENV, ARG or LABEL instructions (of one stage, or of all)."""
    found: dict[str, str] = {}
    for instruction in instructions():
        if instruction.keyword == keyword and stage in (None, instruction.stage):
            for token in shlex.split(instruction.arguments):
                key, sep, value = token.partition("=")
                if sep:
                    found[key] = value
    return found


def final_env() -> dict[str, str]:
    return pairs("ENV", stage_count() - 1)


def entrypoint() -> list[str]:
    (value,) = final("ENTRYPOINT")
    return json.loads(value)


def from_images() -> list[str]:
    return [re.split(r"\s+", i.arguments)[0] for i in instructions() if i.keyword == "FROM"]
