//! [`Method`]: the quantization methods, from `--method` down to the one place
//! ([`quantize`](super::quantize)) that dispatches on them.

use std::str::FromStr;

use super::error::QuantError;

/// Quantization method (`--method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// ViM-VQ: FCCO with hull update and IVQ (the default).
    VimVq,
    /// Per-row uniform scalar round-to-nearest at the nominal bit width.
    Rtn,
    /// k-means codebook + nearest assignment, no calibration ("basic VQ").
    KMeans,
    /// VQ4DiT: fixed hull of 2, no replacement, argmax at the end; same objective and budget.
    Vq4dit,
    /// GPTVQ-style Hessian-weighted assignment with error feedback, then codebook fine-tuning.
    Gptvq,
}

impl Method {
    /// Every method, as the results table lists them.
    pub const ALL: [Method; 5] = [
        Method::VimVq,
        Method::Rtn,
        Method::KMeans,
        Method::Vq4dit,
        Method::Gptvq,
    ];

    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Method::VimVq => "vimvq",
            Method::Rtn => "rtn",
            Method::KMeans => "kmeans",
            Method::Vq4dit => "vq4dit",
            Method::Gptvq => "gptvq",
        }
    }

    /// One line for `--help`.
    pub fn summary(self) -> &'static str {
        match self {
            Method::VimVq => "ViM-VQ: FCCO + hull update + incremental confirmation",
            Method::Rtn => {
                "Per-row uniform round-to-nearest scalar quantization (stored dequantized as f32)"
            }
            Method::KMeans => "k-means codebook + nearest assignment, no calibration",
            Method::Vq4dit => "VQ4DiT: fixed hull of 2, no replacement, argmax at the end",
            Method::Gptvq => "Hessian-weighted assignment with GPTQ-style error feedback",
        }
    }

    /// Whether the method stores codebooks and indices (`false`: RTN, stored as f32).
    pub fn is_vq(self) -> bool {
        match self {
            Method::VimVq | Method::KMeans | Method::Vq4dit | Method::Gptvq => true,
            Method::Rtn => false,
        }
    }
}

impl FromStr for Method {
    type Err = QuantError;

    /// Parses [`Method::name`] (case-insensitive).
    fn from_str(s: &str) -> Result<Self, QuantError> {
        let l = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|m| m.name() == l)
            .ok_or_else(|| QuantError::Options(format!("unknown method {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_are_distinct() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(m.name().to_uppercase().parse::<Method>().unwrap(), m);
        }
        let mut names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Method::ALL.len());
        assert!("vim-vq".parse::<Method>().is_err());
        assert_eq!(
            Method::ALL
                .iter()
                .filter(|m| !m.is_vq())
                .collect::<Vec<_>>(),
            [&Method::Rtn]
        );
    }
}
