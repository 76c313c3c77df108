//! A validated, zero-copy view of a `.vimvq` model.

use core::iter::FusedIterator;

use crate::config::{Preprocess, VimConfig};
use crate::format::validate;
pub use crate::format::IndexLayout;
#[cfg(feature = "std")]
use crate::format::ModelFile;
use crate::format::{
    FileHeader, FormatError, Role, TensorName, TensorRecord, DTYPE_F16, KIND_VQ, TABLE_OFFSET,
};
pub use crate::kernels::{Codebook, Indices, VqMatrix, Weight};

/// Options of [`Model::parse_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Check the CRC-32 of the whole data section (reads every byte once; on by default).
    /// Structure, bounds, shapes and VQ index ranges are always checked, and so is the
    /// metadata CRC.
    pub verify_data_checksum: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            verify_data_checksum: true,
        }
    }
}

/// A parsed model: borrows the file bytes, holds no allocation.
///
/// Every accessor is cheap: tensor records are decoded from the (already validated) table on
/// demand.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    bytes: &'a [u8],
    header: FileHeader,
    config: VimConfig,
    preprocess: Preprocess,
    labels: &'a str,
}

impl core::fmt::Debug for Model<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Not the bytes: a model is megabytes.
        f.debug_struct("Model")
            .field("version", &self.version())
            .field("file_bytes", &self.bytes.len())
            .field("required_features", &self.header.required_features)
            .field("config", &self.config)
            .field("preprocess", &self.preprocess)
            .field("labels", &self.labels().count())
            .finish()
    }
}

/// Storage of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// Dense f32.
    Dense,
    /// Vector-quantized.
    Vq,
}

/// Element type of a VQ codebook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodebookDtype {
    /// f32 codewords.
    F32,
    /// f16 codewords.
    F16,
}

/// Description of one stored tensor (see [`Model::tensors`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// What the tensor is.
    pub role: Role,
    /// Block index (0 for globals).
    pub layer: usize,
    /// Logical rows.
    pub rows: usize,
    /// Logical columns.
    pub cols: usize,
    /// Storage.
    pub kind: TensorKind,
    /// Codewords (0 when dense).
    pub k: usize,
    /// Codeword length (0 when dense).
    pub d: usize,
    /// Codebook element type (`F32` when dense).
    pub codebook_dtype: CodebookDtype,
    /// Index width in bits (0 when dense).
    pub index_bits: u8,
    /// Stored bytes: values, or indices + codebook.
    pub bytes: u64,
}

impl TensorInfo {
    /// The PyTorch state-dict name; `Display` it, e.g. `layers.3.mixer.x_proj.weight`.
    pub fn name(&self) -> TensorName {
        TensorName {
            role: self.role,
            layer: self.layer,
        }
    }
    /// Logical parameter count, `rows · cols`.
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }
}

impl<'a> Model<'a> {
    /// Validates `bytes` as a `.vimvq` file and returns a view of it; see [`ParseOptions`] for
    /// the default checks. `bytes` must start on a 4-byte boundary (64 recommended): use
    /// [`crate::format::ModelFile`] or [`crate::format::AlignedBytes`] to load one.
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>, FormatError> {
        Self::parse_with(bytes, ParseOptions::default())
    }

