//! Chat `tools` → Messages `tools` (function → `name`, `description`, `input_schema`), and
//! `tool_choice` with `parallel_tool_calls` → Messages `tool_choice`.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use tollgate_core::JsonObject;

use super::messages::Json;
use super::request::decode_opt;
use super::wire::Text;
use crate::TranslateError;

#[derive(Deserialize)]
struct ChatTool<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    function: Option<FunctionDef<'a>>,
}

#[derive(Deserialize)]
struct FunctionDef<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    description: Option<&'a RawValue>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
}

#[derive(serde::Serialize)]
pub(super) struct Tool<'a> {
    name: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a RawValue>,
    input_schema: Json<'a>,
}

pub(super) fn tools(body: &JsonObject) -> Result<Vec<Tool<'_>>, TranslateError> {
    let Some(raw) = body.get("tools").filter(|r| *r != "null") else {
        return Ok(Vec::new());
    };
    let list: Vec<ChatTool<'_>> = serde_json::from_str(raw).map_err(|e| {
        TranslateError::new("tools", format!("`tools` must be an array of tools: {e}"))
    })?;
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.into_iter().enumerate() {
        let at = format!("tools[{i}]");
        match tool.kind.as_deref() {
            Some("function") | None => {}
            Some(other) => {
                return Err(TranslateError::new(
                    format!("{at}.type"),
                    format!("tools of type `{other}` are not supported by this backend"),
                ))
            }
        }
        let f = tool.function.ok_or_else(|| {
            TranslateError::new(
                format!("{at}.function"),
                format!("`{at}.function` is required"),
            )
        })?;
        let name = f.name.filter(|n| n.get().starts_with('"')).ok_or_else(|| {
            TranslateError::new(
                format!("{at}.function.name"),
                format!("`{at}.function.name` must be a string"),
            )
        })?;
        out.push(Tool {
            name,
            description: f.description.filter(|d| d.get().starts_with('"')),
            input_schema: input_schema(f.parameters, &format!("{at}.function.parameters"))?,
        });
    }
    Ok(out)
}

/// A function's `parameters` as Anthropic's `input_schema`, which must be an object schema
/// with `"type": "object"` (OpenAI lets `parameters` be absent for a function without any).
fn input_schema<'a>(raw: Option<&'a RawValue>, at: &str) -> Result<Json<'a>, TranslateError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type", default)]
        kind: Option<IgnoredAny>,
    }
    let empty = Json::Text(Cow::Borrowed(r#"{"type":"object","properties":{}}"#));
    let Some(raw) = raw.filter(|r| r.get() != "null") else {
        return Ok(empty);
    };
    if !raw.get().starts_with('{') {
        return Err(TranslateError::new(
            at,
            format!("`{at}` must be a JSON schema object"),
        ));
    }
    let probe: Probe = serde_json::from_str(raw.get())
        .map_err(|e| TranslateError::new(at, format!("`{at}`: {e}")))?;
    if probe.kind.is_some() {
        return Ok(Json::Raw(raw));
    }
    let inner = raw.get()[1..].trim_start();
    if inner.starts_with('}') {
        return Ok(empty);
    }
    Ok(Json::Text(Cow::Owned(format!(
        r#"{{"type":"object",{inner}"#
    ))))
}

/// Anthropic's `tool_choice`.
#[derive(serde::Serialize)]
pub(super) struct ToolChoice {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

impl ToolChoice {
    pub fn forces_tool_use(&self) -> bool {
        matches!(self.kind, "any" | "tool")
    }
}

pub(super) fn tool_choice(body: &JsonObject) -> Result<Option<ToolChoice>, TranslateError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Choice {
        Mode(String),
        Named {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            function: Option<Named>,
        },
    }
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let parallel = decode_opt::<bool>(body, "parallel_tool_calls")?;
    let disable_parallel = parallel == Some(false);
    let choice = match decode_opt::<Choice>(body, "tool_choice")? {
        None => {
            return Ok(disable_parallel.then_some(ToolChoice {
                kind: "auto",
                name: None,
                disable_parallel_tool_use: true,
            }))
        }
        Some(c) => c,
    };
    let (kind, name) = match choice {
        Choice::Mode(mode) => match mode.as_str() {
            "auto" => ("auto", None),
            "none" => ("none", None),
            "required" => ("any", None),
            other => {
                return Err(TranslateError::new(
                    "tool_choice",
                    format!("`tool_choice` `{other}` is not one of auto, none, required"),
                ))
            }
        },
        Choice::Named { kind, function } if kind == "function" => {
            let name = function.map(|f| f.name).ok_or_else(|| {
                TranslateError::new(
                    "tool_choice.function.name",
                    "`tool_choice.function.name` is required",
                )
            })?;
            ("tool", Some(name))
        }
        Choice::Named { kind, .. } => {
            return Err(TranslateError::new(
                "tool_choice.type",
                format!("`tool_choice` of type `{kind}` is not supported by this backend"),
            ))
        }
    };
    Ok(Some(ToolChoice {
        kind,
        name,
        // `none` takes no options.
        disable_parallel_tool_use: disable_parallel && kind != "none",
    }))
}
