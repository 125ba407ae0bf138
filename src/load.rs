//! Loading the configuration: built-in defaults < YAML file < environment < command line,
//! merged with figment. Every value remembers the layer it came from, which
//! `tollgate config --sources` prints and every problem message names.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use tollgate_core::config::{is_secret_header, LogFormat};
use tollgate_core::{Config, Problem, Registry};
use tollgate_server::Runtime;

/// The environment variables with names of their own (SPEC §2), and the key each sets.
/// (`PROXY_API_KEY` and the connector key variables are read where they are used.)
const NAMED_VARS: &[(&str, &str)] = &[
    ("DEFAULT_BACKEND", "default_backend"),
    ("FORCE_MODEL", "force_model"),
    ("REDIS_URL", "state.url"),
    (
        "FAILURE_HANDLING_KEEPALIVE_INTERVAL",
        "failure_handling.keepalive_interval",
    ),
];

/// Values given on the command line; `None` leaves the lower layers in charge.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub default_backend: Option<String>,
    pub force_model: Option<String>,
    pub keepalive_interval: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

/// Where a configuration comes from: a file (maybe none) and the command line. The
/// environment is read at each load, so a reload sees the same layers on top.
#[derive(Debug, Clone)]
pub struct Source {
    /// The YAML file, when there is one.
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

/// A loaded configuration and the merged layers it was read from.
pub struct Loaded {
    pub config: Config,
    figment: Figment,
    /// The YAML file, named in messages.
    file: Option<PathBuf>,
    /// Unknown keys found (and left out of `config`); a configuration with any is refused.
    pub unknown: Vec<Diagnostic>,
    /// A digest of the file's text, to tell a real change from a touch.
    pub digest: Option<u64>,
}

/// A problem located in its layer: the file, the variable or the flag that set the key.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub origin: String,
    pub problem: Problem,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.problem)
    }
}

/// Renames a provider's layer, for `--sources` and messages.
struct Layer<P> {
    name: String,
    inner: P,
}

impl<P: Provider> Provider for Layer<P> {
    fn metadata(&self) -> Metadata {
        let mut md = self.inner.metadata();
        md.name = self.name.clone().into();
        md
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

fn layer<P: Provider>(name: impl Into<String>, inner: P) -> Layer<P> {
    Layer {
        name: name.into(),
        inner,
    }
}

impl Source {
    /// Reads the YAML file (an error when it is missing: a reload must never mistake a
    /// half-saved file for an empty configuration).
    pub fn read_file(&self) -> Result<Option<String>, Vec<Diagnostic>> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        std::fs::read_to_string(path).map(Some).map_err(|e| {
            vec![Diagnostic {
                origin: path.display().to_string(),
                problem: Problem::new("", format!("cannot read the configuration file: {e}")),
            }]
        })
    }

    /// The merged layers, highest last, with `yaml` as the file's text.
    pub fn figment(&self, yaml: Option<&str>) -> Figment {
        let mut figment =
            Figment::new().merge(layer("default", Serialized::defaults(Config::default())));
        if let Some(text) = yaml.filter(|t| !t.trim().is_empty()) {
            figment = figment.merge(layer("yaml", Yaml::string(text)));
        }
        for (key, value) in Env::prefixed("TOLLGATE__").split("__").iter() {
            figment = figment.merge(layer(
                "env",
                Serialized::default(key.as_str(), env_value(value)),
            ));
        }
        for (var, key) in NAMED_VARS {
            if let Some(value) = Env::var(var) {
                figment = figment.merge(layer(
                    format!("env {var}"),
                    Serialized::default(key, env_value(value)),
                ));
            }
        }
        let o = &self.overrides;
        let mut cli = Vec::new();
        if let Some(v) = &o.host {
            cli.push(("server.host", Value::from(v.clone())));
        }
        if let Some(v) = o.port {
            cli.push(("server.port", Value::from(v)));
        }
        if let Some(v) = &o.default_backend {
            cli.push(("default_backend", Value::from(v.clone())));
        }
        if let Some(v) = &o.force_model {
            cli.push(("force_model", Value::from(v.clone())));
        }
        if let Some(v) = o.keepalive_interval {
            cli.push(("failure_handling.keepalive_interval", Value::from(v)));
        }
        if let Some(v) = o.log_format {
            let name = match v {
                LogFormat::Pretty => "pretty",
                LogFormat::Json => "json",
            };
            cli.push(("logging.format", Value::from(name)));
        }
        if let Some(v) = &o.log_level {
            cli.push(("logging.level", Value::from(v.clone())));
        }
        for (key, value) in cli {
            figment = figment.merge(layer("cli", Serialized::global(key, value)));
        }
        figment
    }

    /// Reads and merges every layer, refusing unknown keys and mistyped values. Semantic
    /// checks (ranges, references) follow when the runtime is built.
    pub fn load(&self) -> Result<Loaded, Vec<Diagnostic>> {
        let text = self.read_file()?;
        self.load_text(text.as_deref())
    }

    /// Like [`Source::load`] with the file's text already read.
    pub fn load_text(&self, yaml: Option<&str>) -> Result<Loaded, Vec<Diagnostic>> {
        let figment = self.figment(yaml);
        let file = self.path.clone();
        let fallback = self.origin_fallback();
        if let Some(text) = yaml {
            // figment keeps the last of two equal keys; a duplicated key is a mistake to report.
            if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(text) {
                return Err(vec![Diagnostic {
                    origin: fallback,
                    problem: Problem::new("", e.to_string()),
                }]);
            }
        }
        let mut as_json: serde_json::Value = figment
            .extract()
            .map_err(|e| figment_diagnostics(e, &fallback, file.as_deref()))?;
        let unknown = tollgate_core::keys::strip_unknown(&mut as_json);
        let config: Config = if unknown.is_empty() {
            figment.extract_lossy()
        } else {
            // Parse what is left, so its problems are reported alongside the unknown keys.
            Figment::from(Serialized::defaults(as_json)).extract_lossy()
        }
        .map_err(|e| figment_diagnostics(e, &fallback, file.as_deref()))?;
        let mut loaded = Loaded {
            config,
            figment,
            file,
            unknown: Vec::new(),
            digest: yaml.map(digest),
        };
        loaded.unknown = unknown.into_iter().map(|p| loaded.locate(p)).collect();
        Ok(loaded)
    }

    fn origin_fallback(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "configuration".into(),
        }
    }
}

