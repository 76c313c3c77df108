//! The fixed tensor schema of a Vim classifier: which tensors exist, their names and shapes.

use crate::config::VimConfig;

/// What a tensor is in the model. Stored as a `u16` in each tensor record.
///
/// The discriminants are part of the file format: never renumber, only append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Role {
    // Global tensors (layer index 0).
    /// `patch_embed.proj.weight`, (D, C·p·p).
    PatchWeight = 0,
    /// `patch_embed.proj.bias`, (D).
    PatchBias = 1,
    /// `cls_token`, (D).
    ClsToken = 2,
    /// `pos_embed`, (L, D).
    PosEmbed = 3,
    /// `norm_f.weight`, (D).
    NormF = 4,
    /// `head.weight`, (classes, D).
    HeadWeight = 5,
    /// `head.bias`, (classes).
    HeadBias = 6,
    // Per-layer tensors (`layers.{i}.`).
    /// `norm.weight`, (D).
    Norm = 16,
    /// `mixer.in_proj.weight`, (2E, D).
    InProj = 17,
    /// `mixer.conv1d.weight`, (E, K).
    ConvW = 18,
    /// `mixer.conv1d.bias`, (E).
    ConvB = 19,
    /// `mixer.x_proj.weight`, (R+2N, E).
    XProj = 20,
    /// `mixer.dt_proj.weight`, (E, R).
    DtProjW = 21,
    /// `mixer.dt_proj.bias`, (E).
    DtProjB = 22,
    /// `mixer.A_log`, (E, N).
    ALog = 23,
    /// `mixer.D`, (E).
    DSkip = 24,
    /// `mixer.conv1d_b.weight`, (E, K).
    ConvWBack = 25,
    /// `mixer.conv1d_b.bias`, (E).
    ConvBBack = 26,
    /// `mixer.x_proj_b.weight`, (R+2N, E).
    XProjBack = 27,
    /// `mixer.dt_proj_b.weight`, (E, R).
    DtProjWBack = 28,
    /// `mixer.dt_proj_b.bias`, (E).
    DtProjBBack = 29,
    /// `mixer.A_b_log`, (E, N).
    ALogBack = 30,
    /// `mixer.D_b`, (E).
    DSkipBack = 31,
    /// `mixer.out_proj.weight`, (D, E).
    OutProj = 32,
}

impl Role {
    /// Global roles in canonical file order.
    pub const GLOBAL: [Role; 7] = [
        Role::PatchWeight,
        Role::PatchBias,
        Role::ClsToken,
        Role::PosEmbed,
        Role::NormF,
        Role::HeadWeight,
        Role::HeadBias,
    ];
    /// Per-layer roles in canonical file order.
    pub const LAYER: [Role; 17] = [
        Role::Norm,
        Role::InProj,
        Role::ConvW,
        Role::ConvB,
        Role::XProj,
        Role::DtProjW,
        Role::DtProjB,
        Role::ALog,
        Role::DSkip,
        Role::ConvWBack,
        Role::ConvBBack,
        Role::XProjBack,
        Role::DtProjWBack,
        Role::DtProjBBack,
        Role::ALogBack,
        Role::DSkipBack,
        Role::OutProj,
    ];

    /// Decodes a stored role id.
    pub const fn from_u16(v: u16) -> Option<Role> {
        let all = Role::GLOBAL;
        let mut i = 0;
        while i < all.len() {
            if all[i] as u16 == v {
                return Some(all[i]);
            }
            i += 1;
        }
        let all = Role::LAYER;
        let mut i = 0;
        while i < all.len() {
            if all[i] as u16 == v {
                return Some(all[i]);
            }
            i += 1;
        }
        None
    }

    /// True for tensors that exist once per block.
    pub const fn is_per_layer(self) -> bool {
        self as u16 >= 16
    }

    /// True for the weight matrices of linear maps (the candidates for vector quantization).
    pub const fn is_linear(self) -> bool {
        matches!(
            self,
            Role::PatchWeight
                | Role::HeadWeight
                | Role::InProj
                | Role::XProj
                | Role::XProjBack
                | Role::DtProjW
                | Role::DtProjWBack
                | Role::OutProj
        )
    }

