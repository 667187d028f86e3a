"""Engines turn a planned service into a command line (argv + environment). Pure functions, no I/O."""
