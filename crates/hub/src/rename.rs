//! Tensor names of other ResNet code, renamed to torchvision's, as data.

use std::collections::HashMap;
use std::fmt;

use candle_core::Tensor;
use resnet_models::BN_COUNTER_SUFFIX;

use crate::{HubError, Result};

/// How the tensors of a weights file are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// torchvision's names (`conv1`, `layer1.0.bn2`, `fc`, ...), which timm's
    /// `timm/resnet*` and `lmz/candle-resnet` use too: loaded as they are.
    Torchvision,
    /// Hugging Face transformers' `ResNetForImageClassification`
    /// (`microsoft/resnet-*`): renamed by a rule table (see [`torchvision_name`]).
    Transformers,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Torchvision => "torchvision",
            Layout::Transformers => "transformers",
        })
    }
}

/// Name prefixes that only the transformers layout has.
const TRANSFORMERS_PREFIXES: [&str; 2] = ["resnet.embedder.", "resnet.encoder."];

/// The tensors of one batch-norm layer.
const BN_TENSORS: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];

/// The tensors of one linear layer.
const LINEAR_TENSORS: [&str; 2] = ["weight", "bias"];

/// transformers name patterns and the torchvision names they become. In a
/// pattern `{s}`, `{l}` and `{k}` each match one part of digits (stage,
/// layer in the stage, conv in the layer), `{bn}` one of [`BN_TENSORS`] and
/// `{p}` one of [`LINEAR_TENSORS`]; in a name `{x}` is the text matched and
/// `{x+1}` that number plus one.
const TRANSFORMERS_RULES: [(&str, &str); 7] = [
    (
        "resnet.embedder.embedder.convolution.weight",
        "conv1.weight",
    ),
    ("resnet.embedder.embedder.normalization.{bn}", "bn1.{bn}"),
    (
        "resnet.encoder.stages.{s}.layers.{l}.shortcut.convolution.weight",
        "layer{s+1}.{l}.downsample.0.weight",
    ),
    (
        "resnet.encoder.stages.{s}.layers.{l}.shortcut.normalization.{bn}",
        "layer{s+1}.{l}.downsample.1.{bn}",
    ),
    (
        "resnet.encoder.stages.{s}.layers.{l}.layer.{k}.convolution.weight",
        "layer{s+1}.{l}.conv{k+1}.weight",
    ),
    (
        "resnet.encoder.stages.{s}.layers.{l}.layer.{k}.normalization.{bn}",
        "layer{s+1}.{l}.bn{k+1}.{bn}",
    ),
    ("classifier.1.{p}", "fc.{p}"),
];

/// The layout of a file with tensors `names`: transformers if any name
/// starts with `resnet.embedder.` or `resnet.encoder.`, else torchvision.
pub fn detect_layout<'a>(names: impl IntoIterator<Item = &'a str>) -> Layout {
    if names
        .into_iter()
        .any(|name| TRANSFORMERS_PREFIXES.iter().any(|p| name.starts_with(p)))
    {
        Layout::Transformers
    } else {
        Layout::Torchvision
    }
}

/// The torchvision name of the tensor `name` of a file in `layout`, or
/// `None` if no rule of the layout matches it. Torchvision names stay as
/// they are; transformers names follow a rule table:
/// `resnet.embedder.embedder.{convolution,normalization}.*` become
/// `conv1.*`/`bn1.*`, `resnet.encoder.stages.S.layers.L.shortcut.{convolution,normalization}.*`
/// become `layer{S+1}.L.downsample.{0,1}.*`,
/// `resnet.encoder.stages.S.layers.L.layer.K.{convolution,normalization}.*`
/// become `layer{S+1}.L.{conv,bn}{K+1}.*` and `classifier.1.*` becomes `fc.*`.
pub fn torchvision_name(name: &str, layout: Layout) -> Option<String> {
    match layout {
        Layout::Torchvision => Some(name.to_string()),
        Layout::Transformers => TRANSFORMERS_RULES
            .iter()
            .find_map(|(pattern, target)| apply_rule(pattern, target, name)),
    }
}

/// `tensors` under their torchvision names, BN step counters dropped. A
/// name that no rule of `layout` matches is an error naming it and
/// `source_name`.
pub fn to_torchvision(
    tensors: HashMap<String, Tensor>,
    layout: Layout,
    source_name: &str,
) -> Result<HashMap<String, Tensor>> {
    let mut tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter(|(name, _)| !name.ends_with(BN_COUNTER_SUFFIX))
        .collect();
    // Sorted, so that the error names the same tensor every time.
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
        .into_iter()
        .map(|(name, tensor)| match torchvision_name(&name, layout) {
            Some(renamed) => Ok((renamed, tensor)),
            None => Err(HubError::UnknownTensorName {
                source_name: source_name.to_string(),
                layout,
                name,
            }),
        })
        .collect()
}

/// `target` filled in from `name` if `name` matches `pattern` part by part.
fn apply_rule(pattern: &str, target: &str, name: &str) -> Option<String> {
    let patterns: Vec<&str> = pattern.split('.').collect();
    let parts: Vec<&str> = name.split('.').collect();
    if patterns.len() != parts.len() {
        return None;
    }
    let mut bound = Vec::new();
    for (pattern, part) in patterns.into_iter().zip(parts) {
        match pattern.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(var) if placeholder_matches(var, part) => bound.push((var, part)),
            Some(_) => return None,
            None if pattern == part => {}
            None => return None,
        }
    }
    Some(fill(target, &bound))
}

