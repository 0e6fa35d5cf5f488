"""The real `trove-mcp` server over stdio, pointed at Warren (spec §14). The file tools are
covered here; `trove_exec` arrives with exec."""

import asyncio
import base64
import os
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def call_tools(warren, key, ns, calls):
    async def go():
        venv_bin = Path(os.sys.executable).parent
        params = StdioServerParameters(
            command=str(venv_bin / "trove-mcp"),
            env={
                "TROVE_API_KEY": key,
                "TROVE_NAMESPACE": ns,
                "TROVE_BASE_URL": warren.base_url,
                "PATH": os.environ.get("PATH", ""),
            },
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name for t in (await session.list_tools()).tools}
                out = []
                for name, args in calls:
                    result = await session.call_tool(name, args)
                    out.append("".join(c.text for c in result.content if hasattr(c, "text")))
                return tools, out

    return asyncio.run(asyncio.wait_for(go(), timeout=60))


def test_mcp_file_tools(warren, key, ns):
    png = bytes(range(256))
    tools, out = call_tools(
        warren,
        key,
        ns,
        [
            ("trove_bootstrap", {}),
            ("trove_write", {"path": "workspace/plan.md", "content": "step 1"}),
            ("trove_read", {"path": "workspace/plan.md"}),
            ("trove_put_base64", {"path": "workspace/img.png",
                                  "content_b64": base64.b64encode(png).decode()}),
            ("trove_read", {"path": "workspace/img.png"}),
            ("trove_read", {"path": "workspace/missing.md"}),
            ("trove_write", {"path": "../escape.md", "content": "x"}),
            ("trove_bootstrap", {}),
        ],
    )
    assert tools == {"trove_exec", "trove_read", "trove_write", "trove_put_base64", "trove_bootstrap"}
    boot_empty, wrote, read, put, read_bin, missing, escape, boot = out
    assert "files: 0 (empty)" in boot_empty
    assert wrote == "wrote workspace/plan.md (6 bytes)"
    assert read == "step 1"
    assert put == "wrote workspace/img.png (256 bytes)"
    assert read_bin.startswith("trove error (HTTP 415)")
    assert missing.startswith("trove error (HTTP 404)")
    assert escape.startswith("trove error (HTTP 400)")
    assert "workspace/plan.md" in boot and "workspace/img.png" in boot
