//! The client's tools as a chat upstream sees them, and the way back. Every function, freeform
//! (`custom`) and namespaced tool gets one chat function name that strict upstreams accept
//! (`^[a-zA-Z0-9_-]{1,64}$`, unique in the request); [`ToolMap`] turns a chat call's name back
//! into the name, namespace and kind the client declared. Built-in tools (`web_search`,
//! `file_search`, `computer_use_preview`, `code_interpreter`, `mcp` …) run inside OpenAI, which
//! a chat backend is not, so they are left out.
//!
//! Request and reply translation build the map from the same `tools` array with the same
//! function, so the names always agree.

use serde::Deserialize;
use serde_json::value::RawValue;
use tollgate_core::JsonObject;

use crate::TranslateError;

/// How the client calls a tool, and so which item a call becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `function`: JSON arguments, answered with a `function_call` item.
    Function,
    /// `custom` (freeform, Codex's `apply_patch`): one raw text input, answered with a
    /// `custom_tool_call` item. The chat upstream sees a function taking one string, `input`.
    Custom,
}

/// One client tool and its chat name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClientTool {
    pub chat_name: String,
    pub name: String,
    /// The `namespace` tool this function was declared in. The Responses API reports a call
    /// to it as `{"type":"function_call","namespace":"<ns>","name":"<fn>"}` (openai-python's
    /// `ResponseFunctionToolCall.namespace`; Codex routes on the pair).
    pub namespace: Option<String>,
    pub kind: Kind,
}

/// The request's tools by chat name.
#[derive(Debug, Clone, Default)]
pub(super) struct ToolMap {
    tools: Vec<ClientTool>,
}

/// One entry of the request's `tools` (or of a namespace's `tools`), read leniently: what is
/// not named here (`strict`, `defer_loading`, `allowed_callers` …) has no chat equivalent.
#[derive(Deserialize)]
pub(super) struct ToolDef<'a> {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Kept raw until needed: a reply context never reads it, and Codex's run to kilobytes.
    #[serde(borrow, default)]
    pub description: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub parameters: Option<&'a RawValue>,
    #[serde(default)]
    pub format: Option<CustomFormat>,
    #[serde(borrow, default)]
    pub tools: Option<Vec<ToolDef<'a>>>,
}

/// A freeform tool's input format: unconstrained text, or a Lark/regex grammar.
#[derive(Deserialize)]
pub(super) struct CustomFormat {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub syntax: Option<String>,
    #[serde(default)]
    pub definition: Option<String>,
}

/// A tool the chat upstream will see: the client's declaration and its chat name.
pub(super) struct Planned<'d, 'a> {
    pub tool: ClientTool,
    pub def: &'d ToolDef<'a>,
    /// The enclosing namespace's description, for the flattened function's description.
    pub namespace_description: Option<&'d RawValue>,
}

/// A raw description as text; anything but a string reads as none.
pub(super) fn text(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| {
        serde_json::from_str::<Option<String>>(r.get())
            .ok()
            .flatten()
    })
}

/// The request's `tools`, or none.
pub(super) fn read(body: &JsonObject) -> Result<Vec<ToolDef<'_>>, TranslateError> {
    body.decode::<Option<Vec<ToolDef<'_>>>>("tools")
        .map(|t| t.flatten().unwrap_or_default())
        .map_err(|e| TranslateError::new("tools", format!("invalid tools: {e}")))
}

/// The tools a chat upstream can call, in the client's order, each with a unique chat name.
pub(super) fn plan<'d, 'a>(
    defs: &'d [ToolDef<'a>],
) -> Result<Vec<Planned<'d, 'a>>, TranslateError> {
    let mut planned: Vec<Planned<'d, 'a>> = Vec::new();
    for (i, def) in defs.iter().enumerate() {
        match def.kind.as_deref() {
            Some("function") | Some("custom") => {
                let tool = client_tool(def, None, &planned, &format!("tools[{i}]"))?;
                planned.push(Planned {
                    tool,
                    def,
                    namespace_description: None,
                });
            }
            Some("namespace") => {
                let namespace = required_name(def, &format!("tools[{i}]"))?;
                for (j, inner) in def.tools.iter().flatten().enumerate() {
                    let path = format!("tools[{i}].tools[{j}]");
                    if !matches!(inner.kind.as_deref(), Some("function") | Some("custom")) {
                        continue;
                    }
                    let tool = client_tool(inner, Some(namespace), &planned, &path)?;
                    planned.push(Planned {
                        tool,
                        def: inner,
                        namespace_description: def.description,
                    });
                }
            }
            // Built-in tools run inside OpenAI; unknown types are newer built-ins.
            _ => {}
        }
    }
    Ok(planned)
}

