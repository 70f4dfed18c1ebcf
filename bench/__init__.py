"""Sluice benchmarks: `make bench` runs `python -m bench` (every registered benchmark); `python -m bench edge`
runs one. Figures are printed; nothing here is a test."""
