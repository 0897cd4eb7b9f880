//! The race catalogue: one file per race, each with its variants.
