"""docker-compose.yml and the Dockerfile read as Compose and Docker read them: the services'
commands and environment, and the files the image holds. Shared by the test that checks the
files (`test_deploy`) and the one that runs the same services as processes (`test_topology`).
"""

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()

# `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`; `$$` is a `$`.
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """A value as Compose reads it, given what .env sets."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise ValueError(f"{name}: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and not value)):
            return arg
        return value or ""

    return VARIABLE.sub(one, value)


def variables(node: object) -> set[str]:
    if isinstance(node, dict):
        return {v for item in node.items() for part in item for v in variables(part)}
    if isinstance(node, list):
        return {v for item in node for v in variables(item)}
    if isinstance(node, str):
        return {m.group(1) for m in VARIABLE.finditer(node) if m.group(1)}
    return set()


def command(service: str) -> list[str]:
    value = SERVICES[service]["command"]
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def option(args: list[str], *names: str) -> str:
    for i, arg in enumerate(args):
        if arg in names:
            return args[i + 1]
    raise AssertionError(f"none of {names} in {args}")


def image_paths() -> dict[str, Path]:
    """Files the Dockerfile copies into the image: path in the image -> file in the repo."""
    copies = re.findall(r"^COPY\s+(\S+)\s+(\S+)\s*$", DOCKERFILE, re.MULTILINE)
    return {target: ROOT / source for source, target in copies if "/" in target}


def environment(service: str, dotenv: dict[str, str]) -> dict[str, str]:
    """The service's environment as Compose passes it, given what .env sets."""
    return {k: interpolate(str(v), dotenv) for k, v in SERVICES[service]["environment"].items()}


def image_environment() -> dict[str, str]:
    """The variables the Dockerfile's ENV sets in the image."""
    joined = DOCKERFILE.replace("\\\n", " ")
    pairs = [p for line in re.findall(r"^ENV\s+(.+)$", joined, re.MULTILINE) for p in line.split()]
    return dict(pair.split("=", 1) for pair in pairs)
