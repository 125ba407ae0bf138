//! tollgate-openrouter: the OpenRouter connector (type `openrouter`). Not built yet.

use tollgate_core::Registry;

/// Registers the `openrouter` type (nothing yet).
pub fn register(_registry: &mut Registry) {}