    /// [`Model::parse`] with explicit options.
    pub fn parse_with(bytes: &'a [u8], opts: ParseOptions) -> Result<Model<'a>, FormatError> {
        let v = validate::parse(bytes, opts.verify_data_checksum)?;
        Ok(Model {
            bytes,
            header: v.header,
            config: v.config,
            preprocess: v.preprocess,
            labels: v.labels,
        })
    }

    /// Model dimensions.
    pub fn config(&self) -> &VimConfig {
        &self.config
    }
    /// The eval transform the model expects.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }
    /// Format version `(major, minor)` of the file.
    pub fn version(&self) -> (u16, u16) {
        (self.header.version_major, self.header.version_minor)
    }
    /// Required-feature bits of the file (see [`crate::format::FEATURE_VQ`]).
    pub fn required_features(&self) -> u32 {
        self.header.required_features
    }
    /// Class names in class order; empty if the file has none.
    pub fn labels(&self) -> Labels<'a> {
        Labels { rest: self.labels }
    }
    /// Name of class `i`, if the file has labels.
    pub fn label(&self, i: usize) -> Option<&'a str> {
        self.labels().nth(i)
    }
    /// Every tensor, in canonical table order.
    pub fn tensors(&self) -> Tensors<'a> {
        Tensors {
            model: *self,
            next: 0,
            end: self.header.tensor_count as usize,
        }
    }
    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> usize {
        self.bytes.len()
    }
    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Scratch bytes [`crate::forward::infer`] needs for this model (see
    /// [`VimConfig::scratch_bytes`]).
    pub fn scratch_bytes(&self) -> usize {
        self.config.scratch_bytes()
    }

    fn record(&self, index: usize) -> Option<TensorRecord> {
        if index >= self.header.tensor_count as usize {
            return None;
        }
        let at = TABLE_OFFSET + index * TensorRecord::SIZE;
        let b = self.bytes.get(at..at + TensorRecord::SIZE)?;
        Some(TensorRecord::decode(b.try_into().ok()?))
    }

    fn range(&self, offset: u64, len: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.bytes.get(start..end)
    }

    /// The stored weight of `(role, layer)` (layer 0 for globals); `None` if there is no such
    /// tensor (layer ≥ depth).
    pub fn weight(&self, role: Role, layer: usize) -> Option<Weight<'a>> {
        if !role.in_model(layer, self.config.depth) {
            return None;
        }
        let rec = self.record(role.table_index(layer))?;
        let data = self.range(rec.data_offset, rec.data_bytes)?;
        if rec.kind != KIND_VQ {
            return Some(Weight::Dense(bytemuck::try_cast_slice(data).ok()?));
        }
        let cb = self.range(rec.codebook_offset, rec.codebook_bytes)?;
        let codebook = if rec.codebook_dtype == DTYPE_F16 {
            Codebook::F16(bytemuck::try_cast_slice(cb).ok()?)
        } else {
            Codebook::F32(bytemuck::try_cast_slice(cb).ok()?)
        };
        let indices = if rec.index_bits == 8 {
            Indices::U8(data)
        } else {
            Indices::U16(bytemuck::try_cast_slice(data).ok()?)
        };
        Some(Weight::Vq(VqMatrix {
            rows: rec.rows as usize,
            cols: rec.cols as usize,
            k: rec.k as usize,
            d: rec.d as usize,
            codebook,
            indices,
            layout: IndexLayout::from_id(rec.index_layout)?,
        }))
    }

    /// The f32 values of a dense tensor (`None` if it is VQ or does not exist).
    pub fn dense(&self, role: Role, layer: usize) -> Option<&'a [f32]> {
        match self.weight(role, layer)? {
            Weight::Dense(v) => Some(v),
            Weight::Vq(_) => None,
        }
    }

    fn info(&self, index: usize) -> Option<TensorInfo> {
        let rec = self.record(index)?;
        let (role, layer) = Role::table_entry(index);
        let vq = rec.kind == KIND_VQ;
        Some(TensorInfo {
            role,
            layer,
            rows: rec.rows as usize,
            cols: rec.cols as usize,
            kind: if vq {
                TensorKind::Vq
            } else {
                TensorKind::Dense
            },
            k: rec.k as usize,
            d: rec.d as usize,
            codebook_dtype: if rec.codebook_dtype == DTYPE_F16 {
                CodebookDtype::F16
            } else {
                CodebookDtype::F32
            },
            index_bits: rec.index_bits,
            bytes: rec.data_bytes + rec.codebook_bytes,
        })
    }
}

#[cfg(feature = "std")]
impl ModelFile {
    /// Validates the file and returns the model ([`Model::parse`]).
    pub fn model(&self) -> Result<Model<'_>, FormatError> {
        Model::parse(self.bytes())
    }

    /// [`ModelFile::model`] with explicit options.
    pub fn model_with(&self, opts: ParseOptions) -> Result<Model<'_>, FormatError> {
        Model::parse_with(self.bytes(), opts)
    }
}

/// Iterator over class names, see [`Model::labels`].
#[derive(Clone, Debug)]
pub struct Labels<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        // Validated: empty, or newline-terminated lines.
        let nl = self.rest.find('\n')?;
        let (line, rest) = self.rest.split_at(nl);
        self.rest = &rest[1..];
        Some(line)
    }
}

impl FusedIterator for Labels<'_> {}

/// Iterator over tensor descriptions, see [`Model::tensors`].
#[derive(Clone, Debug)]
pub struct Tensors<'a> {
    model: Model<'a>,
    next: usize,
    end: usize,
}

impl Iterator for Tensors<'_> {
    type Item = TensorInfo;
    fn next(&mut self) -> Option<TensorInfo> {
        if self.next >= self.end {
            return None;
        }
        self.next += 1;
        self.model.info(self.next - 1)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Tensors<'_> {}
impl FusedIterator for Tensors<'_> {}
