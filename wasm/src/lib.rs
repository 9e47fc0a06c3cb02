//! hvq wasm bindings (in progress).
