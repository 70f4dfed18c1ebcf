"""The tool-runner: pulls tool calls from `SLUICE_TOOLS`, runs them under a deadline and an output limit, and
publishes `tool.started` / `tool.completed` into the task's log.

    settings.py   the environment, read once          execution.py  one call under its limits (no NATS)
    handler.py    one message → events + ack decision  worker.py     the consumer loop, concurrency, shutdown
    metrics.py    Prometheus                           main.py       `sluice tool-runner`
    tools/        the tools themselves
"""
