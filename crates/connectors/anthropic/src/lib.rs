//! tollgate-anthropic (being built on its own branch).
