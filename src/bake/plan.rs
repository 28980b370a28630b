//! The mixed-precision plan of a bake: which scheme each weight gets, as
//! NNCF's data-free `compress_weights` decides it (embeddings and lm_head
//! in the backup unless all layers, and with a ratio below 1 the weights
//! its sensitivity rule picks).
//!
//! Decoder matmuls define the ratio; embeddings and lm_head (the last matmul,
//! skipped when tied) take the backup (INT8_ASYM per channel) unless
//! `--all-layers`; with `ratio < 1` the sensitivity is 1 / (INT8_ASYM
//! max-mean error + eps), ascending, and weights are taken while the primary
//! share stays below the ratio; INT8 modes compress everything per channel.

use super::*;

/// The plan: which scheme each weight gets.
pub(super) fn plan(
    spec: &ModelSpec,
    ckpt: &Checkpoint,
    opts: &BakeOptions,
) -> Result<HashMap<String, Scheme>, BakeError> {
    let matmuls: Vec<(String, Vec<usize>)> = spec
        .expected_tensors()
        .into_iter()
        .filter(|(n, s)| s.len() == 2 && n.starts_with("model.layers."))
        .collect();
    let embed = "model.embed_tokens.weight".to_string();
    let head = (!spec.tie_word_embeddings).then(|| "lm_head.weight".to_string());
    let mut plan = HashMap::new();

    match opts.weights {
        // Float stores, and NNCF's INT8 modes (every weight, per channel):
        // one scheme for all.
        Scheme::F16 | Scheme::F32 | Scheme::Int8Asym | Scheme::Int8Sym => {
            for (n, _) in &matmuls {
                plan.insert(n.clone(), opts.weights);
            }
            plan.insert(embed, opts.weights);
            if let Some(h) = head {
                plan.insert(h, opts.weights);
            }
            return Ok(plan);
        }
        Scheme::Int4Sym | Scheme::Int4Asym => {}
    }

    // Ratio-defining weights: the decoder matmuls, plus embeddings and lm_head with --all-layers.
    let mut defining: Vec<(String, usize, usize)> = matmuls
        .iter()
        .map(|(n, s)| (n.clone(), s[0], s[1]))
        .collect();
    let v = spec.vocab_size;
    let h = spec.hidden_size;
    if opts.all_layers {
        if let Some(hn) = &head {
            defining.push((hn.clone(), v, h));
        }
        defining.push((embed.clone(), v, h));
    } else {
        plan.insert(embed.clone(), opts.backup.scheme());
        if let Some(hn) = &head {
            plan.insert(hn.clone(), opts.backup.scheme());
        }
    }
    if opts.group_size > 0 {
        let g = opts.group_size as usize;
        for (n, _, cols) in &defining {
            if cols % g != 0 {
                return Err(BakeError::GroupSize {
                    name: n.clone(),
                    cols: *cols,
                    group: g,
                });
            }
        }
    }
    for (n, _, _) in &defining {
        plan.insert(n.clone(), opts.weights);
    }
    if opts.ratio < 1.0 && !defining.is_empty() {
        // NNCF's data-free criterion: sensitivity = 1 / (INT8_ASYM error + eps);
        // ascending sensitivity, take weights while the ratio stays below `ratio`.
        let mut scores = Vec::with_capacity(defining.len());
        for (n, r, c) in &defining {
            let w = ckpt.f32(n)?;
            let err = int8_asym_error(&w, *r, *c);
            scores.push(1.0 / (err + f32::EPSILON as f64));
        }
        let total: usize = defining.iter().map(|(_, r, c)| r * c).sum();
        let mut order: Vec<usize> = (0..defining.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let mut in_primary = 0usize;
        let mut primary = vec![false; defining.len()];
        for i in order {
            let (_, r, c) = &defining[i];
            let ratio = (in_primary + r * c) as f64 / total as f64;
            if ratio >= opts.ratio {
                break;
            }
            primary[i] = true;
            in_primary += r * c;
        }
        for (i, (n, _, _)) in defining.iter().enumerate() {
            if !primary[i] {
                plan.insert(n.clone(), opts.backup.scheme());
            }
        }
    }
    Ok(plan)
}
