"""Judges: who decides a comparison (offline, plug-in, Anthropic, OpenAI) behind one protocol."""
