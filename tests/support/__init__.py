"""Test infrastructure: real nats-server processes, services on real sockets, and waiting without sleeping."""
