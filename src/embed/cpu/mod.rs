//! The encoder on the CPU with kernels of our own (the `cpu` backend), for x86-64 with
//! AVX-512 or AVX2 + FMA and for aarch64 with NEON; candle's generic path serves every
//! other CPU and the GPU. Everything here is written once, generic over a
//! [`kernel::Kernel`]: an instruction set contributes only its micro-kernel module
//! (`avx512`, `avx2`, `neon`), and [`load`] picks the one asked for at run time.
//!
//! Why not candle's ops here: the probe texts are short and of mixed length. This path
//! packs the tokens of many texts into one matrix with no padding at all, runs each
//! weight matrix over it as one product, attends within each text reading the heads in
//! place, applies GELU, softmax and LayerNorm (with its residual) as single vectorised
//! passes, and computes only the `[CLS]` rows in the last layer. The math is that of
//! `super::bert` (SPEC §3), held to the same 1e-4 parity with PyTorch by the tests.

mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod kernel;
mod linear;
#[cfg(target_arch = "aarch64")]
mod neon;
mod vector;

use rayon::prelude::*;

use kernel::Kernel;
use linear::{AlignedBuffer, PackedLinear};

use super::tensors::NamedTensors;
use super::{EmbedError, Embeddings, Isa, TokenizedProbe};
use crate::checkpoint::{Activation, ModelConfig, Positions, PostNormNames};

/// A model loaded for the `cpu` backend, whatever its instruction set.
pub trait CpuEncoder: Send + Sync {
    fn isa(&self) -> Isa;
    fn hidden_size(&self) -> usize;
    fn num_labels(&self) -> Option<usize>;
    fn max_positions(&self) -> usize;
    /// Embeds the whole probe set, rows in probe order.
    fn embed(&self, probe: &TokenizedProbe) -> Result<Embeddings, EmbedError>;
}