impl Loaded {
    /// Names the layer that set `problem.path` (or its nearest parent that exists).
    pub fn locate(&self, problem: Problem) -> Diagnostic {
        let mut path = problem.path.split('[').next().unwrap_or("").to_owned();
        let origin = loop {
            if let Ok(value) = self.figment.find_value(&path) {
                if let Some(md) = self.figment.get_metadata(value.tag()) {
                    break describe(md, &path, self.file.as_deref());
                }
            }
            match path.rfind('.') {
                Some(i) if !path.is_empty() => path.truncate(i),
                _ if !path.is_empty() => path.clear(),
                _ => break "configuration".into(),
            }
        };
        Diagnostic { origin, problem }
    }

    /// Every set value as `path: value  # layer`, secrets as `***`.
    pub fn sources(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Ok(root) = self.figment.find_value("") {
            self.list(&root, "", &mut lines);
        }
        lines
    }

    fn list(&self, value: &Value, path: &str, out: &mut Vec<String>) {
        // Lists of objects (client keys) are walked so their secrets are found; lists of
        // plain values print whole.
        if let Value::Array(_, items) = value {
            if items.iter().any(|i| matches!(i, Value::Dict(..))) {
                for (i, item) in items.iter().enumerate() {
                    self.list(item, &format!("{path}[{i}]"), out);
                }
                return;
            }
        }
        if let Value::Dict(_, dict) = value {
            if !dict.is_empty() {
                for (key, child) in dict {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.list(child, &child_path, out);
                }
                return;
            }
        }
        let layer = self
            .figment
            .get_metadata(value.tag())
            .map(|md| describe(md, path, self.file.as_deref()))
            .unwrap_or_else(|| "default".into());
        let shown = if is_secret_path(path) {
            "\"***\"".to_owned()
        } else {
            match value {
                // Environment values arrive as text; a number or boolean is shown as the value
                // it becomes.
                Value::String(_, text)
                    if layer.starts_with("env")
                        && (text.parse::<f64>().is_ok() || text.parse::<bool>().is_ok()) =>
                {
                    text.clone()
                }
                // A password in a URL (`state.url: redis://:pw@host`).
                Value::String(_, text) if text.contains("://") => {
                    serde_json::to_string(&tollgate_core::secret::hide_url_passwords(text))
                        .unwrap_or_default()
                }
                _ => serde_json::to_string(value).unwrap_or_default(),
            }
        };
        out.push(format!("{path}: {shown}  # {layer}"));
    }
}

