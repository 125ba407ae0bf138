//! A fake Anthropic Messages upstream (being built on its own branch).