    /// PyTorch state-dict name: the full name for globals, the part after `layers.{i}.` otherwise.
    pub const fn torch_name(self) -> &'static str {
        match self {
            Role::PatchWeight => "patch_embed.proj.weight",
            Role::PatchBias => "patch_embed.proj.bias",
            Role::ClsToken => "cls_token",
            Role::PosEmbed => "pos_embed",
            Role::NormF => "norm_f.weight",
            Role::HeadWeight => "head.weight",
            Role::HeadBias => "head.bias",
            Role::Norm => "norm.weight",
            Role::InProj => "mixer.in_proj.weight",
            Role::ConvW => "mixer.conv1d.weight",
            Role::ConvB => "mixer.conv1d.bias",
            Role::XProj => "mixer.x_proj.weight",
            Role::DtProjW => "mixer.dt_proj.weight",
            Role::DtProjB => "mixer.dt_proj.bias",
            Role::ALog => "mixer.A_log",
            Role::DSkip => "mixer.D",
            Role::ConvWBack => "mixer.conv1d_b.weight",
            Role::ConvBBack => "mixer.conv1d_b.bias",
            Role::XProjBack => "mixer.x_proj_b.weight",
            Role::DtProjWBack => "mixer.dt_proj_b.weight",
            Role::DtProjBBack => "mixer.dt_proj_b.bias",
            Role::ALogBack => "mixer.A_b_log",
            Role::DSkipBack => "mixer.D_b",
            Role::OutProj => "mixer.out_proj.weight",
        }
    }

    /// Parses a PyTorch state-dict name into `(role, layer)`; globals get layer 0.
    pub fn from_torch_name(name: &str) -> Option<(Role, usize)> {
        if let Some(rest) = name.strip_prefix("layers.") {
            let dot = rest.find('.')?;
            let layer: usize = rest[..dot].parse().ok()?;
            if rest[..dot].len() > 1 && rest.starts_with('0') {
                return None;
            }
            let suffix = &rest[dot + 1..];
            Role::LAYER
                .iter()
                .find(|r| r.torch_name() == suffix)
                .map(|r| (*r, layer))
        } else {
            Role::GLOBAL
                .iter()
                .find(|r| r.torch_name() == name)
                .map(|r| (*r, 0))
        }
    }

    /// Logical 2-D shape `(rows, cols)` of the tensor in the packed file (vectors are `(1, n)`).
    pub const fn shape(self, c: &VimConfig) -> (usize, usize) {
        let d = c.embed_dim;
        let e = c.d_inner;
        match self {
            Role::PatchWeight => (d, c.patch_len()),
            Role::PosEmbed => (c.seq_len(), d),
            Role::HeadWeight => (c.num_classes, d),
            Role::HeadBias => (1, c.num_classes),
            Role::PatchBias | Role::ClsToken | Role::NormF | Role::Norm => (1, d),
            Role::InProj => (2 * e, d),
            Role::ConvW | Role::ConvWBack => (e, c.d_conv),
            Role::XProj | Role::XProjBack => (c.x_proj_rows(), e),
            Role::DtProjW | Role::DtProjWBack => (e, c.dt_rank),
            Role::ALog | Role::ALogBack => (e, c.d_state),
            Role::ConvB
            | Role::ConvBBack
            | Role::DtProjB
            | Role::DtProjBBack
            | Role::DSkip
            | Role::DSkipBack => (1, e),
            Role::OutProj => (d, e),
        }
    }

    /// Position of `(role, layer)` in the canonical tensor table of a model with `depth` blocks.
    pub const fn table_index(self, layer: usize) -> usize {
        let mut i = 0;
        if self.is_per_layer() {
            while i < Role::LAYER.len() {
                if Role::LAYER[i] as u16 == self as u16 {
                    return Role::GLOBAL.len() + layer * Role::LAYER.len() + i;
                }
                i += 1;
            }
        } else {
            while i < Role::GLOBAL.len() {
                if Role::GLOBAL[i] as u16 == self as u16 {
                    return i;
                }
                i += 1;
            }
        }
        usize::MAX
    }

    /// Number of tensors in a model with `depth` blocks.
    pub const fn table_len(depth: usize) -> usize {
        Role::GLOBAL.len() + depth * Role::LAYER.len()
    }

    /// The `(role, layer)` at position `i` of the canonical tensor table (the inverse of
    /// [`Role::table_index`]).
    pub const fn table_entry(i: usize) -> (Role, usize) {
        let g = Role::GLOBAL.len();
        if i < g {
            (Role::GLOBAL[i], 0)
        } else {
            let j = i - g;
            (Role::LAYER[j % Role::LAYER.len()], j / Role::LAYER.len())
        }
    }

    /// True if a model with `depth` blocks has the tensor `(self, layer)`: per-layer roles for
    /// `layer < depth`, globals for layer 0 only.
    pub const fn in_model(self, layer: usize, depth: usize) -> bool {
        if self.is_per_layer() {
            layer < depth
        } else {
            layer == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Role::GLOBAL {
            assert_eq!(Role::from_torch_name(r.torch_name()), Some((r, 0)));
            assert_eq!(Role::from_u16(r as u16), Some(r));
        }
        for r in Role::LAYER {
            let name = std::format!("layers.13.{}", r.torch_name());
            assert_eq!(Role::from_torch_name(&name), Some((r, 13)));
            assert_eq!(Role::from_u16(r as u16), Some(r));
        }
        assert_eq!(Role::from_torch_name("layers.01.norm.weight"), None);
        assert_eq!(Role::from_torch_name("layers.x.norm.weight"), None);
        assert_eq!(Role::from_u16(7), None);
    }

    #[test]
    fn table_is_dense() {
        let depth = 3;
        let mut seen = [false; 7 + 3 * 17];
        for r in Role::GLOBAL {
            seen[r.table_index(0)] = true;
        }
        for l in 0..depth {
            for r in Role::LAYER {
                seen[r.table_index(l)] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
        for i in 0..seen.len() {
            let (r, l) = Role::table_entry(i);
            assert_eq!(r.table_index(l), i);
            assert!(r.in_model(l, depth));
        }
        assert!(!Role::Norm.in_model(depth, depth) && !Role::HeadBias.in_model(1, depth));
        assert_eq!(Role::table_len(depth), seen.len());
    }
}
