//! hvq-cpu (in progress).
