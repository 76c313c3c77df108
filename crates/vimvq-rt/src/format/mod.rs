//! The packed `.vimvq` file format: on-disk records and the validating reader.
//! Specified in `docs/FORMAT.md`.

mod role;

pub use role::Role;
