"""Dataflows (embedded, assessment, judge) and the `cjflow` command line: wiring only."""
