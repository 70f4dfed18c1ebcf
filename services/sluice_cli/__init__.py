"""The `sluice` command: the launcher that starts each service by module name, `sluice up`, and the client commands.

It sits above the core and the services: nothing in `shared/sluice` or in a service imports it.
"""
