//! tollgate-nvidia: the NVIDIA NIM connector (type `nvidia`). Not built yet.

use tollgate_core::Registry;

/// Registers the `nvidia` type (nothing yet).
pub fn register(_registry: &mut Registry) {}