fn placeholder_matches(var: &str, part: &str) -> bool {
    match var {
        "bn" => BN_TENSORS.contains(&part),
        "p" => LINEAR_TENSORS.contains(&part),
        _ => part.bytes().all(|b| b.is_ascii_digit()) && part.parse::<u32>().is_ok(),
    }
}

/// `target` with every `{x}` and `{x+1}` replaced from `bound`.
fn fill(target: &str, bound: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = target;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = start
            + rest[start..]
                .find('}')
                .expect("rule targets close every `{`");
        let expr = &rest[start + 1..end];
        let (var, plus_one) = match expr.strip_suffix("+1") {
            Some(var) => (var, true),
            None => (expr, false),
        };
        let value = bound
            .iter()
            .find(|(v, _)| *v == var)
            .map(|(_, value)| *value)
            .expect("rule targets use only their pattern's placeholders");
        if plus_one {
            let number: u64 = value.parse().expect("numeric placeholders match digits");
            out.push_str(&(number + 1).to_string());
        } else {
            out.push_str(value);
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn transformers_names_become_torchvision_names() {
        for (from, to) in [
            (
                "resnet.embedder.embedder.convolution.weight",
                "conv1.weight",
            ),
            (
                "resnet.embedder.embedder.normalization.weight",
                "bn1.weight",
            ),
            (
                "resnet.embedder.embedder.normalization.running_var",
                "bn1.running_var",
            ),
            (
                "resnet.encoder.stages.0.layers.0.shortcut.convolution.weight",
                "layer1.0.downsample.0.weight",
            ),
            (
                "resnet.encoder.stages.3.layers.0.shortcut.normalization.running_mean",
                "layer4.0.downsample.1.running_mean",
            ),
            (
                "resnet.encoder.stages.2.layers.22.layer.2.convolution.weight",
                "layer3.22.conv3.weight",
            ),
            (
                "resnet.encoder.stages.1.layers.3.layer.0.normalization.bias",
                "layer2.3.bn1.bias",
            ),
            ("classifier.1.weight", "fc.weight"),
            ("classifier.1.bias", "fc.bias"),
        ] {
            assert_eq!(
                torchvision_name(from, Layout::Transformers).as_deref(),
                Some(to),
                "{from}"
            );
        }
    }

    #[test]
    fn transformers_names_outside_the_rules_match_nothing() {
        for name in [
            "conv1.weight",
            "resnet.embedder.pooler.weight",
            "resnet.embedder.embedder.convolution.bias",
            "resnet.embedder.embedder.normalization.scale",
            "resnet.encoder.stages.x.layers.0.layer.0.convolution.weight",
            "resnet.encoder.stages.0.layers.0.layer.0.activation.weight",
            "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight.extra",
            "resnet.encoder.stages.99999999999.layers.0.layer.0.convolution.weight",
            "classifier.1.running_mean",
            "classifier.0.weight",
        ] {
            assert_eq!(torchvision_name(name, Layout::Transformers), None, "{name}");
        }
    }

    #[test]
    fn layout_is_detected_from_the_names() {
        assert_eq!(
            detect_layout([
                "classifier.1.weight",
                "resnet.embedder.embedder.convolution.weight"
            ]),
            Layout::Transformers
        );
        assert_eq!(
            detect_layout(["conv1.weight", "layer1.0.bn1.bias", "fc.bias"]),
            Layout::Torchvision
        );
        assert_eq!(detect_layout([]), Layout::Torchvision);
    }

    fn tensors(names: &[&str]) -> HashMap<String, Tensor> {
        names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap(),
                )
            })
            .collect()
    }

    fn sorted_names(tensors: &HashMap<String, Tensor>) -> Vec<&str> {
        let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
        names.sort();
        names
    }

    #[test]
    fn torchvision_layout_is_identity_without_bn_counters() {
        let renamed = to_torchvision(
            tensors(&["conv1.weight", "bn1.num_batches_tracked", "fc.bias"]),
            Layout::Torchvision,
            "x",
        )
        .unwrap();
        assert_eq!(sorted_names(&renamed), ["conv1.weight", "fc.bias"]);
    }

    #[test]
    fn transformers_layout_is_renamed_without_bn_counters() {
        let renamed = to_torchvision(
            tensors(&[
                "resnet.embedder.embedder.normalization.num_batches_tracked",
                "resnet.embedder.embedder.normalization.bias",
                "classifier.1.bias",
            ]),
            Layout::Transformers,
            "x",
        )
        .unwrap();
        assert_eq!(sorted_names(&renamed), ["bn1.bias", "fc.bias"]);
    }

    #[test]
    fn an_unmatched_name_is_an_error_naming_it() {
        let err = to_torchvision(
            tensors(&["classifier.1.bias", "resnet.embedder.pooler.weight"]),
            Layout::Transformers,
            "hf:microsoft/resnet-50/model.safetensors@main",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`resnet.embedder.pooler.weight`"), "{err}");
        assert!(err.contains("hf:microsoft/resnet-50"), "{err}");
        assert!(err.contains("transformers layout"), "{err}");
    }
}
