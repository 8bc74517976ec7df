//! Chat templates: the Jinja template a model's tokenizer carries (GGUF's
//! tokenizer.chat_template, or an HF directory's tokenizer_config.json), rendered by minijinja
//! as transformers' apply_chat_template renders it.

use std::path::Path;

use minijinja::{context, Environment, Error, ErrorKind};

/// One message of a conversation.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// `template` applied to `messages`; with `generation_prompt` it ends where the assistant's
/// answer starts. bos_token and eos_token are the tokenizer's.
pub fn render(
    template: &str,
    messages: &[Message],
    generation_prompt: bool,
    (bos, eos): (&str, &str),
) -> Result<String, String> {
    let mut env = Environment::new();
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(|e| format!("the chat template does not parse: {e}"))?;
    let t = env.get_template("chat").map_err(|e| e.to_string())?;
    t.render(context! {
        messages => messages,
        add_generation_prompt => generation_prompt,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| format!("the chat template failed: {e}"))
}

/// The chat template of an HF directory and the text of its eos_token, from
/// tokenizer_config.json (None when the file or the template is missing).
pub fn chat_in_dir(dir: &Path) -> Result<Option<(String, Option<String>)>, String> {
    let file = dir.join("tokenizer_config.json");
    if !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let Some(template) = v.get("chat_template").and_then(|t| t.as_str()) else { return Ok(None) };
    let eos = v.get("eos_token").and_then(|t| t.as_str()).map(str::to_string);
    Ok(Some((template.to_string(), eos)))
}

/// Writes tokenizer_config.json holding `template` and the turn's end `eos` into `dir`
/// (beside a tokenizer.json), as transformers keeps them.
pub fn save_template(dir: &Path, template: &str, eos: Option<&str>) -> Result<(), String> {
    let file = dir.join("tokenizer_config.json");
    let mut json = serde_json::json!({ "chat_template": template });
    if let Some(e) = eos {
        json["eos_token"] = e.into();
    }
    std::fs::write(&file, serde_json::to_string_pretty(&json).expect("json"))
        .map_err(|e| format!("{}: {e}", file.display()))
}
