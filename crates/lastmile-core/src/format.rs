//! The versioned model file format (see docs/model-format.md).
