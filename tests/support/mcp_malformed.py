"""A stdio "MCP server" that answers `initialize` properly and then a malformed `tools/list` (tools not a list):
the client must log it and keep the rest of the tool-runner working. Written by hand on purpose: the SDK's server
side cannot send a malformed answer."""

from __future__ import annotations

import json
import sys


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request:
            continue  # a notification
        if request["method"] == "initialize":
            result = {
                "protocolVersion": request["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "malformed", "version": "0"},
            }
        else:
            result = {"tools": "this is not a list of tools"}
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