/// `--sources` lines for a backend built only because the configuration names its connector
/// type (`default_backend: nvidia` with no `backends.nvidia`): where its URL and key come from.
pub fn implicit_lines(name: &str, registry: &Registry, env: &tollgate_core::Env) -> Vec<String> {
    let mut lines = vec![format!(
        "backends.{name}.type: \"{name}\"  # implicit: the `{name}` connector type is named where a backend is expected and no backends.{name} entry exists"
    )];
    if let Some(info) = registry.info(name) {
        lines.push(format!(
            "backends.{name}.api_url: \"{}\"  # implicit: the type's default",
            info.default_url
        ));
        if let Some(var) = info.key_var {
            lines.push(match env.var(var) {
                Some(_) => format!("backends.{name}.api_key: \"***\"  # env {var}"),
                None => format!("backends.{name}.api_key: null  # env {var} is not set"),
            });
        }
    }
    lines
}

/// Whether the value at `path` is a credential.
fn is_secret_path(path: &str) -> bool {
    let last = path.rsplit(['.', ']']).next().unwrap_or(path);
    if last == "api_key" || (path.starts_with("auth.") && last == "key") {
        return true;
    }
    path.split('.').rev().nth(1) == Some("headers") && is_secret_header(last)
}

/// A layer's name for people: the file path, the variable, `cli` or `default`.
fn describe(md: &Metadata, path: &str, file: Option<&Path>) -> String {
    match md.name.as_ref() {
        "yaml" => file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "yaml".into()),
        "env" => format!(
            "env TOLLGATE__{}",
            path.to_ascii_uppercase().replace('.', "__")
        ),
        other => other.to_owned(),
    }
}

fn figment_diagnostics(
    error: figment::Error,
    fallback: &str,
    file: Option<&Path>,
) -> Vec<Diagnostic> {
    error
        .into_iter()
        .map(|e| {
            let origin = e
                .metadata
                .as_ref()
                .map(|md| describe(md, &e.path.join("."), file))
                .unwrap_or_else(|| fallback.to_owned());
            Diagnostic {
                origin,
                problem: Problem::new(e.path.join("."), e.kind.to_string()),
            }
        })
        .collect()
}

/// Builds the runtime of a loaded configuration: unknown keys and every problem the build
/// finds are reported together, each located in its layer.
pub fn build(
    loaded: &Loaded,
    registry: &Registry,
    env: &tollgate_core::Env,
    previous: Option<&Runtime>,
) -> Result<Runtime, Vec<Diagnostic>> {
    let built = Runtime::build(loaded.config.clone(), registry, env, previous);
    located(loaded, built)
}

/// Like [`build`], opening no state store: for `tollgate check`, which must not create a
/// SQLite file or connect to Redis.
pub fn check(
    loaded: &Loaded,
    registry: &Registry,
    env: &tollgate_core::Env,
) -> Result<Runtime, Vec<Diagnostic>> {
    located(loaded, Runtime::check(loaded.config.clone(), registry, env))
}

fn located(
    loaded: &Loaded,
    built: Result<Runtime, Vec<Problem>>,
) -> Result<Runtime, Vec<Diagnostic>> {
    let mut diagnostics = loaded.unknown.clone();
    match built {
        Ok(runtime) if diagnostics.is_empty() => Ok(runtime),
        Ok(_) => Err(diagnostics),
        Err(problems) => {
            diagnostics.extend(problems.into_iter().map(|p| loaded.locate(p)));
            Err(diagnostics)
        }
    }
}

/// An environment value as configuration: text stays text (an all-digit key is a string), so
/// numbers and booleans are read from text by lossy extraction; lists and maps written as
/// `[…]`/`{…}` are parsed.
fn env_value(raw: String) -> Value {
    if raw.trim_start().starts_with(['[', '{']) {
        // figment's own parse cannot fail: what is not a list or map stays text.
        let Ok(parsed) = raw.parse::<Value>();
        return parsed;
    }
    Value::from(raw)
}

/// A digest of a configuration file's text.
pub fn digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// `./config.yaml` when it exists.
pub fn default_path() -> Option<PathBuf> {
    let p = Path::new("config.yaml");
    p.exists().then(|| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_paths() {
        assert!(is_secret_path("backends.nvidia.api_key"));
        assert!(is_secret_path("auth.keys.key"));
        assert!(is_secret_path("auth.keys[0].key"));
        assert!(is_secret_path("backends.x.headers.Authorization"));
        assert!(!is_secret_path("backends.x.headers.X-Title"));
        assert!(!is_secret_path("auth.keys.key_env"));
        assert!(!is_secret_path("server.port"));
    }
}
