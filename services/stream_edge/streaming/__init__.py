"""The streaming engine of stream-edge: replay + live fan-out of task events (CONTRACT §5). See ARCHITECTURE.md.

from stream_edge.streaming import StreamHub, StreamRequest, StreamSettings, encodings
hub = StreamHub(bus, StreamSettings(heartbeat_s=15))
await hub.start()
response = await hub.open(StreamRequest(task_id, encodings.SSE, after=0))   # in a route, after its checks
await hub.stop()
"""

from stream_edge.streaming import encodings
from stream_edge.streaming.encodings import Encoding
from stream_edge.streaming.hub import StreamHub
from stream_edge.streaming.request import StreamRequest
from stream_edge.streaming.settings import StreamSettings

__all__ = ["Encoding", "StreamHub", "StreamRequest", "StreamSettings", "encodings"]
