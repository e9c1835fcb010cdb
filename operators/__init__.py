"""Bytewax operators: thin logic classes translating events into calls to cj/ and judges/."""
