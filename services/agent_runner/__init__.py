"""The agent-runner: pulls work from SLUICE_WORK, runs the agent loop against an OpenAI-compatible model, and
publishes every step into the task's event log.

    main.py          `sluice agent-runner`: settings, agents file, model client, metrics, worker
    worker.py        the pull loop: bounded concurrency, shutdown with a grace period
    handler.py       one delivery of a work message: checks, CAS, cancel, heartbeats, ack/nak/term
    loop.py          the agent loop (no NATS, no HTTP): steps, retries, tool calls, crews, budgets, pauses
    conversation.py  the task's state and OpenAI message list, rebuilt from its log (pure)
    model.py         the openai SDK adapter (the one place openai errors are translated)
    sink.py          events and tool calls over NATS
    coalesce.py      llm.delta coalescing
    budget.py        budget arithmetic (pure)
    agents.py        agents.toml: agents and crews
    ports.py         the interfaces between the loop and the rest
    settings.py      the environment, read once
    metrics.py       Prometheus metrics
"""
