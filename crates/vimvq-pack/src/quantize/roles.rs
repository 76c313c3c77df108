//! Which layers of a block are quantized, and which Δ biases the block objective trains.

use vimvq_rt::format::Role;

/// The six linear layers quantized in every block, in calibration order.
pub const QUANT_ROLES: [Role; 6] = [
    Role::InProj,
    Role::XProj,
    Role::XProjBack,
    Role::DtProjW,
    Role::DtProjWBack,
    Role::OutProj,
];

/// Δ projections and their biases (the biases the block objective trains).
pub(crate) const BIAS_ROLES: [(Role, Role); 2] = [
    (Role::DtProjW, Role::DtProjB),
    (Role::DtProjWBack, Role::DtProjBBack),
];
