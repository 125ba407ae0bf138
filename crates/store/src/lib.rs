//! tollgate-store (being built).
