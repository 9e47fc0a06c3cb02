//! hvq trainer (in progress).
