"""A running Dagster webserver, as the tests talk to it: its GraphQL API, on loopback."""

import json
import socket
import time
import urllib.request

STATS_QUERY = """{ assetNodes { assetKey { path }
    partitionStats { numMaterialized numPartitions numFailed } } }"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


def partition_stats(port: int) -> dict[str, dict]:
    nodes = graphql(port, STATS_QUERY)["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n["partitionStats"] for n in nodes}


def location(port: int) -> str:
    query = (
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { location { name } } } } }"
    )
    [repository] = graphql(port, query)["repositoriesOrError"]["nodes"]
    return str(repository["location"]["name"])


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except OSError as error:  # the webserver is still starting
            last_error = error
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error})")
