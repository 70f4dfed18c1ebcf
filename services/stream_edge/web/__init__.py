"""The web client of the edge: one page, no build step (`router.router` serves it)."""
