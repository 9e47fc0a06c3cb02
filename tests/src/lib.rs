//! Cross-crate tests live in `tests/tests/`: the libtorch conformance vectors of `tests/vectors/`
//! (written by `hvq-train export-vectors`) checked end to end through the public `hvq_codec::Codec`
//! API, from u8 pixels to `.hvq` bytes and back.
