//! hvq codec runtime (in progress).
