//! The priors of the `context-3level` test vector (64 entries, 3 levels, a context model of 8 neighbours per
//! entry): the fuzz targets that reach coding 2 use them, so a run seeded with that vector starts from a
//! valid context-coded file.

const VECTOR: &str = include_str!("../../../codec/format/tests/vectors/context-3level.json");

/// The string value of `"key": "..."` in the vector's JSON (its metadata strings hold no quotes or escapes).
fn field(key: &str) -> &'static str {
    let start = VECTOR.find(&format!("\"{key}\": \"")).expect("key in the vector") + key.len() + 5;
    let len = VECTOR[start..].find('"').expect("closing quote");
    &VECTOR[start..start + len]
}

pub fn context_priors() -> hvq_format::Priors {
    let priors = hvq_format::Priors::from_metadata_string(field("priors")).expect("vector priors");
    let context = hvq_format::ContextModel::from_metadata_string(field("context")).expect("vector context");
    priors.with_context(context).expect("vector context fits its priors")
}
