//! Workflow files held by emulated repositories, and the little YAML reading the emulator needs
//! from them: the `run-name` template and the `workflow_dispatch` inputs.

use std::collections::BTreeMap;

use super::scenario::SpokeWorkflowKind;

/// The spoke workflow users install (the form in the design).
pub const STANDARD_SPOKE: &str = r#"name: spokehub spoke
run-name: spokehub ${{ inputs.task }} [${{ inputs.hub_run_id }}#${{ inputs.attempt }}]
on:
  workflow_dispatch:
    inputs:
      hub_run_id:
        description: Hub run id
        required: true
      attempt:
        description: Attempt number
        required: false
        default: "1"
      task:
        description: Task name
        required: true
      params:
        description: Task parameters (JSON)
        required: false
        default: "{}"
      callback_token:
        description: Token to echo back to the hub
        required: false
jobs:
  run:
    runs-on: ubuntu-latest
    steps:
      - run: echo "running $TASK"
        env:
          TASK: ${{ inputs.task }}
"#;

/// A spoke workflow without the `workflow_dispatch` trigger.
pub const NO_DISPATCH_SPOKE: &str = r#"name: spokehub spoke
on:
  push:
    branches: [main]
jobs:
  run:
    runs-on: ubuntu-latest
    steps:
      - run: echo hello
"#;

/// A spoke workflow that declares different inputs.
pub const OTHER_INPUTS_SPOKE: &str = r#"name: spokehub spoke
on:
  workflow_dispatch:
    inputs:
      version:
        description: Version to deploy
        required: true
jobs:
  run:
    runs-on: ubuntu-latest
    steps:
      - run: echo deploy
"#;

/// The hub workflow: the "Run workflow" button in the hub repository.
/// The hub repository's worker workflow (hybrid tasks): the template, as a user copies it.
pub const WORKERS_WORKFLOW: &str = include_str!("../../workflows-templates/workers.yml");

pub const HUB_WORKFLOW: &str = r#"name: spokehub
run-name: spokehub ${{ inputs.task }}
on:
  workflow_dispatch:
    inputs:
      task:
        description: Task to run
        required: true
      targets:
        description: Target selector
        required: false
        default: ""
      params:
        description: Task parameters (JSON)
        required: false
        default: "{}"
      dry_run:
        description: Plan only
        type: boolean
        required: false
        default: false
jobs:
  noop:
    runs-on: ubuntu-latest
    steps:
      - run: echo "the spokehub App does the work"
"#;

/// The file text a repository's spoke workflow has, if any.
pub fn spoke_text(kind: &SpokeWorkflowKind, explicit: Option<&str>) -> Option<String> {
    if let Some(t) = explicit {
        return Some(t.to_owned());
    }
    match kind {
        SpokeWorkflowKind::Present(true) => Some(STANDARD_SPOKE.into()),
        SpokeWorkflowKind::Present(false) => None,
        SpokeWorkflowKind::Named(n) => match n.as_str() {
            "standard" => Some(STANDARD_SPOKE.into()),
            "no_dispatch" => Some(NO_DISPATCH_SPOKE.into()),
            "other_inputs" => Some(OTHER_INPUTS_SPOKE.into()),
            _ => None,
        },
    }
}

/// One declared `workflow_dispatch` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub required: bool,
    pub default: Option<String>,
}

/// What the emulator understands of a workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowInfo {
    pub name: String,
    pub run_name: Option<String>,
    /// `None` when the workflow has no `workflow_dispatch` trigger.
    pub dispatch_inputs: Option<BTreeMap<String, InputSpec>>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
        .unwrap_or(v);
    v.to_owned()
}

/// Reads the parts of a workflow file the emulator needs (block-style YAML, as workflows are written).
pub fn parse(text: &str, file: &str) -> WorkflowInfo {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    let mut name = file.to_owned();
    let mut run_name = None;
    let mut dispatch_inputs = None;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if indent(l) == 0 {
            if let Some(v) = l.strip_prefix("name:") {
                name = unquote(v);
            } else if let Some(v) = l.strip_prefix("run-name:") {
                run_name = Some(unquote(v));
            } else if let Some(v) = l.strip_prefix("on:") {
                let v = v.trim();
                if v.contains("workflow_dispatch") {
                    dispatch_inputs = Some(BTreeMap::new());
                } else if v.is_empty() {
                    dispatch_inputs = parse_on_block(&lines[i + 1..]);
                }
            }
        }
        i += 1;
    }
    WorkflowInfo {
        name,
        run_name,
        dispatch_inputs,
    }
}

