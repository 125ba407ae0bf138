//! The connector types this binary knows, registered explicitly.

use tollgate_core::Registry;

/// Every connector type, by name.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    tollgate_mock::register(&mut registry);
    tollgate_openai::register(&mut registry);
    tollgate_nvidia::register(&mut registry);
    tollgate_openrouter::register(&mut registry);
    tollgate_anthropic::register(&mut registry);
    registry
}