fn required_name<'d>(def: &'d ToolDef<'_>, path: &str) -> Result<&'d str, TranslateError> {
    def.name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| TranslateError::new(format!("{path}.name"), "a tool needs a name"))
}

fn client_tool(
    def: &ToolDef<'_>,
    namespace: Option<&str>,
    taken: &[Planned<'_, '_>],
    path: &str,
) -> Result<ClientTool, TranslateError> {
    let name = required_name(def, path)?;
    let kind = if def.kind.as_deref() == Some("custom") {
        Kind::Custom
    } else {
        Kind::Function
    };
    let chat_name = unique(chat_name(namespace, name), |candidate| {
        taken.iter().any(|p| p.tool.chat_name == candidate)
    });
    Ok(ClientTool {
        chat_name,
        name: name.to_owned(),
        namespace: namespace.map(str::to_owned),
        kind,
    })
}

/// Longest name OpenAI, vLLM and NIM accept for a function.
const MAX_NAME: usize = 64;

/// The chat name of `name` in `namespace`: `<namespace>__<name>` (Codex's own flat spelling of
/// MCP tools, `mcp__server__tool`; a namespace already ending in `__` is not doubled), with
/// characters outside `[a-zA-Z0-9_-]` replaced and long names shortened with a hash, so two
/// long names stay apart.
pub(super) fn chat_name(namespace: Option<&str>, name: &str) -> String {
    let joined = match namespace {
        Some(ns) if ns.ends_with("__") => format!("{ns}{name}"),
        Some(ns) => format!("{ns}__{name}"),
        None => name.to_owned(),
    };
    let mut clean: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        clean.push_str("tool");
    }
    if clean.len() > MAX_NAME {
        // `clean` is ASCII: any byte offset is a character boundary.
        clean.truncate(MAX_NAME - 9);
        clean.push_str(&format!("_{:08x}", fnv32(joined.as_bytes())));
    }
    clean
}

/// `base`, or `base_2`, `base_3` … (shortened to fit) when `taken` says it is in use.
fn unique(base: String, taken: impl Fn(&str) -> bool) -> String {
    if !taken(&base) {
        return base;
    }
    (2u32..)
        .map(|n| {
            let suffix = format!("_{n}");
            let mut candidate = base.clone();
            candidate.truncate(MAX_NAME - suffix.len());
            candidate.push_str(&suffix);
            candidate
        })
        .find(|c| !taken(c))
        .unwrap_or(base)
}

/// FNV-1a, 32 bits: a stable short hash for shortened names (the same on every build, so a
/// name in a follow-up request maps like the first time).
fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

impl ToolMap {
    pub fn new(planned: &[Planned<'_, '_>]) -> ToolMap {
        ToolMap {
            tools: planned.iter().map(|p| p.tool.clone()).collect(),
        }
    }

    /// The client tool a chat call names.
    pub fn by_chat_name(&self, chat_name: &str) -> Option<&ClientTool> {
        self.tools.iter().find(|t| t.chat_name == chat_name)
    }

    /// The tool the client declared as `name` in `namespace`.
    pub fn by_client(&self, namespace: Option<&str>, name: &str) -> Option<&ClientTool> {
        self.tools
            .iter()
            .find(|t| t.name == name && t.namespace.as_deref() == namespace)
    }

