//! Chat templates and special token ids of a Hugging Face directory.

use std::path::Path;

use super::{ModelError, ModelSpec};

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, ModelError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::BadFile {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })
}

/// The chat template: `chat_template.jinja`, `chat_template.json`, or the
/// `chat_template` key of `tokenizer_config.json` (a string, or a list of
/// named templates of which "default" is taken). Checked to compile.
pub fn find_chat_template(dir: &Path) -> Result<Option<String>, ModelError> {
    let jinja = dir.join("chat_template.jinja");
    let (source, text) = if jinja.exists() {
        let t = std::fs::read_to_string(&jinja).map_err(|e| ModelError::Io {
            path: jinja.clone(),
            source: e,
        })?;
        (jinja, Some(t))
    } else if let Some(v) = read_json(&dir.join("chat_template.json"))? {
        let p = dir.join("chat_template.json");
        let t = pick_template(v.get("chat_template")).ok_or_else(|| ModelError::BadFile {
            path: p.clone(),
            message: "no 'chat_template' string".into(),
        })?;
        (p, Some(t))
    } else if let Some(v) = read_json(&dir.join("tokenizer_config.json"))? {
        (
            dir.join("tokenizer_config.json"),
            pick_template(v.get("chat_template")),
        )
    } else {
        return Ok(None);
    };
    if let Some(t) = &text {
        let mut env = minijinja::Environment::new();
        env.add_template("chat", t)
            .map_err(|e| ModelError::BadFile {
                path: source.clone(),
                message: format!("the chat template does not compile: {e}"),
            })?;
    }
    Ok(text)
}

fn pick_template(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    }
}

fn ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|n| n as u32))
            .collect(),
        _ => Vec::new(),
    }
}

/// (bos id, eos ids) from generation_config.json, falling back to config.json.
pub fn token_info(dir: &Path, _spec: &ModelSpec) -> Result<(Option<u32>, Vec<u32>), ModelError> {
    let gen_cfg = read_json(&dir.join("generation_config.json"))?;
    let cfg = read_json(&dir.join("config.json"))?;
    let get = |key: &str| {
        gen_cfg
            .as_ref()
            .and_then(|g| g.get(key))
            .filter(|v| !v.is_null())
            .or_else(|| cfg.as_ref().and_then(|c| c.get(key)))
    };
    let bos = ids(get("bos_token_id")).first().copied();
    let eos = ids(get("eos_token_id"));
    Ok((bos, eos))
}
