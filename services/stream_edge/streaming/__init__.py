"""The streaming engine of stream-edge: replay + live fan-out of task events over SSE and NDJSON (CONTRACT §5).

    from stream_edge.streaming import StreamHub, StreamSettings
    hub = StreamHub(bus, StreamSettings(heartbeat_s=15))
    await hub.start()
    response = await hub.open(task_id, after=0, fmt="sse")   # in a route, after the 404 check
    await hub.stop()

Modules: `frames` (the bytes), `link` (NATS), `reader` (catch-up by direct get), `feed` (one live consumer per
task, shared), `client` (one client's stream and its ASGI response), `hub` (the registry and lifecycle).
"""

from stream_edge.streaming.hub import StreamHub
from stream_edge.streaming.settings import StreamSettings

__all__ = ["StreamHub", "StreamSettings"]
