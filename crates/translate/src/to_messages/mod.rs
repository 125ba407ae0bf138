//! Chat Completions → Anthropic Messages, for a backend that speaks only Messages (being built on its own branch).
