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
/// named templates of which "default" is taken). Checked to compile and
/// to render a one-message conversation.
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
        // It must also run: a one-message conversation, as a chat starts.
        let hello = [super::chat::Message::new("user", "Hello")];
        super::chat::render(t, &hello, true, "", "").map_err(|e| ModelError::BadFile {
            path: source.clone(),
            message: format!("the chat template fails on a one-message conversation: {e}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).expect("write");
    }

    #[test]
    fn template_sources_in_order_of_precedence() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(find_chat_template(d.path()).expect("none"), None);
        write(
            d.path(),
            "tokenizer_config.json",
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        );
        assert_eq!(
            find_chat_template(d.path()).expect("list").as_deref(),
            Some("D")
        );
        write(d.path(), "chat_template.json", r#"{"chat_template": "J"}"#);
        assert_eq!(
            find_chat_template(d.path()).expect("json").as_deref(),
            Some("J")
        );
        write(
            d.path(),
            "chat_template.jinja",
            "{{ messages[0]['content'] }}",
        );
        let t = find_chat_template(d.path()).expect("jinja").expect("some");
        let out = crate::model::chat::render(
            &t,
            &[crate::model::chat::Message::new("user", "hi")],
            true,
            "",
            "",
        )
        .expect("render");
        assert_eq!(out, "hi");
    }

    #[test]
    fn broken_template_names_the_file() {
        let d = tempfile::tempdir().expect("tempdir");
        write(d.path(), "chat_template.jinja", "{% for m in messages %}");
        let err = find_chat_template(d.path())
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("chat_template.jinja") && err.contains("does not compile"),
            "{err}"
        );
    }

    #[test]
    fn eos_ids_from_generation_config_then_config() {
        let d = tempfile::tempdir().expect("tempdir");
        write(
            d.path(),
            "config.json",
            r#"{"bos_token_id": 1, "eos_token_id": 2}"#,
        );
        let spec_json = r#"{"model_type":"llama","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10}"#;
        let spec = ModelSpec::from_hf_json(spec_json).expect("spec");
        assert_eq!(
            token_info(d.path(), &spec).expect("ids"),
            (Some(1), vec![2])
        );
        write(
            d.path(),
            "generation_config.json",
            r#"{"eos_token_id": [5, 6]}"#,
        );
        assert_eq!(
            token_info(d.path(), &spec).expect("ids"),
            (Some(1), vec![5, 6])
        );
    }
}