/// Whether this build and CPU can run `isa`'s kernel.
pub fn supported(isa: Isa) -> bool {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::Avx512::detect().is_some(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::Avx2::detect().is_some(),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::Neon::detect().is_some(),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// `isa`'s tile product in GFLOP/s on one thread in L1 cache ([`kernel::rate_in_l1`]),
/// or `None` where this build and CPU cannot run it.
pub fn tile_rate_in_l1(isa: Isa, seconds: f64) -> Option<f64> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::Avx512::detect().map(|k| kernel::rate_in_l1(k, seconds)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::Avx2::detect().map(|k| kernel::rate_in_l1(k, seconds)),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::Neon::detect().map(|k| kernel::rate_in_l1(k, seconds)),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Reads a post-norm encoder for `isa`'s kernel (see [`CpuBert::load`]).
pub(crate) fn load(
    isa: Isa,
    config: &ModelConfig,
    names: &PostNormNames,
    tensors: &NamedTensors,
    vocabulary: &[u32],
) -> Result<Box<dyn CpuEncoder>, EmbedError> {
    fn with<K: Kernel>(
        config: &ModelConfig,
        names: &PostNormNames,
        tensors: &NamedTensors,
        vocabulary: &[u32],
    ) -> Result<Box<dyn CpuEncoder>, EmbedError> {
        let kernel = K::detect().ok_or_else(|| EmbedError::Unsupported(K::ISA.missing()))?;
        Ok(Box::new(CpuBert::load(
            kernel, config, names, tensors, vocabulary,
        )?))
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => with::<avx512::Avx512>(config, names, tensors, vocabulary),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => with::<avx2::Avx2>(config, names, tensors, vocabulary),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => with::<neon::Neon>(config, names, tensors, vocabulary),
        #[allow(unreachable_patterns)]
        other => Err(EmbedError::Unsupported(other.missing())),
    }
}

/// Tokens per forward pass: large enough that every product keeps all cores busy,
/// small enough that a pass's activations stay in tens of megabytes.
const TOKENS_PER_PASS: usize = 2048;

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// What follows self-attention in a layer: the attention output and its norm, then the
/// feed-forward block and its norm.
struct FeedForward<K: Kernel> {
    attention_output: PackedLinear<K>,
    attention_norm: Norm,
    intermediate: PackedLinear<K>,
    output: PackedLinear<K>,
    output_norm: Norm,
}

struct Layer<K: Kernel> {
    /// Query, key and value in one product (the last layer splits it, see `LastLayer`).
    qkv: PackedLinear<K>,
    feed_forward: FeedForward<K>,
}

/// The last layer: keys and values for every token, a query for `[CLS]` only.
struct LastLayer<K: Kernel> {
    query: PackedLinear<K>,
    key_value: PackedLinear<K>,
    feed_forward: FeedForward<K>,
}

/// The buffers every pass of a probe reuses, so that no pass or layer allocates (and
/// faults in) megabytes: the pass's token states, which every layer updates in place,
/// and the layers' scratch. Aligned to cache lines, so that the products' row stores do
/// not straddle lines.
struct Workspace {
    states: AlignedBuffer,
    scratch: LayerScratch,
}

/// What a layer's products write into without reading it first.
struct LayerScratch {
    qkv: AlignedBuffer,
    context: AlignedBuffer,
    attended: AlignedBuffer,
    inner: AlignedBuffer,
}

impl Workspace {
    fn new(rows: usize, hidden: usize, intermediate: usize) -> Self {
        Self {
            states: AlignedBuffer::zeroed(rows * hidden),
            scratch: LayerScratch {
                qkv: AlignedBuffer::zeroed(rows * 3 * hidden),
                context: AlignedBuffer::zeroed(rows * hidden),
                attended: AlignedBuffer::zeroed(rows * hidden),
                inner: AlignedBuffer::zeroed(rows * intermediate),
            },
        }
    }
}

/// The family's head: `classifier(activation(dense([CLS])))`.
struct Head<K: Kernel> {
    dense: PackedLinear<K>,
    activation: Activation,
    classifier: PackedLinear<K>,
}

/// In `CpuBert::word_row_of`: an id whose word-embedding row was not read.
const NOT_READ: u32 = u32::MAX;

pub struct CpuBert<K: Kernel> {
    /// The word-embedding rows of the probe's tokens only, in ascending id order.
    word_rows: Vec<f32>,
    /// For each id of the vocabulary, its row in `word_rows`, or [`NOT_READ`].
    word_row_of: Vec<u32>,
    /// The table rows of positions 0, 1, ... (RoBERTa's start at `pad_token_id + 1`).
    position_embeddings: Vec<f32>,
    /// Token type 0's row (single-segment inputs), or zeros for a family without types.
    token_type_row: Vec<f32>,
    embeddings_norm: Norm,
    /// ELECTRA's `embeddings_project`, when the embeddings are narrower than the encoder.
    projection: Option<PackedLinear<K>>,
    layers: Vec<Layer<K>>,
    last: LastLayer<K>,
    head: Option<Head<K>>,
    activation: Activation,
    simd: K,
    attention: attention::Heads,
    hidden: usize,
    /// The embedding tables' width (ELECTRA's `embedding_size`).
    width: usize,
    intermediate: usize,
    max_positions: usize,
}

/// Names and reads one layer's tensors.
struct LayerReader<'a, K: Kernel> {
    simd: K,
    tensors: &'a NamedTensors,
    names: &'a PostNormNames,
    prefix: String,
    hidden: usize,
    intermediate: usize,
    eps: f32,
}

impl<K: Kernel> LayerReader<'_, K> {
    fn dense(
        &self,
        name: &str,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<PackedLinear<K>, EmbedError> {
        dense(
            self.simd,
            self.tensors,
            &format!("{}.{name}", self.prefix),
            out_dim,
            in_dim,
        )
    }

    fn norm(&self, name: &str) -> Result<Norm, EmbedError> {
        norm(
            self.tensors,
            &format!("{}.{name}", self.prefix),
            self.hidden,
            self.eps,
        )
    }

    /// The weights and biases of the named attention projections, stacked in order.
    fn projections(&self, names: &[&str]) -> Result<PackedLinear<K>, EmbedError> {
        let hidden = self.hidden;
        let mut weight = Vec::with_capacity(names.len() * hidden * hidden);
        let mut bias = Vec::with_capacity(names.len() * hidden);
        for name in names {
            let prefix = format!("{}.{name}", self.prefix);
            weight.extend(
                self.tensors
                    .values(&format!("{prefix}.weight"), &[hidden, hidden])?,
            );
            bias.extend(self.tensors.values(&format!("{prefix}.bias"), &[hidden])?);
        }
        Ok(PackedLinear::new(self.simd, &weight, &bias, hidden))
    }

    fn feed_forward(&self) -> Result<FeedForward<K>, EmbedError> {
        let (hidden, intermediate) = (self.hidden, self.intermediate);
        let names = self.names;
        Ok(FeedForward {
            attention_output: self.dense(names.attention_output, hidden, hidden)?,
            attention_norm: self.norm(names.attention_norm)?,
            intermediate: self.dense(names.intermediate, intermediate, hidden)?,
            output: self.dense(names.output, hidden, intermediate)?,
            output_norm: self.norm(names.output_norm)?,
        })
    }
}

fn dense<K: Kernel>(
    simd: K,
    tensors: &NamedTensors,
    prefix: &str,
    out_dim: usize,
    in_dim: usize,
) -> Result<PackedLinear<K>, EmbedError> {
    Ok(PackedLinear::new(
        simd,
        &tensors.values(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
        &tensors.values(&format!("{prefix}.bias"), &[out_dim])?,
        in_dim,
    ))
}

fn norm(tensors: &NamedTensors, prefix: &str, dim: usize, eps: f32) -> Result<Norm, EmbedError> {
    let (weight, bias) = tensors.layer_norm_names(prefix);
    Ok(Norm {
        weight: tensors.values(&weight, &[dim])?,
        bias: tensors.values(&bias, &[dim])?,
        eps,
    })
}

impl<K: Kernel> CpuEncoder for CpuBert<K> {
    fn isa(&self) -> Isa {
        K::ISA
    }

    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn num_labels(&self) -> Option<usize> {
        self.head.as_ref().map(|head| head.classifier.outputs())
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn embed(&self, probe: &TokenizedProbe) -> Result<Embeddings, EmbedError> {
        self.embed_probe(probe)
    }
}

impl<K: Kernel> CpuBert<K> {
    /// Reads the weights, and of the word embeddings the rows of `vocabulary` (the ids
    /// the probe uses; ascending ids are read in runs) only.
    fn load(
        simd: K,
        config: &ModelConfig,
        names: &PostNormNames,
        tensors: &NamedTensors,
        vocabulary: &[u32],
    ) -> Result<Self, EmbedError> {
        let spec = &config.encoder;
        let base = tensors.backbone_prefix(spec);
        let base = base.as_str();
        let hidden = config.hidden_size;
        let width = spec.embeddings.width;
        let eps = config.layer_norm_eps as f32;
        let Positions::Learned { first, rows } = spec.embeddings.positions else {
            return Err(EmbedError::Unsupported(format!(
                "{}: BERT's layers need learned positions",
                config.model_type
            )));
        };
        let reader = |index: usize| LayerReader {
            simd,
            tensors,
            names,
            prefix: format!("{base}{}.{index}", names.layers),
            hidden,
            intermediate: config.intermediate_size,
            eps,
        };
        if let Some(&id) = vocabulary
            .iter()
            .max()
            .filter(|&&id| id as usize >= config.vocab_size)
        {
            return Err(EmbedError::Unsupported(format!(
                "the probe has token id {id}, beyond the model's vocab_size {}",
                config.vocab_size
            )));
        }
        let (query, key, value) = (names.query, names.key, names.value);
        // The word-embedding rows and the layers are read on the pool's threads at once:
        // copying out of the page cache is the load's cost.
        let (word_rows, layers) = rayon::join(
            || {
                tensors.rows(
                    &format!("{base}{}.weight", names.word_embeddings),
                    [config.vocab_size, width],
                    vocabulary,
                )
            },
            || {
                (0..config.num_hidden_layers - 1)
                    .into_par_iter()
                    .map(|index| {
                        let layer = reader(index);
                        Ok(Layer {
                            qkv: layer.projections(&[query, key, value])?,
                            feed_forward: layer.feed_forward()?,
                        })
                    })
                    .collect::<Vec<Result<Layer<K>, EmbedError>>>()
            },
        );
        // The first failure in layer order, whatever thread met it first.
        let layers: Result<Vec<Layer<K>>, EmbedError> = layers.into_iter().collect();
        let (word_rows, layers) = (word_rows?, layers?);
        let mut word_row_of = vec![NOT_READ; config.vocab_size];
        for (row, &id) in vocabulary.iter().enumerate() {
            word_row_of[id as usize] = row as u32;
        }
        let last = reader(config.num_hidden_layers - 1);
        let last = LastLayer {
            query: last.projections(&[query])?,
            key_value: last.projections(&[key, value])?,
            feed_forward: last.feed_forward()?,
        };
        let head_spec = &spec.head;
        let head = match tensors.rows_of(&format!("{}.weight", head_spec.classifier)) {
            Some(labels) => {
                let dense = head_spec.dense_name(base);
                let dense_width = head_spec.dense_width;
                Some(Head {
                    dense: self::dense(simd, tensors, &dense, dense_width, hidden)?,
                    activation: head_spec.activation,
                    classifier: self::dense(
                        simd,
                        tensors,
                        head_spec.classifier,
                        labels,
                        dense_width,
                    )?,
                })
            }
            None => None,
        };
        let token_type_row = match spec.embeddings.token_types {
            0 => vec![0.0; width],
            types => tensors.values(
                &format!("{base}{}.weight", names.token_type_embeddings),
                &[types, width],
            )?[..width]
                .to_vec(),
        };
        let projection = if width == hidden {
            None
        } else {
            Some(self::dense(
                simd,
                tensors,
                &format!("{base}{}", names.embeddings_projection),
                hidden,
                width,
            )?)
        };
        let position_table = tensors.values(
            &format!("{base}{}.weight", names.position_embeddings),
            &[rows, width],
        )?;
        Ok(Self {
            word_rows,
            word_row_of,
            position_embeddings: position_table[first * width..].to_vec(),
            token_type_row,
            embeddings_norm: norm(
                tensors,
                &format!("{base}{}", names.embeddings_norm),
                width,
                eps,
            )?,
            projection,
            layers,
            last,
            head,
            activation: spec.activation,
            simd,
            attention: attention::Heads {
                heads: config.num_attention_heads,
                head_dim: hidden / config.num_attention_heads,
                hidden,
            },
            hidden,
            width,
            intermediate: config.intermediate_size,
            max_positions: config.max_tokens(),
        })
    }

    fn embed_probe(&self, probe: &TokenizedProbe) -> Result<Embeddings, EmbedError> {
        let hidden = self.hidden;
        let labels = CpuEncoder::num_labels(self);
        let examples = probe.ids.len();
        let read = |id: u32| {
            self.word_row_of
                .get(id as usize)
                .is_some_and(|&row| row != NOT_READ)
        };
        if let Some((index, &id)) = probe
            .ids
            .iter()
            .enumerate()
            .find_map(|(i, ids)| ids.iter().find(|&&id| !read(id)).map(|id| (i, id)))
        {
            return Err(EmbedError::Unsupported(format!(
                "probe example {index} has token id {id}, not among the ids the model was \
                 loaded for (vocab_size {})",
                self.word_row_of.len()
            )));
        }
        let mut cls = vec![0f32; examples * hidden];
        let mut logits = labels.map(|c| vec![0f32; examples * c]);
        let passes = plan_passes(probe);
        let largest = passes
            .iter()
            .map(|pass| pass.iter().map(|&i| probe.ids[i].len()).sum::<usize>())
            .max()
            .unwrap_or(0);
        // One workspace for every pass of the probe, sized for the largest.
        let mut workspace = Workspace::new(largest, hidden, self.intermediate);
        for pass in passes {
            let texts: Vec<&[u32]> = pass.iter().map(|&i| probe.ids[i].as_slice()).collect();
            let (pass_cls, pass_logits) = self.forward(&texts, &mut workspace);
            for (row, &index) in pass.iter().enumerate() {
                cls[index * hidden..(index + 1) * hidden]
                    .copy_from_slice(&pass_cls[row * hidden..(row + 1) * hidden]);
                if let (Some(all), Some(found), Some(width)) =
                    (logits.as_mut(), pass_logits.as_ref(), labels)
                {
                    all[index * width..(index + 1) * width]
                        .copy_from_slice(&found[row * width..(row + 1) * width]);
                }
            }
        }
        Ok(Embeddings {
            cls,
            hidden,
            logits,
            num_labels: labels.unwrap_or(0),
        })
    }

    /// `[CLS]` states [texts, hidden] and logits [texts, labels] of one pass.
    fn forward(&self, texts: &[&[u32]], workspace: &mut Workspace) -> (Vec<f32>, Option<Vec<f32>>) {
        let hidden = self.hidden;
        let starts: Vec<usize> = texts
            .iter()
            .scan(0, |offset, text| {
                let start = *offset;
                *offset += text.len();
                Some(start)
            })
            .collect();
        let tokens: usize = texts.iter().map(|text| text.len()).sum();
        let states = &mut workspace.states[..tokens * hidden];
        match &self.projection {
            None => self.embed_tokens(texts, &starts, states),
            Some(projection) => {
                let mut narrow = vec![0f32; tokens * self.width];
                self.embed_tokens(texts, &starts, &mut narrow);
                projection.apply(self.simd, &narrow, tokens, states);
            }
        }
        let lengths: Vec<usize> = texts.iter().map(|text| text.len()).collect();
        for layer in &self.layers {
            self.layer(layer, states, &lengths, &mut workspace.scratch);
        }
        let cls = self.last_layer(states, &lengths, &starts, &mut workspace.scratch.qkv);
        let logits = self.head.as_ref().map(|head| {
            let mut pooled = self.dense(&cls, texts.len(), &head.dense);
            pooled
                .iter_mut()
                .for_each(|v| *v = head.activation.reference(f64::from(*v)) as f32);
            self.dense(&pooled, texts.len(), &head.classifier)
        });
        (cls, logits)
    }

    /// The normalised sum of word, position and token-type embeddings of every token,
    /// `width` values a row (every row is written, none read first).
    fn embed_tokens(&self, texts: &[&[u32]], starts: &[usize], rows: &mut [f32]) {
        let width = self.width;
        for (text, &start) in texts.iter().zip(starts) {
            for (position, &id) in text.iter().enumerate() {
                let row = &mut rows[(start + position) * width..(start + position + 1) * width];
                let word_row = self.word_row_of[id as usize] as usize;
                let word = &self.word_rows[word_row * width..(word_row + 1) * width];
                let place = &self.position_embeddings[position * width..(position + 1) * width];
                for (((value, w), p), t) in row
                    .iter_mut()
                    .zip(word)
                    .zip(place)
                    .zip(&self.token_type_row)
                {
                    *value = w + p + t;
                }
            }
        }
        self.normalise(rows, width, None, &self.embeddings_norm);
    }

    /// `input · weightᵀ + bias` in a new buffer: for the few rows of the last layer and
    /// the head.
    fn dense(&self, input: &[f32], rows: usize, linear: &PackedLinear<K>) -> Vec<f32> {
        let mut out = vec![0.0; rows * linear.outputs()];
        linear.apply(self.simd, input, rows, &mut out);
        out
    }

    /// `rows = LayerNorm(rows + residual)`, the residual optional; rows `width` wide.
    fn normalise(&self, rows: &mut [f32], width: usize, residual: Option<&[f32]>, norm: &Norm) {
        let simd = self.simd;
        for_row_chunks(rows, width, |offset, part| {
            let residual = residual.map(|r| &r[offset..offset + part.len()]);
            simd.add_layer_norm(part, residual, &norm.weight, &norm.bias, norm.eps)
        });
    }

    /// Attention output and norm, then the feed-forward block and its norm: `states`
    /// holds the layer's input (the first residual) on entry and its output on return.
    fn feed_forward(
        &self,
        block: &FeedForward<K>,
        context: &[f32],
        states: &mut [f32],
        attended: &mut [f32],
        inner: &mut [f32],
    ) {
        let rows = states.len() / self.hidden;
        let attended = &mut attended[..rows * self.hidden];
        let inner = &mut inner[..rows * self.intermediate];
        let simd = self.simd;
        block.attention_output.apply(simd, context, rows, attended);
        self.normalise(attended, self.hidden, Some(states), &block.attention_norm);
        block.intermediate.apply(simd, attended, rows, inner);
        let activation = self.activation;
        for_row_chunks(inner, self.intermediate, |_, part| {
            simd.activate(part, activation)
        });
        block.output.apply(simd, inner, rows, states);
        self.normalise(states, self.hidden, Some(attended), &block.output_norm);
    }

    fn layer(
        &self,
        layer: &Layer<K>,
        states: &mut [f32],
        lengths: &[usize],
        scratch: &mut LayerScratch,
    ) {
        let hidden = self.hidden;
        let tokens = states.len() / hidden;
        let qkv = &mut scratch.qkv[..tokens * 3 * hidden];
        layer.qkv.apply(self.simd, states, tokens, qkv);
        let qkv = &scratch.qkv[..tokens * 3 * hidden];
        // One task per text: its rows of `context` are disjoint from every other's.
        let mut parts = Vec::with_capacity(lengths.len());
        let mut rest = &mut scratch.context[..tokens * hidden];
        let mut start = 0;
        for &length in lengths {
            let (part, tail) = rest.split_at_mut(length * hidden);
            parts.push((start, length, part));
            rest = tail;
            start += length;
        }
        parts.into_par_iter().for_each(|(start, length, part)| {
            self.attention.attend(
                self.simd,
                &qkv[start * 3 * hidden..(start + length) * 3 * hidden],
                length,
                part,
            )
        });
        self.feed_forward(
            &layer.feed_forward,
            &scratch.context[..tokens * hidden],
            states,
            &mut scratch.attended,
            &mut scratch.inner,
        );
    }

    /// The last layer, for the `[CLS]` row of each text only.
    /// `key_value` is scratch space for every token's keys and values.
    fn last_layer(
        &self,
        states: &[f32],
        lengths: &[usize],
        starts: &[usize],
        key_value: &mut [f32],
    ) -> Vec<f32> {
        let (hidden, d) = (self.hidden, self.attention.head_dim);
        let layer = &self.last;
        let tokens = states.len() / hidden;
        let key_value = &mut key_value[..tokens * 2 * hidden];
        layer.key_value.apply(self.simd, states, tokens, key_value);
        let key_value = &*key_value;
        let mut cls_states: Vec<f32> = starts
            .iter()
            .flat_map(|&start| states[start * hidden..(start + 1) * hidden].iter().copied())
            .collect();
        let texts = lengths.len();
        let queries = self.dense(&cls_states, texts, &layer.query);
        let scale = 1.0 / (d as f32).sqrt();
        let mut context = vec![0f32; texts * hidden];
        context
            .par_chunks_mut(hidden)
            .enumerate()
            .for_each(|(text, out)| {
                let (start, length) = (starts[text], lengths[text]);
                let rows = &key_value[start * 2 * hidden..(start + length) * 2 * hidden];
                let query = &queries[text * hidden..(text + 1) * hidden];
                let mut scores = vec![0f32; length];
                for head in 0..self.attention.heads {
                    let q = &query[head * d..(head + 1) * d];
                    for (position, score) in scores.iter_mut().enumerate() {
                        let key = &rows[position * 2 * hidden + head * d..][..d];
                        *score = q.iter().zip(key).map(|(a, b)| a * b).sum();
                    }
                    self.simd.scaled_softmax(&mut scores, scale);
                    let out = &mut out[head * d..(head + 1) * d];
                    for (position, &weight) in scores.iter().enumerate() {
                        let value = &rows[position * 2 * hidden + hidden + head * d..][..d];
                        out.iter_mut()
                            .zip(value)
                            .for_each(|(o, v)| *o += weight * v);
                    }
                }
            });
        let mut attended = vec![0f32; texts * hidden];
        let mut inner = vec![0f32; texts * self.intermediate];
        self.feed_forward(
            &layer.feed_forward,
            &context,
            &mut cls_states,
            &mut attended,
            &mut inner,
        );
        cls_states
    }
}

/// Runs `apply` over `rows` (each `width` values long) in chunks of 64 rows on the
/// thread pool, passing each chunk's offset into `rows`.
fn for_row_chunks(rows: &mut [f32], width: usize, apply: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let chunk = width * 64;
    rows.par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(index, part)| apply(index * chunk, part));
}

/// Groups the probe's texts, longest first, into passes of about [`TOKENS_PER_PASS`]
/// tokens (a text longer than that gets a pass of its own).
fn plan_passes(probe: &TokenizedProbe) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..probe.ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(probe.ids[i].len()));
    let mut passes: Vec<Vec<usize>> = Vec::new();
    let mut tokens = 0;
    for index in order {
        let length = probe.ids[index].len();
        match passes.last_mut() {
            Some(pass) if tokens + length <= TOKENS_PER_PASS => pass.push(index),
            _ => {
                passes.push(vec![index]);
                tokens = 0;
            }
        }
        tokens += length;
    }
    passes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_hold_about_the_token_budget_and_every_text_once() {
        let probe = TokenizedProbe {
            ids: vec![
                vec![1; 1500],
                vec![1; 600],
                vec![1; 3000],
                vec![1; 10],
                vec![1; 500],
            ],
        };
        assert_eq!(plan_passes(&probe), vec![vec![2], vec![0], vec![1, 4, 3]]);
    }
}
