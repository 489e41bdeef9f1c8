//! The PyTorch CIFAR rename table: names other ResNet code uses for our tensors.

/// Prefix `torch.nn.DataParallel` puts before every name; stripped.
const DATA_PARALLEL_PREFIX: &str = "module.";

/// Whole names of the common PyTorch CIFAR ResNets and their torchvision names.
const RENAMES: [(&str, &str); 2] = [("linear.weight", "fc.weight"), ("linear.bias", "fc.bias")];

/// The torchvision name of a tensor named `name` in a PyTorch file: a leading
/// `module.` is stripped, then the classifier's `linear.*` becomes `fc.*`;
/// any other name is returned as it is.
pub(crate) fn pytorch_to_torchvision_name(name: &str) -> &str {
    let name = name.strip_prefix(DATA_PARALLEL_PREFIX).unwrap_or(name);
    RENAMES
        .iter()
        .find(|(from, _)| *from == name)
        .map_or(name, |(_, to)| to)
}

#[cfg(test)]
mod tests {
    use super::pytorch_to_torchvision_name;

    #[test]
    fn strips_data_parallel_and_renames_the_classifier_only() {
        for (from, to) in [
            ("module.conv1.weight", "conv1.weight"),
            ("module.linear.weight", "fc.weight"),
            ("linear.bias", "fc.bias"),
            ("fc.bias", "fc.bias"),
            ("layer1.0.bn1.running_var", "layer1.0.bn1.running_var"),
            // Only a leading `module.`, once, and only whole classifier names.
            ("layer1.module.conv1.weight", "layer1.module.conv1.weight"),
            ("module.module.fc.bias", "module.fc.bias"),
            ("linear.weight_extra", "linear.weight_extra"),
            ("momentum.linear.weight", "momentum.linear.weight"),
        ] {
            assert_eq!(pytorch_to_torchvision_name(from), to, "{from}");
        }
    }
}
