//! The paper's ImageNet numbers (Tables 2 to 5), as data.

/// One row of Table 3 or 4: a model, its top-1 and top-5 error (%), and which
/// of our models (a key of [`crate::imagenet_eval::default_weights`]) stands for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperRow {
    /// The model as the paper names it.
    pub model: &'static str,
    /// Top-1 error (%), where the paper gives one.
    pub top1: Option<f64>,
    /// Top-5 error (%).
    pub top5: f64,
    /// Our model for this row, where public weights of it exist.
    pub ours: Option<&'static str>,
}

const fn row(
    model: &'static str,
    top1: Option<f64>,
    top5: f64,
    ours: Option<&'static str>,
) -> PaperRow {
    PaperRow {
        model,
        top1,
        top5,
        ours,
    }
}

/// Table 2: top-1 error (%, 10-crop) on the validation set: depth, plain, ResNet (option A).
pub const TABLE2: [(usize, f64, f64); 2] = [(18, 27.94, 27.88), (34, 28.54, 25.03)];

/// Table 3: error (%, 10-crop testing) on the ImageNet validation set.
#[rustfmt::skip]
pub const TABLE3: [PaperRow; 10] = [
    row("VGG-16", Some(28.07), 9.33, None),
    row("GoogLeNet", None, 9.15, None),
    row("PReLU-net", Some(24.27), 7.38, None),
    row("plain-34", Some(28.54), 10.02, None),
    row("ResNet-34 A", Some(25.03), 7.76, None),
    row("ResNet-34 B", Some(24.52), 7.46, Some("resnet34")),
    row("ResNet-34 C", Some(24.19), 7.40, None),
    row("ResNet-50", Some(22.85), 6.71, Some("resnet50")),
    row("ResNet-101", Some(21.75), 6.05, Some("resnet101")),
    row("ResNet-152", Some(21.43), 5.71, Some("resnet152")),
];

/// Table 4: single-model error (%) on the validation set, multi-scale
/// fully-convolutional testing (VGG's ILSVRC'14 top-5 is on the test set).
#[rustfmt::skip]
pub const TABLE4: [PaperRow; 10] = [
    row("VGG (ILSVRC'14)", None, 8.43, None),
    row("GoogLeNet (ILSVRC'14)", None, 7.89, None),
    row("VGG (v5)", Some(24.4), 7.1, None),
    row("PReLU-net", Some(21.59), 5.71, None),
    row("BN-inception", Some(21.99), 5.81, None),
    row("ResNet-34 B", Some(21.84), 5.71, Some("resnet34")),
    row("ResNet-34 C", Some(21.53), 5.60, None),
    row("ResNet-50", Some(20.74), 5.25, Some("resnet50")),
    row("ResNet-101", Some(19.87), 4.60, Some("resnet101")),
    row("ResNet-152", Some(19.38), 4.49, Some("resnet152")),
];

/// Table 5: top-5 error (%) of ensembles on the ImageNet test set.
pub const TABLE5: [(&str, f64); 6] = [
    ("VGG (ILSVRC'14)", 7.32),
    ("GoogLeNet (ILSVRC'14)", 6.66),
    ("VGG (v5)", 6.8),
    ("PReLU-net", 4.94),
    ("BN-inception", 4.82),
    ("ResNet (ILSVRC'15), six models of different depth", 3.57),
];
