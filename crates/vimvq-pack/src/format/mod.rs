//! Writing `.vimvq` files. The in-memory model ([`vimvq_rt::format::PackedModel`]) and its
//! serialisation ([`vimvq_rt::format::to_bytes`]) live with the reader in `vimvq_rt::format`.

pub mod writer;