/// The lines under `on:` (until the next top-level key).
fn parse_on_block(rest: &[&str]) -> Option<BTreeMap<String, InputSpec>> {
    let block: Vec<&str> = rest.iter().copied().take_while(|l| indent(l) > 0).collect();
    let wd = block.iter().position(|l| {
        let t = l.trim();
        t == "workflow_dispatch:"
            || t.starts_with("workflow_dispatch:")
            || t == "- workflow_dispatch"
    })?;
    let wd_indent = indent(block[wd]);
    let body: Vec<&str> = block[wd + 1..]
        .iter()
        .copied()
        .take_while(|l| indent(l) > wd_indent)
        .collect();
    let mut inputs = BTreeMap::new();
    let Some(ip) = body.iter().position(|l| l.trim() == "inputs:") else {
        return Some(inputs);
    };
    let ip_indent = indent(body[ip]);
    let items: Vec<&str> = body[ip + 1..]
        .iter()
        .copied()
        .take_while(|l| indent(l) > ip_indent)
        .collect();
    let Some(first) = items.first() else {
        return Some(inputs);
    };
    let key_indent = indent(first);
    let mut current: Option<(String, InputSpec)> = None;
    for l in items {
        let t = l.trim();
        if indent(l) == key_indent {
            if let Some((k, v)) = current.take() {
                inputs.insert(k, v);
            }
            let key = t.trim_end_matches(':').trim().to_owned();
            current = Some((
                key,
                InputSpec {
                    required: false,
                    default: None,
                },
            ));
        } else if let Some((_, spec)) = current.as_mut() {
            if let Some(v) = t.strip_prefix("required:") {
                spec.required = v.trim() == "true";
            } else if let Some(v) = t.strip_prefix("default:") {
                spec.default = Some(unquote(v));
            }
        }
    }
    if let Some((k, v)) = current {
        inputs.insert(k, v);
    }
    Some(inputs)
}

/// Renders a `run-name` template: `${{ inputs.x }}` becomes the input's value (or its default,
/// or empty), `${{ github.x }}` the few github context values given.
pub fn render_run_name(
    template: &str,
    inputs: &BTreeMap<String, String>,
    github: &[(&str, &str)],
) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expr = after[..end].trim();
        if let Some(k) = expr.strip_prefix("inputs.") {
            out.push_str(inputs.get(k).map(String::as_str).unwrap_or(""));
        } else if let Some(k) = expr.strip_prefix("github.") {
            if let Some((_, v)) = github.iter().find(|(n, _)| *n == k) {
                out.push_str(v);
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_spoke_declares_inputs_and_run_name() {
        let w = parse(STANDARD_SPOKE, "spokehub-spoke.yml");
        let inputs = w.dispatch_inputs.unwrap();
        let names: Vec<_> = inputs.keys().cloned().collect();
        assert_eq!(
            names,
            ["attempt", "callback_token", "hub_run_id", "params", "task"]
        );
        assert!(inputs["task"].required && inputs["hub_run_id"].required);
        assert!(!inputs["params"].required);
        assert_eq!(inputs["attempt"].default.as_deref(), Some("1"));
        assert!(w.run_name.unwrap().contains("${{ inputs.hub_run_id }}"));
    }

    #[test]
    fn no_dispatch_and_hub() {
        assert!(parse(NO_DISPATCH_SPOKE, "x.yml").dispatch_inputs.is_none());
        let hub = parse(HUB_WORKFLOW, "h.yml").dispatch_inputs.unwrap();
        assert_eq!(hub.len(), 4);
        assert!(parse("on: [push, workflow_dispatch]\n", "a.yml")
            .dispatch_inputs
            .is_some());
    }

    #[test]
    fn renders_run_name() {
        let w = parse(STANDARD_SPOKE, "s.yml");
        let mut inputs = BTreeMap::new();
        inputs.insert("task".to_owned(), "bump".to_owned());
        inputs.insert("hub_run_id".to_owned(), "abc".to_owned());
        inputs.insert("attempt".to_owned(), "2".to_owned());
        assert_eq!(
            render_run_name(&w.run_name.unwrap(), &inputs, &[]),
            "spokehub bump [abc#2]"
        );
    }
}
