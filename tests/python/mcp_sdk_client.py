"""Drives a running engramd with the official MCP Python SDK (`mcp` on PyPI), over both
transports: Streamable HTTP at URL/mcp, and stdio through `engramctl mcp`.

Usage: mcp_sdk_client.py URL API_KEY LIMITED_KEY ENGRAMCTL

API_KEY may use every namespace; LIMITED_KEY only namespace "team-a". The daemon must embed
with the local model, so recall can find a memory by meaning. Prints one line per check and
exits non-zero on the first failure (the Rust test `mcp_python_sdk` runs this).
"""

import asyncio
import json
import sys

import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

EXPECTED_TOOLS = {
    "remember",
    "recall",
    "get_memory",
    "memory_history",
    "update_memory",
    "forget",
    "list_memories",
    "memory_status",
}


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def structured(result):
    """A tool result's JSON: the structured content, else the text block."""
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def invalid_params(session, tool, args, field):
    try:
        await session.call_tool(tool, args)
    except MCPError as e:
        check(e.error.code == -32602, f"{tool} with bad {field}: invalid params ({e.error.code})")
        check(field in e.error.message, f"{tool}: the error names {field}: {e.error.message}")
        return
    raise AssertionError(f"{tool} accepted a bad {field}")


async def scenario(session, label, namespace):
    init = await session.initialize()
    check(init.server_info.name == "engram", f"[{label}] initialize: server is engram")
    tools = await session.list_tools()
    names = {t.name for t in tools.tools}
    check(names == EXPECTED_TOOLS, f"[{label}] list_tools: {sorted(names)}")
    remember = next(t for t in tools.tools if t.name == "remember")
    check(
        "content" in remember.input_schema["properties"]
        and "content" in remember.input_schema.get("required", []),
        f"[{label}] remember's schema requires content",
    )
    resources = await session.list_resources()
    check(
        any(str(r.uri) == "engram://namespaces" for r in resources.resources),
        f"[{label}] list_resources has engram://namespaces",
    )
    templates = await session.list_resource_templates()
    check(
        any(t.uri_template == "engram://memories/{id}" for t in templates.resource_templates),
        f"[{label}] a template for single memories",
    )

    content = f"[{label}] Mel's sister Caroline is allergic to peanuts and carries an epipen."
    first = structured(
        await session.call_tool(
            "remember",
            {"content": content, "namespace": namespace, "importance": 0.9, "tags": ["health"], "ttl": "30d"},
        )
    )
    check(first["duplicate"] is False and first["id"], f"[{label}] remember stores a memory")
    check(first["expires_at"] is not None, f"[{label}] ttl sets an expiry")
    again = structured(await session.call_tool("remember", {"content": content, "namespace": namespace}))
    check(
        again["duplicate"] is True and again["id"] == first["id"],
        f"[{label}] a duplicate remember returns the existing id",
    )
    for i, text in enumerate(
        [
            "The quarterly budget review moved to Thursday afternoon.",
            "Melanie painted a lake at sunrise last summer.",
            "The car's winter tyres are stored in the garage loft.",
        ]
    ):
        await session.call_tool("remember", {"content": f"[{label}] {text}", "namespace": namespace})

    recall = None
    for _ in range(100):
        recall = structured(
            await session.call_tool(
                "recall",
                {"query": "food allergy of a family member", "namespace": namespace, "mode": "semantic"},
            )
        )
        if recall["memories"] and recall["memories"][0]["id"] == first["id"]:
            break
        await asyncio.sleep(0.1)  # the embedder works in the background
    check(recall["memories"][0]["id"] == first["id"], f"[{label}] recall finds the memory by meaning")
    check(
        set(recall["memories"][0]) >= {"id", "content", "score", "created_at", "tags", "tier"},
        f"[{label}] recall results are compact: {sorted(recall['memories'][0])}",
    )

    got = structured(await session.call_tool("get_memory", {"id": first["id"]}))
    check(got["content"] == content, f"[{label}] get_memory")
    updated = structured(
        await session.call_tool("update_memory", {"id": first["id"], "importance": 0.3, "expires_at": None})
    )
    check(
        updated["version"] == 2 and updated["expires_at"] is None and abs(updated["importance_score"] - 0.3) < 1e-6,
        f"[{label}] update_memory changes only what it names",
    )
    page = structured(await session.call_tool("list_memories", {"namespace": namespace, "limit": 2}))
    check(len(page["memories"]) == 2 and page["next_cursor"], f"[{label}] list_memories pages")
    rest = structured(
        await session.call_tool("list_memories", {"namespace": namespace, "cursor": page["next_cursor"]})
    )
    check(len(rest["memories"]) == 2 and rest["next_cursor"] is None, f"[{label}] the cursor gives the rest")
    status = structured(await session.call_tool("memory_status", {}))
    check(status["status"] == "healthy" and "tiers" in status, f"[{label}] memory_status")

    memory = await session.read_resource(f"engram://memories/{first['id']}")
    check(json.loads(memory.contents[0].text)["id"] == first["id"], f"[{label}] read a memory resource")
    namespaces = json.loads((await session.read_resource("engram://namespaces")).contents[0].text)
    check(namespace in namespaces["namespaces"], f"[{label}] the namespaces resource lists {namespace}")

    await invalid_params(session, "remember", {"content": "x", "namespace": namespace, "importance": 7}, "importance")
    await invalid_params(session, "remember", {"namespace": namespace}, "content")
    await invalid_params(session, "recall", {"query": "x", "limit": 500}, "limit")
    await invalid_params(session, "recall", {"query": "x", "mode": "telepathy"}, "mode")
    await invalid_params(session, "get_memory", {"id": "not-a-uuid"}, "id")
    missing = await session.call_tool("get_memory", {"id": "0190f0f0-0000-7000-8000-000000000000"})
    check(missing.is_error, f"[{label}] a missing memory is a tool error")
    check(structured(missing)["error"]["code"] == "MEMORY_NOT_FOUND", f"[{label}] with the REST code")

    forgot = structured(await session.call_tool("forget", {"id": first["id"]}))
    check(forgot["purged"] is False, f"[{label}] forget is soft by default")
    gone = structured(await session.call_tool("get_memory", {"id": first["id"]}))
    check(gone["status"] == "deleted", f"[{label}] a forgotten memory reads as deleted")
    after = structured(
        await session.call_tool("recall", {"query": "food allergy of a family member", "namespace": namespace})
    )
    check(all(m["id"] != first["id"] for m in after["memories"]), f"[{label}] recall no longer returns it")


