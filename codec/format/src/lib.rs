//! hvq-format (in progress).