    /// The only tool named `name`, in whichever namespace.
    pub fn by_name_anywhere(&self, name: &str) -> Option<&ClientTool> {
        let mut found = self.tools.iter().filter(|t| t.name == name);
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    /// The chat name for a call in the conversation's history: the declared tool's, or the
    /// same spelling rules for a tool no longer declared.
    pub fn history_name(&self, namespace: Option<&str>, name: &str) -> String {
        self.by_client(namespace, name)
            .map_or_else(|| chat_name(namespace, name), |t| t.chat_name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned_names(tools: &str) -> Vec<(String, Option<String>, String, Kind)> {
        let body = JsonObject::parse(format!(r#"{{"tools":{tools}}}"#).as_bytes()).expect("json");
        let defs = read(&body).expect("tools");
        plan(&defs)
            .expect("plan")
            .into_iter()
            .map(|p| (p.tool.name, p.tool.namespace, p.tool.chat_name, p.tool.kind))
            .collect()
    }

    #[test]
    fn functions_customs_and_namespaces_get_chat_names_built_ins_do_not() {
        let names = planned_names(
            r#"[{"type":"function","name":"exec_command"},{"type":"custom","name":"apply_patch"},
                {"type":"namespace","name":"multi_agent_v1","tools":[{"type":"function","name":"spawn_agent"},{"type":"custom","name":"note"}]},
                {"type":"namespace","name":"mcp__srv__","tools":[{"type":"function","name":"search"}]},
                {"type":"web_search"},{"type":"file_search"},{"type":"mcp","server_label":"x"},{"type":"image_generation"}]"#,
        );
        assert_eq!(
            names,
            [
                (
                    "exec_command".into(),
                    None,
                    "exec_command".into(),
                    Kind::Function
                ),
                (
                    "apply_patch".into(),
                    None,
                    "apply_patch".into(),
                    Kind::Custom
                ),
                (
                    "spawn_agent".into(),
                    Some("multi_agent_v1".into()),
                    "multi_agent_v1__spawn_agent".into(),
                    Kind::Function
                ),
                (
                    "note".into(),
                    Some("multi_agent_v1".into()),
                    "multi_agent_v1__note".into(),
                    Kind::Custom
                ),
                (
                    "search".into(),
                    Some("mcp__srv__".into()),
                    "mcp__srv__search".into(),
                    Kind::Function
                ),
            ]
        );
    }

    #[test]
    fn names_are_cleaned_shortened_and_unique() {
        let long = "x".repeat(80);
        let names = planned_names(&format!(
            r#"[{{"type":"function","name":"a.b c"}},{{"type":"function","name":"a_b_c"}},
                {{"type":"namespace","name":"ns","tools":[{{"type":"function","name":"{long}"}},{{"type":"function","name":"{long}y"}}]}}]"#
        ));
        let chat: Vec<&str> = names.iter().map(|n| n.2.as_str()).collect();
        assert_eq!(chat[0], "a_b_c");
        assert_eq!(chat[1], "a_b_c_2", "collision gets a suffix");
        for name in &chat {
            assert!(name.len() <= MAX_NAME, "{name}");
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        }
        assert_ne!(chat[2], chat[3], "long names stay apart");
        assert!(chat[2].starts_with("ns__xxx"));
    }

    #[test]
    fn nameless_tools_and_bad_shapes_are_refused() {
        let body = JsonObject::parse(br#"{"tools":[{"type":"function"}]}"#).expect("json");
        let defs = read(&body).expect("tools");
        let err = plan(&defs).err().expect("refused");
        assert_eq!(err.param.as_deref(), Some("tools[0].name"));
        let body = JsonObject::parse(br#"{"tools":{"type":"function"}}"#).expect("json");
        assert_eq!(
            read(&body).err().expect("refused").param.as_deref(),
            Some("tools")
        );
    }

    #[test]
    fn the_map_goes_both_ways() {
        let body = JsonObject::parse(
            br#"{"tools":[{"type":"namespace","name":"ns","tools":[{"type":"function","name":"f"}]},{"type":"function","name":"f"}]}"#,
        )
        .expect("json");
        let defs = read(&body).expect("tools");
        let map = ToolMap::new(&plan(&defs).expect("plan"));
        let t = map.by_chat_name("ns__f").expect("namespaced");
        assert_eq!((t.name.as_str(), t.namespace.as_deref()), ("f", Some("ns")));
        assert_eq!(map.by_chat_name("f").expect("plain").namespace, None);
        assert_eq!(map.history_name(Some("ns"), "f"), "ns__f");
        assert_eq!(map.history_name(Some("gone"), "g"), "gone__g");
        assert!(map.by_chat_name("nope").is_none());
    }
}