async def over_http(url, key, limited_key):
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await scenario(session, "http", "sdk-http")

    # No key: the HTTP layer refuses before MCP runs.
    async with httpx2.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"{url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        check(r.status_code == 401, f"[http] no key: {r.status_code}")

    # A key limited to team-a works there and is refused elsewhere.
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {limited_key}"}, timeout=60) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                ok = await session.call_tool("remember", {"content": "team-a standup at 9", "namespace": "team-a"})
                check(not ok.is_error, "[http] a limited key writes in its namespace")
                refused = await session.call_tool("remember", {"content": "sneaky", "namespace": "team-b"})
                check(
                    refused.is_error and structured(refused)["error"]["code"] == "FORBIDDEN",
                    "[http] a limited key is refused outside its namespace",
                )
                listed = json.loads((await session.read_resource("engram://namespaces")).contents[0].text)
                check(listed["namespaces"] == ["team-a"], f"[http] it sees only its namespaces: {listed}")


async def over_stdio(url, key, engramctl):
    params = StdioServerParameters(
        command=engramctl,
        args=["mcp", "--url", url, "--namespace", "sdk-stdio"],
        env={"ENGRAM_API_KEY": key},
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await scenario(session, "stdio", "sdk-stdio")
            # --namespace fills in calls that name none.
            stored = structured(await session.call_tool("remember", {"content": "stdio default namespace"}))
            got = structured(await session.call_tool("get_memory", {"id": stored["id"]}))
            check(got["namespace"] == "sdk-stdio", f"[stdio] --namespace is the default: {got['namespace']}")


async def main():
    url, key, limited_key, engramctl = sys.argv[1:5]
    await over_http(url, key, limited_key)
    await over_stdio(url, key, engramctl)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
